import pytest
import torch
import torch.nn.functional as F

from infdiff.nn import SparseEncoder, SparseResBlock, SparseUNet, kl_to_standard_normal
from infdiff.ops import SparseImage, uniform_subset

TINY_UNO = dict(
    base_channels=16, channel_mults=(1, 2, 2), blocks_per_level=1, attn_resolutions=(8,), num_groups=4, dropout=0.0
)


def tiny_decoder(train_size=16, uno_res=8, **kw):
    torch.manual_seed(0)
    return SparseUNet(
        channels=3,
        train_size=train_size,
        nf=16,
        time_dim=32,
        z_dim=8,
        uno_res=uno_res,
        uno_channels=16,
        uno=dict(TINY_UNO, attn_resolutions=(uno_res // 4,)),
        **kw,
    )


def tiny_encoder(**kw):
    torch.manual_seed(1)
    return SparseEncoder(channels=3, z_dim=8, train_size=16, nf=16, uno_res=8, uno_channels=16, uno=TINY_UNO, **kw)


def smooth_images(n, batch=2):
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    a = torch.sin(2 * torch.pi * u)[:, None] * torch.cos(2 * torch.pi * u)[None, :]
    b = torch.cos(2 * torch.pi * (u[:, None] + 2 * u[None, :]))
    c = u[:, None] - u[None, :]
    return torch.stack([a, b, c]).unsqueeze(0).expand(batch, -1, -1, -1).float()


@pytest.mark.parametrize("size", [16, 32])
def test_dense_path_equals_sparse_path_given_every_pixel(size):
    decoder = tiny_decoder().double().eval()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    t, z = torch.tensor([3, 900]), torch.randn(2, 8, dtype=torch.float64)
    dense = decoder(x, t, z)
    sparse = decoder(SparseImage.from_dense(x), t, z)
    assert dense.shape == x.shape
    torch.testing.assert_close(sparse.to_dense(), dense)


def test_both_neighbour_lookups_give_the_same_decoder_and_gradients():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    sparse = SparseImage.from_dense(x, uniform_subset(2, 16, 64))
    t, z = torch.tensor([1, 700]), torch.randn(2, 8, dtype=torch.float64)
    outputs, grads = [], []
    for neighbours in ("table", "window"):
        decoder = tiny_decoder(neighbours=neighbours).double()
        out = decoder(SparseImage(sparse.values, sparse.index, sparse.size), t, z).values
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad for p in decoder.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0])
    for window, table in zip(*grads):
        torch.testing.assert_close(window, table)


