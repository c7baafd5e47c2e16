"""Trace-class spectral priors represent one random field at every resolution.

Samples drawn at 28², 56² and 112² (trained at 28²) must agree in per-pixel variance and in their
radially averaged spectrum within sampling error; white noise, which is not trace class, must not.
The random spectral prior (``"fno"``) has no power off its ``modes × modes`` block at any side.
"""

import math

import pytest
import torch

from infdiff.diffusion import (
    PRIORS,
    BesselPrior,
    CombinedPrior,
    LaplacianPrior,
    RandomSpectralPrior,
    WhiteNoise,
    dct2,
)
from infdiff.diffusion.spectral_priors import laplacian_eigenvalues
from infdiff.ops import SparseImage, uniform_subset
from infdiff.pipeline.schema import CONFIG_SCHEMA
from infdiff.train.config import ConfigError

INVERTIBLE_PRIORS = [
    LaplacianPrior(s=2.0, train_size=28),
    BesselPrior(s=1.5, tau=10.0, train_size=28),
    CombinedPrior(s=2.0, modes=6, seed=2, weight=0.5, train_size=28),
]
PRIORS_UNDER_TEST = [*INVERTIBLE_PRIORS, RandomSpectralPrior(modes=6, seed=1, train_size=28)]
SIDES = (28, 56, 112)
COUNT = 1024


def samples(prior, side, seed):
    return prior.sample((COUNT, 1, side, side), torch.Generator().manual_seed(seed), dtype=torch.float64)[:, 0]


def mode_variances(prior, side):
    """Each DCT coefficient's variance ``r² q_k²`` on a ``side²`` grid (``r = side / 28``)."""
    return (side / 28) ** 2 * prior.gain(side, dtype=torch.float64).square()


@pytest.mark.parametrize("prior", PRIORS_UNDER_TEST, ids=lambda p: type(p).__name__)
def test_the_per_pixel_variance_agrees_across_resolutions(prior):
    """The mean over pixels of ``x²`` is ``Σ_k c_k² / N`` with independent ``c_k ~ N(0, v_k)``: mean
    ``Σ v / N``, standard error ``sqrt(2 Σ v² / COUNT) / N``; each estimate is held to 4 of them."""
    expected = []
    for side in SIDES:
        v = mode_variances(prior, side)
        n = side * side
        mean, error = float(v.sum() / n), float((2 * v.square().sum() / COUNT).sqrt() / n)
        measured = float(samples(prior, side, seed=side).square().mean())
        assert abs(measured - mean) < 4 * error, (side, measured, mean, error)
        expected.append(mean)
    assert expected[0] == pytest.approx(1.0), "normalised to unit variance on the training grid"
    assert max(expected) / min(expected) < 1.05, f"a trace-class prior converges under refinement: {expected}"


@pytest.mark.parametrize("prior", PRIORS_UNDER_TEST, ids=lambda p: type(p).__name__)
def test_the_radially_averaged_spectrum_agrees_across_resolutions(prior):
    """Rings of the lowest modes (the same functions at every side): the measured power over the
    expected one averages ``m`` ratios of mean 1 and variance ``2 / COUNT`` each (over the modes with
    power; those without have none)."""
    k = laplacian_eigenvalues(28).sqrt() / math.pi
    for side in SIDES:
        power, expected = dct2(samples(prior, side, seed=side + 1)).square().mean(0), mode_variances(prior, side)
        powered = expected > 0
        assert float(power[~powered].sum()) < 1e-20, "no power off the prior's modes"
        ratio = power[:28, :28] / expected[:28, :28]
        for low in range(0, 24, 3):
            ring = (k >= low) & (k < low + 3) & powered[:28, :28]
            if ring.any():
                tolerance = 4 * math.sqrt(2 / (int(ring.sum()) * COUNT))
                assert abs(float(ratio[ring].mean()) - 1) < tolerance, (side, low)


def test_white_noise_is_not_trace_class_and_its_per_pixel_variance_grows():
    white = WhiteNoise(train_size=28)
    coarse, fine = (float(samples(white, side, seed=0).square().mean()) for side in (28, 56))
    assert fine / coarse == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize("prior", INVERTIBLE_PRIORS, ids=lambda p: type(p).__name__)
def test_the_inverse_square_root_undoes_the_square_root_and_the_covariance_is_self_adjoint(prior):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 1, 40, 24, generator=g, dtype=torch.float64)
    torch.testing.assert_close(prior.apply_inverse_sqrt_cov(prior.apply_sqrt_cov(x)), x)
    assert float((prior.apply_cov(x) * y).sum()) == pytest.approx(float((x * prior.apply_cov(y)).sum()), rel=1e-10)
    regularised = prior.apply_inverse_sqrt_cov(prior.apply_sqrt_cov(x), inv_snr=1e-3)
    assert float((regularised - x).abs().max()) < 0.5, "Wiener-regularised: close, bounded"


