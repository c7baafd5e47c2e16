import pytest
import torch

from infdiff.diffusion.posterior import posterior_mean_variance
from infdiff.diffusion.schedules import Schedule, respace


def bayes_posterior(abar_prev, abar, y0, y_t):
    """Gaussian conditioning: prior y_{i-1} ~ N(sqrt(ᾱ') y0, 1 - ᾱ'), likelihood y_i ~ N(sqrt(α) y_{i-1}, 1 - α)."""
    alpha = abar / abar_prev
    precision = 1 / (1 - abar_prev) + alpha / (1 - alpha)
    mean = (abar_prev**0.5 * y0 / (1 - abar_prev) + alpha**0.5 * y_t / (1 - alpha)) / precision
    return mean, 1 / precision


@pytest.mark.parametrize("spec", [1000, 37, "ddim20"])
@pytest.mark.parametrize("i", [1, 5, -1])
def test_posterior_matches_gaussian_conditioning(spec, i):
    schedule = respace(Schedule.named("cosine", 1000), spec)
    i = i % schedule.num_steps
    gen = torch.Generator().manual_seed(0)
    y0, y_t = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen)
    mean, variance = posterior_mean_variance(schedule, i, y0, y_t)
    abar = schedule.alphas_cumprod.tolist()
    expected_mean, expected_variance = bayes_posterior(abar[i - 1], abar[i], y0, y_t)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-9)
    assert variance == pytest.approx(expected_variance, rel=1e-9)
    _, large = posterior_mean_variance(schedule, i, y0, y_t, "fixed_large")
    assert large == pytest.approx(1 - abar[i] / abar[i - 1], rel=1e-12)


def test_first_step_returns_the_clean_estimate_without_noise():
    schedule = respace(Schedule.named("linear", 1000), 10)
    y0, y_t = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    mean, variance = posterior_mean_variance(schedule, 0, y0, y_t)
    torch.testing.assert_close(mean, y0, rtol=1e-12, atol=1e-12)
    assert variance == 0


def test_unknown_variance_is_rejected():
    with pytest.raises(ValueError, match="fixed_large"):
        posterior_mean_variance(Schedule.named("linear", 100), 1, torch.zeros(1), torch.zeros(1), "learned")
