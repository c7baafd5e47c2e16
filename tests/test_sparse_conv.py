import pytest
import torch
import torch.nn.functional as F

from infdiff.ops import (
    SparseImage,
    dense_depthwise_conv,
    gather_pixels,
    neighbour_table,
    resize_kernel,
    resized_kernel_size,
    sparse_depthwise_conv,
    uniform_subset,
)
from infdiff.ops import sparse_conv
from infdiff.ops.sparse_conv import fft_depthwise_conv


def masked_dense_reference(sparse: SparseImage, weight: torch.Tensor, train_k: int) -> torch.Tensor:
    """conv(x·m) / (conv(m, ones) / k0²) evaluated densely, then read at the sparse pixels."""
    _, kh, kw = weight.shape
    pad = (kh // 2, kw // 2)
    num = F.conv2d(sparse.to_dense(), weight.unsqueeze(1), padding=pad, groups=weight.shape[0])
    ones = torch.ones(1, 1, kh, kw, dtype=weight.dtype)
    den = F.conv2d(sparse.mask(), ones, padding=pad) / train_k**2
    return gather_pixels(num / den, sparse.index)


@pytest.mark.parametrize("size,n,k", [((12, 10), 30, 5), ((16, 16), 64, 7), ((9, 9), 81, 3), ((8, 8), 1, 3)])
def test_sparse_conv_equals_masked_dense_conv(size, n, k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, *size, generator=g, dtype=torch.float64)
    sparse = SparseImage.from_dense(x, uniform_subset(3, size, n, generator=g))
    weight = torch.randn(4, k, k, generator=g, dtype=torch.float64)
    out = sparse_depthwise_conv(sparse, weight)
    torch.testing.assert_close(out.values, masked_dense_reference(sparse, weight, k))


def test_resized_kernel_normaliser_uses_training_kernel_area():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 20, 20, generator=g, dtype=torch.float64)
    sparse = SparseImage.from_dense(x, uniform_subset(2, 20, 100, generator=g))
    weight = torch.randn(3, 9, 9, generator=g, dtype=torch.float64)
    out = sparse_depthwise_conv(sparse, weight, train_kernel_size=(5, 5))
    torch.testing.assert_close(out.values, masked_dense_reference(sparse, weight, 5))


def test_gradcheck_features_and_weights():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    sparse = SparseImage.from_dense(x, uniform_subset(2, (7, 6), 20, generator=g))
    values = sparse.values.clone().requires_grad_()
    weight = torch.randn(3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, w: sparse_depthwise_conv(sparse.with_values(v), w).values, (values, weight)
    )


def test_gradients_match_dense_autograd():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 16, 16, generator=g, dtype=torch.float64)
    sparse = SparseImage.from_dense(x, uniform_subset(2, 16, 64, generator=g))
    weight = torch.randn(5, 7, 7, generator=g, dtype=torch.float64)
    upstream = torch.randn(2, 64, 5, generator=g, dtype=torch.float64)

    v1, w1 = sparse.values.clone().requires_grad_(), weight.clone().requires_grad_()
    (sparse_depthwise_conv(sparse.with_values(v1), w1).values * upstream).sum().backward()
    v2, w2 = sparse.values.clone().requires_grad_(), weight.clone().requires_grad_()
    (masked_dense_reference(sparse.with_values(v2), w2, 7) * upstream).sum().backward()
    torch.testing.assert_close(v1.grad, v2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)


def test_sparse_with_every_pixel_equals_dense_path():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 11, 13, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 7, 7, generator=g, dtype=torch.float64)
    sparse = sparse_depthwise_conv(SparseImage.from_dense(x), weight)
    torch.testing.assert_close(sparse.to_dense(), dense_depthwise_conv(x, weight))


def test_dense_path_interior_is_plain_convolution():
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    weight = torch.randn(2, 5, 5, dtype=torch.float64)
    plain = F.conv2d(x, weight.unsqueeze(1), groups=2)
    torch.testing.assert_close(dense_depthwise_conv(x, weight)[..., 2:-2, 2:-2], plain)


