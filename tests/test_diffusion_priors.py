"""Noise priors: one random function at every resolution, C^(1/2), C, inverses, draws at coordinates."""

import pytest
import torch
import torch.nn.functional as F

from infdiff.diffusion import PRIORS, GaussianMollifier, NoisePrior, WhiteNoise
from infdiff.ops import SparseImage, uniform_subset


def mean_noise_variance(prior, size, samples=1000, scaled=True):
    gen = torch.Generator().manual_seed(2)
    shape = (samples, 1, size, size)
    if scaled:
        noise = prior.sample(shape, generator=gen, dtype=torch.float64)
    else:
        noise = prior.apply_sqrt_cov(torch.randn(shape, generator=gen, dtype=torch.float64))
    return noise.pow(2).mean().item()


def expected_mean_noise_variance(prior, size):
    """Mean over pixels of diag(T T^T) times the white-noise variance: scale^2 * mean_k g(k)^2."""
    gain = prior.gain((size, size), dtype=torch.float64)
    return prior.noise_scale((size, size)) ** 2 * gain.pow(2).mean().item()


def test_the_registry_holds_white_noise_and_the_mollifier():
    assert {"white", "mollifier"} <= set(PRIORS.names())
    assert PRIORS["white"] is WhiteNoise and PRIORS["mollifier"] is GaussianMollifier
    assert all(issubclass(PRIORS[name], NoisePrior) for name in PRIORS.names())


def test_noise_variance_per_pixel_is_the_same_at_every_resolution():
    prior = GaussianMollifier(1.0, 16)
    assert prior.noise_scale((1, 1, 32, 32)) == 2.0
    at_train = mean_noise_variance(prior, 16)
    at_double = mean_noise_variance(prior, 32)
    assert at_train == pytest.approx(expected_mean_noise_variance(prior, 16), rel=0.04)
    assert at_double == pytest.approx(expected_mean_noise_variance(prior, 32), rel=0.04)
    assert at_double / at_train == pytest.approx(1.0, abs=0.05)
    unscaled = mean_noise_variance(prior, 32, scaled=False)
    assert unscaled / at_train == pytest.approx(0.25, abs=0.02)


def test_white_noise_is_one_function_whose_cell_averages_agree_across_grids():
    prior = WhiteNoise(train_size=8)
    gen = torch.Generator().manual_seed(0)
    fine = prior.sample((2000, 1, 32, 32), gen, dtype=torch.float64)
    assert fine.std().item() == pytest.approx(4.0, rel=0.01)
    coarse = F.avg_pool2d(fine, 4)
    assert coarse.std().item() == pytest.approx(prior.sample((2000, 1, 8, 8), gen).std().item(), rel=0.02)


def test_sample_like_keeps_shape_dtype_and_is_reproducible():
    prior = GaussianMollifier(1.0, 8)
    x = torch.zeros(2, 3, 8, 12, dtype=torch.float64)
    first = prior.sample_like(x, torch.Generator().manual_seed(3))
    second = prior.sample_like(x, torch.Generator().manual_seed(3))
    assert first.shape == x.shape and first.dtype == torch.float64
    assert torch.equal(first, second)


def test_the_covariance_is_the_square_of_its_root_and_the_inverse_undoes_it():
    prior = GaussianMollifier(1.0, 8, inv_snr=0.0)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(prior.apply_cov(x), prior(prior(x)))
    torch.testing.assert_close(prior.apply_inverse_sqrt_cov(prior.apply_sqrt_cov(x)), x, rtol=1e-8, atol=1e-8)
    white = WhiteNoise(8)
    assert white.apply_cov(x) is x and white.apply_inverse_sqrt_cov(x) is x


@pytest.mark.parametrize("prior", [WhiteNoise(train_size=8), GaussianMollifier(1.0, 8)])
def test_draws_at_the_coordinates_of_a_sparse_image_have_the_grids_statistics(prior):
    gen = torch.Generator().manual_seed(5)
    points = SparseImage(torch.zeros(400, 20, 1), uniform_subset(400, 16, 20, generator=gen), (16, 16))
    drawn = prior.sample_at(points, 3, gen, dtype=torch.float64)
    assert (
        isinstance(drawn, SparseImage) and drawn.values.shape == (400, 20, 3) and torch.equal(drawn.index, points.index)
    )
    dense = prior.sample((400, 3, 16, 16), gen, dtype=torch.float64)
    assert drawn.values.var().item() == pytest.approx(dense.var().item(), rel=0.05)


def test_white_noise_at_points_with_a_noise_grid_reads_the_averaged_draw():
    prior = WhiteNoise(train_size=8, noise_grid=32)
    points = SparseImage(torch.zeros(2, 5, 1), uniform_subset(2, 16, 5, generator=torch.Generator().manual_seed(0)), 16)
    drawn = prior.sample_at(points, 1, torch.Generator().manual_seed(6))
    dense = prior.sample((2, 1, 16, 16), torch.Generator().manual_seed(6))
    torch.testing.assert_close(drawn.values[..., 0], dense.flatten(1).gather(1, points.index))


def test_noise_grid_draws_one_noise_function_at_every_resolution():
    """With a shared ``noise_grid`` a coarse draw is the cell average of the fine draw of the same seed."""
    prior = GaussianMollifier(1.0, 8)
    nested = prior.with_noise_grid((32, 24))
    fine = nested.white_noise((2, 3, 32, 24), torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(
        fine, prior.white_noise((2, 3, 32, 24), torch.Generator().manual_seed(5), dtype=torch.float64)
    )
    for size in ((16, 12), (8, 8), (4, 6)):
        coarse = nested.white_noise((2, 3, *size), torch.Generator().manual_seed(5), dtype=torch.float64)
        torch.testing.assert_close(coarse, F.adaptive_avg_pool2d(fine, size))
    torch.testing.assert_close(
        nested.sample((2, 3, 8, 8), torch.Generator().manual_seed(5), dtype=torch.float64),
        prior(F.adaptive_avg_pool2d(fine, (8, 8))),
    )


def test_noise_grid_keeps_the_per_pixel_distribution():
    base = WhiteNoise(train_size=8)
    nested = base.with_noise_grid(64)
    gen = torch.Generator().manual_seed(6)
    for size in (8, 16, 32):
        noise = nested.white_noise((400, 1, size, size), gen, dtype=torch.float64)
        assert noise.std().item() == pytest.approx(base.noise_scale((size, size)), rel=0.02)
        assert noise.mean().item() == pytest.approx(0.0, abs=0.02 * base.noise_scale((size, size)))
        pixels = noise.flatten(1)
        neighbours = (pixels[:, :-1] * pixels[:, 1:]).mean() / pixels.var()
        assert abs(neighbours.item()) < 0.02  # still white: averaging disjoint blocks adds no correlation


def test_noise_grid_must_be_a_multiple_of_the_sampled_grid():
    nested = GaussianMollifier(1.0, 8).with_noise_grid(96)
    with pytest.raises(ValueError, match="integer multiple of the sampled grid"):
        nested.white_noise((1, 3, 64, 64))
    with pytest.raises(ValueError, match="needs a training grid"):
        WhiteNoise(noise_grid=32)
    with pytest.raises(ValueError, match="inv_snr"):
        GaussianMollifier(1.0, 8, inv_snr=-1.0)