def test_the_priors_are_registered_sample_at_pixels_and_run_under_bf16():
    prior = PRIORS["laplacian"](s=2.0, train_size=16)
    assert isinstance(PRIORS["bessel"](train_size=16), BesselPrior)
    index = uniform_subset(2, 16, 64, generator=torch.Generator().manual_seed(0))
    points = SparseImage(torch.zeros(2, 64, 3), index, (16, 16))
    drawn = prior.sample_at(points, 3, torch.Generator().manual_seed(1))
    assert drawn.values.shape == (2, 64, 3) and torch.isfinite(drawn.values).all()
    assert prior.sample((1, 3, 20, 12), dtype=torch.bfloat16).dtype == torch.bfloat16


def test_the_random_spectral_prior_is_fixed_by_its_seed_finite_rank_and_inverted_only_regularised():
    prior = PRIORS["fno"](modes=4, seed=5, train_size=8)
    again, other = (
        RandomSpectralPrior(modes=4, seed=5, train_size=8),
        RandomSpectralPrior(modes=4, seed=6, train_size=8),
    )
    q = prior.mode_multiplier(8)
    assert torch.equal(q, again.mode_multiplier(8)) and not torch.equal(q, other.mode_multiplier(8))
    assert bool((q[:4, :4] > 0).all() & (q[:4, :4] <= 1).all()) and int((q > 0).sum()) == 16
    assert torch.equal(prior.mode_multiplier((16, 3))[:4, :3], q[:4, :3]), "a coarse grid keeps the modes it has"
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"finite rank 4²: C\^\(-1/2\) needs inv_snr"):
        prior.apply_inverse_sqrt_cov(x)
    low_pass = prior.apply_inverse_sqrt_cov(prior.apply_sqrt_cov(x), inv_snr=1e-6)
    kept = torch.zeros(8, 8, dtype=torch.float64)
    kept[:4, :4] = 1
    torch.testing.assert_close(dct2(low_pass), dct2(x) * kept)  # the regularised inverse projects onto the modes


def test_the_combined_prior_is_the_normalised_sum_of_its_parts():
    prior = PRIORS["combined"](s=2.5, modes=3, seed=4, weight=2.0, train_size=10)
    laplacian, random = LaplacianPrior(s=2.5, train_size=10), RandomSpectralPrior(modes=3, seed=4, train_size=10)
    total = laplacian.gain(20, dtype=torch.float64) + 2.0 * random.gain(20, dtype=torch.float64)
    torch.testing.assert_close(prior.gain(20, dtype=torch.float64), total / total[:10, :10].square().mean().sqrt())
    assert float(prior.gain(20, dtype=torch.float64).min()) > 0


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: LaplacianPrior(s=1.0, train_size=8),
            r"s=1.0: the covariance is trace class on the unit square only for s > 1",
        ),
        (lambda: BesselPrior(tau=0.0, train_size=8), r"tau=0.0: expected a positive shift"),
        (lambda: LaplacianPrior(), r"LaplacianPrior needs train_size"),
        (lambda: RandomSpectralPrior(modes=9, train_size=8), r"modes=9 exceeds the training grid \(8, 8\)"),
        (lambda: RandomSpectralPrior(modes=0, train_size=8), r"modes=0: expected a positive int"),
        (lambda: RandomSpectralPrior(seed=-1, train_size=8), r"seed=-1: expected an int >= 0"),
        (lambda: CombinedPrior(weight=-1.0, train_size=8), r"weight=-1.0: expected a weight >= 0"),
        (lambda: CombinedPrior(s=0.5, train_size=8), r"s=0.5: the covariance is trace class"),
    ],
)
def test_bad_settings_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_the_config_schema_checks_the_spectral_keys():
    with pytest.raises(ConfigError, match=r"prior.s=0.5: expected a number > 1"):
        CONFIG_SCHEMA["prior.s"].check(0.5, "prior.s")
    for key, bad in (("prior.modes", 0), ("prior.seed", -1), ("prior.weight", -0.5)):
        with pytest.raises(ConfigError, match=key):
            CONFIG_SCHEMA[key].check(bad, key)


def test_a_config_builds_the_random_spectral_and_combined_priors_on_the_training_grid():
    from ml_collections import ConfigDict

    from infdiff.pipeline.build import build_prior

    for section in (dict(name="fno", modes=4, seed=3), dict(name="combined", s=2.5, modes=4, seed=3, weight=0.5)):
        for key, value in section.items():
            CONFIG_SCHEMA[f"prior.{key}"].check(value, f"prior.{key}")
        prior = build_prior(ConfigDict(dict(data=dict(img_size=12), prior=section)))
        assert prior.train_size == (12, 12) and prior.modes == 4 and prior.seed == 3