def test_resized_kernel_keeps_physical_operator_on_smooth_input():
    """A conv at 2x resolution with a resized kernel approximates the 1x operator."""
    size = 32
    weight = torch.rand(1, 7, 7, dtype=torch.float64)

    def smooth(n):
        u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return (torch.sin(2 * torch.pi * u)[:, None] * torch.cos(2 * torch.pi * u)[None, :]).view(1, 1, n, n)

    coarse = dense_depthwise_conv(smooth(size), weight)
    k2 = resized_kernel_size(7, 2.0)
    fine = dense_depthwise_conv(smooth(2 * size), resize_kernel(weight, (k2, k2)), train_kernel_size=(7, 7))
    fine_at_coarse = F.avg_pool2d(fine, 2)
    interior = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    err = (fine_at_coarse - coarse)[interior].abs().max() / coarse[interior].abs().max()
    assert err < 0.05


def test_neighbour_table_is_cached_and_symmetric():
    g = torch.Generator().manual_seed(5)
    sparse = SparseImage.from_dense(torch.randn(2, 1, 10, 10, generator=g), uniform_subset(2, 10, 40, generator=g))
    table = neighbour_table(sparse, (3, 3))
    assert neighbour_table(sparse.with_values(sparse.values * 2), (3, 3)) is table
    sentinel = sparse.batch * sparse.num_points
    for j in range(9):
        rows = table[j]
        valid = rows < sentinel
        points = torch.arange(sentinel)[valid]
        assert torch.equal(table[8 - j][rows[valid].long()], points)


def test_bad_weight_shapes_are_rejected():
    sparse = SparseImage.from_dense(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="odd"):
        sparse_depthwise_conv(sparse, torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="C=2"):
        sparse_depthwise_conv(sparse, torch.randn(3, 3, 3))


@pytest.mark.parametrize(
    "size, kernel", [((16, 16), (31, 31)), ((20, 12), (33, 35)), ((9, 40), (41, 5)), ((64, 48), (7, 9))]
)
def test_the_fft_convolution_equals_the_direct_one_with_both_gradients(size, kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, *kernel, generator=g, dtype=torch.float64, requires_grad=True)
    direct = F.conv2d(x, weight.unsqueeze(1), padding=(kernel[0] // 2, kernel[1] // 2), groups=3)
    fft = fft_depthwise_conv(x, weight)
    torch.testing.assert_close(fft, direct, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(direct.shape, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad(direct, (x, weight), upstream)
    for ours, reference in zip(torch.autograd.grad(fft, (x, weight), upstream), expected):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_large_kernels_take_the_fft_route_and_give_the_direct_operator(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x, weight = torch.randn(1, 4, 40, 36, generator=g), torch.randn(4, 33, 33, generator=g)
    routed = []
    monkeypatch.setattr(sparse_conv, "fft_depthwise_conv", lambda *a: routed.append(1) or fft_depthwise_conv(*a))
    assert 33 * 33 >= sparse_conv.FFT_MIN_TAPS
    out = dense_depthwise_conv(x, weight, (7, 7))
    assert routed
    monkeypatch.setattr(sparse_conv, "FFT_MIN_TAPS", 10**9)
    torch.testing.assert_close(out, dense_depthwise_conv(x, weight, (7, 7)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size, kernel", [((16, 16), (7, 7)), ((5, 9), (11, 3)), ((30, 20), (55, 55))])
def test_the_dense_normaliser_counts_the_window_inside_the_grid(size, kernel):
    ones = torch.ones(1, 1, *size, dtype=torch.float64)
    count = F.conv2d(ones, torch.ones(1, 1, *kernel, dtype=torch.float64), padding=(kernel[0] // 2, kernel[1] // 2))
    expected = count / 49
    ours = sparse_conv._dense_normaliser(size, kernel, (7, 7), torch.device("cpu"), torch.float64)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


def test_sampling_reuses_the_kernel_spectrum_until_the_weights_change(monkeypatch):
    from infdiff.nn.sparse_block import MonteCarloConv

    conv = MonteCarloConv(channels=3, kernel_size=7, train_size=8)  # 7 taps at 8² are 49 at 56²
    field = torch.randn(1, 56, 56, 3)
    transforms = []
    real = torch.fft.rfft2
    monkeypatch.setattr(torch.fft, "rfft2", lambda *a, **k: transforms.append(1) or real(*a, **k))
    with torch.no_grad():
        first = conv(field)
        again = conv(field)
        assert len(transforms) == 3, "the image twice, the kernel once"
        conv.weight.mul_(2)
        doubled = conv(field)
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(doubled, 2 * first, rtol=1e-5, atol=1e-5)
    trained = conv(field)  # with autograd: a fresh kernel and spectrum, and gradients flow to the weight
    trained.sum().backward()
    assert conv.weight.grad is not None and len(transforms) == 7  # the doubled kernel once, then both again
