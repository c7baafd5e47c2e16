"""Grid U-Net (UNO), its encoder half and attention block."""

import pytest
import torch
from torch import nn

from infdiff.nn.uno import UNO, AttentionBlock, ResBlock, UNOEncoder

TINY = dict(base_channels=8, channel_mults=(1, 2, 2), num_groups=4, resolution=16)


def make_uno(**overrides):
    kwargs = dict(TINY, attn_resolutions=(8,), time_dim=6, z_dim=5, dropout=0.1)
    kwargs.update(overrides)
    return UNO(3, 2, **kwargs)


def conditioning(batch=2):
    return torch.randn(batch, 6), torch.randn(batch, 5)


@pytest.mark.parametrize("resolution", [16, 32])
def test_output_shape(resolution):
    torch.manual_seed(0)
    model = make_uno(resolution=resolution)
    t_emb, z = conditioning()
    out = model(torch.randn(2, 3, resolution, resolution), t_emb, z)
    assert out.shape == (2, 2, resolution, resolution)


def _record_input_sizes(model, kind):
    sizes = []
    for module in model.modules():
        if isinstance(module, kind):
            module.register_forward_hook(lambda m, args, out: sizes.append((m, args[0].shape[-1])))
    return sizes


def test_attention_only_at_configured_levels_and_middle():
    torch.manual_seed(0)
    model = make_uno()
    attention = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    # 2 blocks at side 8 in each path, plus the middle one at side 4.
    assert len(attention) == 5
    calls = _record_input_sizes(model, AttentionBlock)
    model(torch.randn(1, 3, 16, 16), *conditioning(1))
    assert sorted(side for _, side in calls) == [4, 8, 8, 8, 8]
    assert len({id(m) for m, _ in calls}) == 5


def test_dropout_only_at_coarse_levels():
    torch.manual_seed(0)
    model = make_uno(dropout_from_resolution=8)
    calls = _record_input_sizes(model, ResBlock)
    model(torch.randn(1, 3, 16, 16), *conditioning(1))
    assert len(calls) == 2 * 3 * 2 + 2
    for block, side in calls:
        if side <= 8:
            assert isinstance(block.dropout, nn.Dropout) and block.dropout.p == 0.1
        else:
            assert isinstance(block.dropout, nn.Identity)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = make_uno()
    t_emb, z = conditioning()
    model(torch.randn(2, 3, 16, 16), t_emb, z).square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    model = make_uno(dropout=0.5)
    x, (t_emb, z) = torch.randn(2, 3, 16, 16), conditioning()
    model.eval()
    assert torch.equal(model(x, t_emb, z), model(x, t_emb, z))
    model.train()
    assert not torch.equal(model(x, t_emb, z), model(x, t_emb, z))


def test_conditioning_changes_output():
    torch.manual_seed(0)
    model = make_uno(dropout=0.0)
    x, (t_emb, z) = torch.randn(2, 3, 16, 16), conditioning()
    base = model(x, t_emb, z)
    assert not torch.allclose(base, model(x, t_emb + 1, z))
    assert not torch.allclose(base, model(x, t_emb, z + 1))


def test_encoder_output_shape_and_shared_down_path():
    torch.manual_seed(0)
    encoder = UNOEncoder(3, attn_resolutions=(8,), **TINY)
    out = encoder(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 16, 4, 4) and encoder.out_channels == 16
    model = make_uno(time_dim=None, z_dim=None, dropout=0.0)
    assert isinstance(model.contracting, UNOEncoder)
    encoder.load_state_dict(model.contracting.state_dict())
    encoder.eval()
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(encoder(x), model.contracting(x))


def test_spectral_variant_runs_with_coordinates():
    torch.manual_seed(0)
    model = make_uno(conv_type="spectral", spectral_modes=3)
    assert model.contracting.stem.pointwise.in_channels == 3 + 2
    t_emb, z = conditioning()
    out = model(torch.randn(2, 3, 16, 16), t_emb, z)
    assert out.shape == (2, 2, 16, 16)
    out.square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert model(torch.randn(2, 3, 32, 32), t_emb, z).shape == (2, 2, 32, 32)