def test_the_decoders_films_computed_together_equal_each_blocks_own(monkeypatch):
    """The decoder projects every block's FiLM at once (``block_affines``); given per block instead, the
    output and every gradient are the same, and one step dispatches fewer operators."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import infdiff.nn.decoder as decoder_module

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    sparse = SparseImage.from_dense(x, uniform_subset(2, 16, 64))
    t, z = torch.tensor([1, 700]), torch.randn(2, 8, dtype=torch.float64)
    results = []
    for together in (True, False):
        if not together:
            monkeypatch.setattr(decoder_module, "block_affines", lambda blocks, t_emb, z: None)
        decoder = tiny_decoder(num_conv_blocks=2).double().eval()
        Count.calls = 0
        with Count():
            out = decoder(SparseImage(sparse.values, sparse.index, sparse.size), t, z).values
            out.square().sum().backward()
        results.append((out.detach(), [p.grad for p in decoder.parameters()], Count.calls))
    (out, grads, calls), (own_out, own_grads, own_calls) = results
    torch.testing.assert_close(out, own_out)
    for got, want in zip(grads, own_grads):
        torch.testing.assert_close(got, want)
    films = 2 * 2 * 2  # blocks before and after the grid, two FiLMs each
    assert own_calls - calls > 20 * films, (calls, own_calls)  # each FiLM alone: ~36 operators, forward and backward


def test_sparse_forward_on_a_subset_and_gradients_reach_every_parameter():
    decoder = tiny_decoder()
    x = torch.randn(2, 3, 16, 16)
    sparse = SparseImage.from_dense(x, uniform_subset(2, 16, 64))
    out = decoder(sparse, torch.tensor([1, 2]), torch.randn(2, 8))
    assert out.values.shape == (2, 64, 3) and torch.equal(out.index, sparse.index)
    out.values.square().sum().backward()
    missing = [n for n, p in decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_batch_items_do_not_mix():
    """Point-wise parts must not mix batch items: item 0's output ignores item 1's input."""
    decoder = tiny_decoder().eval()
    x = torch.randn(2, 3, 16, 16)
    y = x.clone()
    y[1] += 1.0
    t, z = torch.tensor([5, 5]), torch.zeros(2, 8)
    torch.testing.assert_close(decoder(x, t, z)[0], decoder(y, t, z)[0])


@pytest.mark.parametrize("sparse", [False, True])
def test_a_blocks_output_at_a_pixel_depends_on_other_pixels_only_within_its_kernel(sparse):
    """The residual block is point-wise but for its integral operator, whose kernel spans 5×5 pixels here."""
    torch.manual_seed(0)
    block = SparseResBlock(4, kernel_size=5, train_size=16).double().eval()
    h = torch.randn(1, 16, 16, 4, dtype=torch.float64)
    change = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)  # not constant: LayerNorm removes constants

    def output_at_centre(changed_pixel):
        g = h.clone()
        g[0, changed_pixel[0], changed_pixel[1]] += change
        if not sparse:
            return block(g)[0, 8, 8]
        field = SparseImage(g.reshape(1, 256, 4), torch.arange(256).unsqueeze(0), (16, 16))
        return block(field).values[0, 8 * 16 + 8]

    reference = output_at_centre((0, 0))
    for inside in ((8, 8), (6, 10), (10, 6)):
        assert not torch.allclose(output_at_centre(inside), reference)
    for outside in ((5, 8), (8, 11), (2, 2), (15, 15)):
        torch.testing.assert_close(output_at_centre(outside), reference, rtol=0, atol=1e-12)


def test_dense_forward_at_twice_the_training_resolution_keeps_output_statistics():
    decoder = tiny_decoder(train_size=64, uno_res=32).eval()
    t, z = torch.tensor([10, 700]), torch.randn(2, 8)
    with torch.no_grad():
        coarse = decoder(smooth_images(64), t, z)
        fine = decoder(smooth_images(128), t, z)
    assert fine.shape == (2, 3, 128, 128)
    torch.testing.assert_close(fine.mean((0, 2, 3)), coarse.mean((0, 2, 3)), atol=0.05, rtol=0.1)
    torch.testing.assert_close(fine.std((0, 2, 3)), coarse.std((0, 2, 3)), atol=0.02, rtol=0.1)
    fine_at_coarse = F.avg_pool2d(fine, 2)
    assert float((fine_at_coarse - coarse).norm() / coarse.norm()) < 0.2


def test_block_kernel_is_resized_for_other_resolutions():
    block = SparseResBlock(4, kernel_size=7, train_size=32)
    assert block.conv.kernel_at((32, 32)).shape == (4, 7, 7)
    assert block.conv.kernel_at((64, 64)).shape == (4, 15, 15)
    assert block.conv.kernel_at((64, 16)).shape == (4, 15, 3)
    with pytest.raises(ValueError, match="skip"):
        block(torch.randn(1, 8, 8, 4), skip=torch.randn(1, 8, 8, 4))


def test_encoder_is_deterministic_or_gaussian():
    x = torch.randn(2, 3, 16, 16)
    sparse = SparseImage.from_dense(x, uniform_subset(2, 16, 64))
    enc = tiny_encoder()
    out = enc(sparse)
    assert out.z.shape == (2, 8) and out.logvar is None
    assert torch.equal(kl_to_standard_normal(out), torch.zeros(2))

    stochastic = tiny_encoder(stochastic=True)
    a, b = stochastic(sparse), stochastic(sparse)
    assert not torch.equal(a.z, b.z) and torch.equal(a.mean, b.mean)
    assert torch.equal(stochastic.eval()(sparse).z, a.mean)
    kl = kl_to_standard_normal(a)
    expected = 0.5 * (a.mean.square() + a.logvar.exp() - a.logvar - 1).sum(-1)
    torch.testing.assert_close(kl, expected)


def test_encoder_accepts_any_subset_and_dense_images():
    """A subset's code estimates the dense one: every pixel gives it exactly, and more pixels come closer."""
    enc = tiny_encoder().eval()
    x = smooth_images(16)
    with torch.no_grad():
        z_dense = enc(x).z
        torch.testing.assert_close(enc(SparseImage.from_dense(x)).z, z_dense)

        def mean_error(points):
            codes = [
                enc(
                    SparseImage.from_dense(
                        x, uniform_subset(2, 16, points, generator=torch.Generator().manual_seed(seed))
                    )
                ).z
                for seed in range(5)
            ]
            return sum(float((z - z_dense).norm()) for z in codes) / 5

        errors = [mean_error(points) for points in (64, 192, 240)]  # measured 0.98, 0.68, 0.34 times |z_dense|
    assert errors[0] > errors[1] > errors[2] > 0


