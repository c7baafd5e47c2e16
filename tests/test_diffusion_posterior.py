import pytest
import torch

from infdiff.diffusion import DiscreteDDPM, posterior_mean_variance


def bayes_posterior(abar_prev, abar, y0, y_t):
    """Gaussian conditioning: prior y_{i-1} ~ N(sqrt(ᾱ') y0, 1 - ᾱ'), likelihood y_i ~ N(sqrt(α) y_{i-1}, 1 - α)."""
    alpha = abar / abar_prev
    precision = 1 / (1 - abar_prev) + alpha / (1 - alpha)
    mean = (abar_prev**0.5 * y0 / (1 - abar_prev) + alpha**0.5 * y_t / (1 - alpha)) / precision
    return mean, 1 / precision


@pytest.mark.parametrize("spec", [1000, 37, "ddim20"])
@pytest.mark.parametrize("i", [1, 5, -2])
def test_posterior_matches_gaussian_conditioning(spec, i):
    process = DiscreteDDPM.named("cosine", 1000)
    times = process.sampling_times(spec)[::-1]
    t, s = times[i], times[i - 1]
    gen = torch.Generator().manual_seed(0)
    y0, y_t = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen)
    mean, variance = posterior_mean_variance(process, t, s, y0, y_t)
    abar_t, abar_s = (float(process.alpha_bar(torch.tensor(time))) for time in (t, s))
    expected_mean, expected_variance = bayes_posterior(abar_s, abar_t, y0, y_t)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-9)
    assert variance == pytest.approx(expected_variance, rel=1e-9)
    _, large = posterior_mean_variance(process, t, s, y0, y_t, "fixed_large")
    assert large == pytest.approx(1 - abar_t / abar_s, rel=1e-9)


def test_the_last_step_returns_the_clean_estimate_without_noise():
    process = DiscreteDDPM.named("linear", 1000)
    y0, y_t = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    mean, variance = posterior_mean_variance(process, process.sampling_times(10)[-1], 0.0, y0, y_t)
    torch.testing.assert_close(mean, y0, rtol=1e-12, atol=1e-12)
    assert variance == 0


def test_unknown_variance_and_wrong_time_order_are_rejected():
    process = DiscreteDDPM.named("linear", 100)
    with pytest.raises(ValueError, match="fixed_large"):
        posterior_mean_variance(process, 0.5, 0.1, torch.zeros(1), torch.zeros(1), "learned")
    with pytest.raises(ValueError, match="0 <= s < t"):
        posterior_mean_variance(process, 0.1, 0.5, torch.zeros(1), torch.zeros(1))