def test_coordinates_can_be_appended_to_a_conv_unet():
    torch.manual_seed(0)
    assert make_uno().contracting.stem.in_channels == 3
    model = make_uno(append_coordinates=True)
    assert model.contracting.stem.in_channels == 3 + 2
    t_emb, z = conditioning()
    assert model(torch.randn(2, 3, 32, 32), t_emb, z).shape == (2, 2, 32, 32)


def test_per_level_block_counts():
    model = make_uno(blocks_per_level=(1, 2, 3), attn_resolutions=())
    assert [len(level) for level in model.contracting.down.levels] == [1, 2, 3]
    assert [len(level) for level in model.expanding.levels] == [3, 2, 1]
    t_emb, z = conditioning()
    assert model(torch.randn(2, 3, 16, 16), t_emb, z).shape == (2, 2, 16, 16)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(resolution=18), "multiple of 2\\^\\(levels - 1\\) = 4"),
        (dict(attn_resolutions=(32,)), "never occur"),
        (dict(num_groups=3), "must divide every channel count"),
        (dict(blocks_per_level=(2, 2)), "one per"),
        (dict(conv_type="fourier"), "conv_type"),
        (dict(conv_type="spectral"), "spectral_modes"),
        (dict(spectral_modes=4), "only applies"),
        (dict(base_channels=50, num_groups=2), "not divisible by its 3 heads"),
    ],
)
def test_invalid_hyper_parameters(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_uno(**overrides)


def test_input_checks():
    model = make_uno()
    t_emb, z = conditioning()
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(2, 3, 18, 16), t_emb, z)
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(2, 4, 16, 16), t_emb, z)
    with pytest.raises(ValueError, match="t_emb"):
        model(torch.randn(2, 3, 16, 16), None, z)


def test_attention_block_matches_naive_attention():
    torch.manual_seed(0)
    block = AttentionBlock(64, num_groups=8, head_dim=16)
    assert block.num_heads == 4
    x = torch.randn(2, 64, 5, 3)
    heads, d = 4, 16
    tokens = block.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
    q, k, v = block.qkv(tokens).reshape(2, 15, 3, heads, d).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    attended = (weights @ v).transpose(1, 2).reshape(2, 15, 64)
    expected = x + block.proj(attended).transpose(1, 2).reshape(2, 64, 5, 3)
    assert torch.allclose(block(x), expected, atol=1e-5)


@pytest.mark.parametrize("network", ["unet", "contracting_half"])
def test_the_films_computed_together_equal_each_blocks_own(monkeypatch, network):
    """Every residual block's FiLM projected at once (one projection per channel width): the same output
    and gradients as each block projecting its own, for the U-Net and for its contracting half alone."""
    import infdiff.nn.uno as uno_module

    torch.manual_seed(0)
    model = make_uno(dropout=0.0).double()
    if network == "contracting_half":
        model = model.contracting
    x = torch.randn(2, 3, 16, 16, dtype=torch.double)
    t_emb, z = (v.double() for v in conditioning())
    results = []
    for together in (True, False):
        if not together:
            monkeypatch.setattr(uno_module, "res_block_affines", lambda network, t_emb, z: None)
        model.zero_grad()
        out = model(x, t_emb, z)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out, grads), (own_out, own_grads) = results
    torch.testing.assert_close(out, own_out)
    for got, want in zip(grads, own_grads):
        torch.testing.assert_close(got, want)


def test_the_listed_residual_blocks_are_the_networks_own_in_a_copy():
    """The EMA's deep copy projects FiLM with its own blocks' weights, not the original's."""
    import copy

    model = make_uno()
    copied = copy.deepcopy(model)
    assert len(model.res_blocks) == sum(isinstance(m, ResBlock) for m in model.modules()) > 0
    assert all(a is b for a, b in zip(copied.res_blocks, (m for m in copied.modules() if isinstance(m, ResBlock))))
    assert not set(map(id, copied.res_blocks)) & set(map(id, model.res_blocks))
    assert not any(name.startswith("res_blocks") for name in model.state_dict()), "checkpoints unchanged"