def test_encoder_pooling_keeps_where_features_are():
    """``pool_size`` 1 is the global mean; a larger one feeds the head the ``p²`` cell means of every channel."""
    x = torch.randn(2, 3, 16, 16)
    features = torch.randn(2, 32, 2, 2)

    def encode(encoder, bottleneck):
        handle = encoder.contract.register_forward_hook(lambda module, args, out: bottleneck)
        try:
            return encoder(x).z
        finally:
            handle.remove()

    mean_pool, pooled = tiny_encoder().eval(), tiny_encoder(pool_size=2).eval()
    assert mean_pool.contract.out_resolution == 2 and pooled.head.in_features == 4 * mean_pool.head.in_features
    swapped = features.flip(-1)  # the same channel means at other places
    torch.testing.assert_close(encode(mean_pool, swapped), encode(mean_pool, features))
    torch.testing.assert_close(encode(mean_pool, features), mean_pool.head(features.mean(dim=(2, 3))))
    assert not torch.allclose(encode(pooled, swapped), encode(pooled, features))
    torch.testing.assert_close(encode(pooled, features), pooled.head(features.flatten(1)))
    assert pooled(x).z.shape == mean_pool(x).z.shape == (2, 8)
    with pytest.raises(ValueError, match="pool_size=3: must divide the side 2"):
        tiny_encoder(pool_size=3)


def test_decoder_latent_grid_routes_z_spatially():
    """``z_grid`` adds ``up(W_z z)`` to the U-Net input: parameters get gradients, outputs depend on it."""
    x, t, z = torch.randn(2, 3, 16, 16), torch.tensor([3, 700]), torch.randn(2, 8)
    plain, gridded = tiny_decoder(), tiny_decoder(z_grid=2)
    assert plain.z_to_grid is None and gridded.z_to_grid.out_features == 16 * 2 * 2
    out = gridded(SparseImage.from_dense(x, uniform_subset(2, 16, 64)), t, z)
    out.values.square().mean().backward()
    assert gridded.z_to_grid.weight.grad.abs().sum() > 0
    with torch.no_grad():
        gridded.z_to_grid.weight.zero_()
        gridded.z_to_grid.bias.zero_()
        gridded.load_state_dict({k: v for k, v in plain.state_dict().items()}, strict=False)
        torch.testing.assert_close(gridded(x, t, z), plain(x, t, z))  # a zero map adds nothing
    with pytest.raises(ValueError, match="z_grid=2: must be 0 or a positive side with a latent"):
        SparseUNet(channels=3, train_size=16, z_dim=None, z_grid=2)
