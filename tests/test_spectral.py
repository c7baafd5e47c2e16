"""FNO spectral convolution: resolution consistency, mode selection, gradients, errors."""

import math

import pytest
import torch

from infdiff.nn.spectral import FourierConv2d, SpectralConv2d, SpectralResample2d


def band_limited(n: int) -> torch.Tensor:
    """Two channels of a periodic function with frequencies |k|, |l| <= 3 sampled at (i/n, j/n)."""
    g = torch.arange(n, dtype=torch.float64) / n
    y, x = torch.meshgrid(g, g, indexing="ij")
    tau = 2 * math.pi
    a = torch.sin(tau * (y + 2 * x)) + torch.cos(tau * 3 * y) + 0.3
    b = torch.cos(tau * (-3 * y + x)) - 0.5 * torch.sin(tau * (2 * y - 3 * x))
    return torch.stack((a, b))[None].float()


def test_same_output_function_at_two_resolutions():
    torch.manual_seed(0)
    conv = SpectralConv2d(2, 3, 4, 4)
    coarse = conv(band_limited(32))
    fine = conv(band_limited(64))
    assert coarse.shape == (1, 3, 32, 32) and fine.shape == (1, 3, 64, 64)
    assert coarse.abs().max() > 0.1
    assert torch.allclose(fine[..., ::2, ::2], coarse, atol=1e-5)


def test_out_size_evaluates_output_function_on_other_grid():
    torch.manual_seed(0)
    conv = SpectralConv2d(2, 3, 4, 4)
    upsampled = conv(band_limited(32), out_size=(64, 64))
    assert torch.allclose(upsampled, conv(band_limited(64)), atol=1e-5)
    downsampled = conv(band_limited(64), out_size=(16, 16))
    assert torch.allclose(downsampled, conv(band_limited(32))[..., ::2, ::2], atol=1e-5)


def _identity_weights(conv: SpectralConv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(conv.in_channels):
            conv.weight[c, c, ..., 0] = 1.0


def test_identity_weights_keep_positive_and_negative_low_modes_only():
    conv = SpectralConv2d(2, 2, 4, 4)
    _identity_weights(conv)
    x = band_limited(32)
    assert torch.allclose(conv(x), x, atol=1e-5)
    g = torch.arange(32) / 32
    high = torch.cos(2 * math.pi * 9 * (g[:, None] + g[None, :]))
    assert conv(high.expand(1, 2, 32, 32)).abs().max() < 1e-5


def test_gradients_reach_weight_and_input():
    conv = SpectralConv2d(2, 3, 3, 2)
    x = torch.randn(2, 2, 12, 10, requires_grad=True)
    conv(x).square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_too_small_grid_is_rejected():
    conv = SpectralConv2d(2, 2, 4, 3)
    with pytest.raises(ValueError, match="at least 8x6"):
        conv(torch.randn(1, 2, 7, 16))
    with pytest.raises(ValueError, match="output grid"):
        conv(torch.randn(1, 2, 16, 16), out_size=(8, 4))
    with pytest.raises(ValueError, match="expects"):
        conv(torch.randn(1, 3, 16, 16))


def test_fourier_conv_and_resample_shapes():
    x = torch.randn(2, 3, 16, 16)
    assert FourierConv2d(3, 5, 4, 4)(x).shape == (2, 5, 16, 16)
    assert SpectralResample2d(3, 5, 4, scale=0.5)(x).shape == (2, 5, 8, 8)
    assert SpectralResample2d(3, 5, 4, scale=2.0)(x).shape == (2, 5, 32, 32)
    with pytest.raises(ValueError, match="not an integer"):
        SpectralResample2d(3, 5, 2, scale=0.5)(torch.randn(1, 3, 9, 9))
