import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from infdiff.diffusion.dct import dct2, dct_matrix, idct2
from infdiff.diffusion.mollifier import GaussianMollifier


def smooth_image(h, w):
    """A function with vanishing normal derivative at the border, sampled at cell centres of an (h, w) grid."""
    u = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    v = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    u, v = torch.meshgrid(u, v, indexing="ij")
    bump = torch.exp(-((u - 0.5) ** 2 + (v - 0.4) ** 2) / (2 * 0.08**2))
    return torch.cos(math.pi * u) * torch.cos(3 * math.pi * v) + bump


def gaussian_kernel(sigma, radius):
    m = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-(m**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)


def spatial_blur(x, sigma_h, sigma_w, padding):
    """Separable Gaussian blur of (B, 1, H, W) by F.conv2d; 'symmetric' pads half-sample symmetrically, 'none' keeps the interior."""
    r_h, r_w = math.ceil(6 * sigma_h), math.ceil(6 * sigma_w)
    kernel = gaussian_kernel(sigma_h, r_h)[:, None] * gaussian_kernel(sigma_w, r_w)[None, :]
    if padding == "symmetric":
        x = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (r_h, r_h), (r_w, r_w)), mode="symmetric"))
    return F.conv2d(x, kernel[None, None]), (r_h, r_w)


@pytest.mark.parametrize("n", [1, 7, 16, 33])
def test_dct_matrix_is_orthonormal_and_matches_scipy(n):
    c = dct_matrix(n, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(c @ c.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)
    x = torch.randn(3, n, 5, dtype=torch.float64)
    reference = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(1, 2))
    torch.testing.assert_close(dct2(x), torch.from_numpy(reference), rtol=0, atol=1e-12)


def test_dct_round_trip_and_parseval_non_square():
    x = torch.randn(2, 3, 12, 20, dtype=torch.float64)
    coeffs = dct2(x)
    torch.testing.assert_close(idct2(coeffs), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(coeffs.pow(2).sum((-2, -1)), x.pow(2).sum((-2, -1)), rtol=1e-12, atol=0)


def test_dct_rejects_bad_input():
    with pytest.raises(ValueError, match="H, W"):
        dct2(torch.randn(5))
    with pytest.raises(TypeError, match="floating"):
        dct2(torch.ones(4, 4, dtype=torch.long))


@pytest.mark.parametrize("std", [2.0, 3.0])
@pytest.mark.parametrize("padding", ["none", "symmetric"])
def test_mollifier_equals_spatial_gaussian_blur(std, padding):
    """Exact up to aliasing of the sampled kernel, ~exp(-π²σ²/2): 4e-3 at σ = 1 px, < 1e-9 at σ = 2 px."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 48, 40, dtype=torch.float64)
    blurred = GaussianMollifier(std, (48, 40))(x)
    reference, (r_h, r_w) = spatial_blur(x, std, std, padding)
    if padding == "none":
        blurred = blurred[..., r_h:-r_h, r_w:-r_w]
    torch.testing.assert_close(blurred, reference, rtol=0, atol=1e-5)


def test_mollifier_width_is_physical_per_axis_on_a_finer_non_square_grid():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 40, 18, dtype=torch.float64)
    blurred = GaussianMollifier(1.5, (20, 18))(x)
    reference, _ = spatial_blur(x, 3.0, 1.5, "symmetric")
    torch.testing.assert_close(blurred, reference, rtol=0, atol=1e-5)


def test_blur_of_a_smooth_function_does_not_depend_on_resolution():
    mollifier = GaussianMollifier(1.0, 32)
    coarse = mollifier(smooth_image(32, 32))
    assert (coarse - smooth_image(32, 32)).abs().max() > 0.1
    # a 3x grid has a cell centre at every coarse cell centre
    torch.testing.assert_close(mollifier(smooth_image(96, 96))[1::3, 1::3], coarse, rtol=0, atol=1e-5)
    # a 2x grid has coarse centres midway between 2x2 fine ones: compare with the 2x2 average
    fine = F.avg_pool2d(mollifier(smooth_image(64, 64))[None, None], 2)[0, 0]
    torch.testing.assert_close(fine, coarse, rtol=0, atol=1e-2)


def test_wiener_inverse_recovers_a_smooth_image():
    mollifier = GaussianMollifier(1.0, 32)
    x = smooth_image(32, 32)
    blurred = mollifier(x)
    restored = mollifier.wiener_inverse(blurred)
    blurred_error = (blurred - x).norm() / x.norm()
    restored_error = (restored - x).norm() / x.norm()
    assert blurred_error > 0.04
    assert restored_error < 0.01
    assert restored_error < blurred_error / 10


def test_mollifier_is_linear_and_self_adjoint():
    torch.manual_seed(0)
    mollifier = GaussianMollifier(1.0, (12, 20))
    x, y = torch.randn(2, 12, 20, dtype=torch.float64)
    torch.testing.assert_close(mollifier(2 * x - 3 * y), 2 * mollifier(x) - 3 * mollifier(y), rtol=0, atol=1e-12)
    torch.testing.assert_close((mollifier(x) * y).sum(), (x * mollifier(y)).sum(), rtol=1e-12, atol=0)


def test_zero_std_is_the_identity():
    x = torch.randn(2, 3, 8, 8)
    identity = GaussianMollifier(0.0)
    assert torch.equal(identity(x), x)
    assert torch.equal(identity.wiener_inverse(x), x)
    latents = torch.randn(4, 5)
    assert torch.equal(identity(latents), latents)


def test_bad_construction_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="train_size"):
        GaussianMollifier(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        GaussianMollifier(-1.0, 16)
    with pytest.raises(ValueError, match="H, W"):
        GaussianMollifier(1.0, 16)(torch.randn(16))


def test_low_precision_input_is_computed_in_float32():
    torch.manual_seed(0)
    mollifier = GaussianMollifier(1.0, 16)
    x = torch.randn(2, 3, 16, 16)
    out = mollifier(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), mollifier(x), rtol=0, atol=3e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = mollifier(x)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, mollifier(x), rtol=1e-6, atol=1e-6)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="floating"):
        GaussianMollifier(1.0, 4)(torch.ones(4, 4, dtype=torch.long))
