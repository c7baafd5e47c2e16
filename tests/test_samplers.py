import pytest
import torch

from infdiff.diffusion import (
    SAMPLERS,
    DiscreteDDPM,
    GaussianMollifier,
    ddim_invert,
    make_denoiser,
    respace,
    sample_ddim,
    sample_ddpm,
)

DATA_STD = 0.5


def make_process(train_size=8, schedule="linear"):
    return DiscreteDDPM.named(schedule, 1000, GaussianMollifier(1.0, train_size), mollified_states=True)


def gaussian_oracle(process, mean_image):
    """Exact E[y_0 | y_t] for x_0 ~ N(mean, DATA_STD² I) at the training grid, mollified.

    y_0 = T x_0 and η = T ξ share the covariance T Tᵀ (times DATA_STD², resp. 1), so
    E[y_0 | y_t] = T m + c (y_t - α T m) with c = α s² / (α² s² + σ²).  On a grid r
    times finer both variances scale by the same r², so the same formula holds there.
    """
    mollified_mean = process.clean_state(mean_image)

    def denoise(y_t, t):
        alpha, sigma = process.coefficients(t, y_t)
        c = alpha * DATA_STD**2 / (alpha**2 * DATA_STD**2 + sigma**2)
        return mollified_mean + c * (y_t - alpha * mollified_mean)

    return denoise


def relative_error(estimate, target):
    return ((estimate - target).norm() / target.norm()).item()


def test_both_samplers_are_registered():
    assert SAMPLERS["ddim"] is sample_ddim and SAMPLERS["ddpm"] is sample_ddpm


def test_ddim_without_eta_is_deterministic_and_eta_adds_seeded_noise():
    process = make_process()
    denoise = gaussian_oracle(process, torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    x_T = process.terminal_state((2, 1, 8, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    first = sample_ddim(denoise, x_T, process, 20)
    assert torch.equal(first, sample_ddim(denoise, x_T, process, 20))
    noisy = [sample_ddim(denoise, x_T, process, 20, 1.0, torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1])
    assert not torch.allclose(noisy[0], first)


def test_ddim_inversion_then_sampling_reconstructs_the_image():
    process = make_process()
    gen = torch.Generator().manual_seed(2)
    mean_image = 0.4 * torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=gen) - 0.2
    denoise = gaussian_oracle(process, mean_image)
    y0 = process.clean_state(mean_image + DATA_STD * torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=gen))
    errors = {}
    for steps in (50, 100):
        x_T = ddim_invert(denoise, y0, process, steps)
        assert relative_error(x_T, y0) > 0.5
        errors[steps] = relative_error(sample_ddim(denoise, x_T, process, steps), y0)
    assert errors[100] < 0.08
    assert errors[100] < 0.6 * errors[50]


def point_mass_model(process, y0, seen=None):
    """The exact mollified-noise prediction for data that is the single image ``y0``; records its step ids."""

    def model(y_t, steps):
        if seen is not None:
            assert steps.dtype == torch.long and steps.shape == (y_t.shape[0],) and (steps == steps[0]).all()
            seen.append(int(steps[0]))
        abar = process.schedule.alphas_cumprod[steps].view(-1, 1, 1, 1)
        return (y_t - abar.sqrt() * y0) / (1 - abar).sqrt()

    return model


def test_a_point_mass_is_sampled_exactly_through_make_denoiser():
    process = make_process()
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(1, 2, 8, 8, dtype=torch.float64, generator=gen) * 2 - 1
    y0 = process.clean_state(x0)
    denoise = make_denoiser(point_mass_model(process, y0), process, "mollified_epsilon")
    x_T = process.terminal_state((3, 2, 8, 8), gen, dtype=torch.float64)
    expected = y0.expand(3, -1, -1, -1)
    torch.testing.assert_close(sample_ddpm(denoise, x_T, process, 25, generator=gen), expected)
    torch.testing.assert_close(sample_ddim(denoise, x_T, process, 25), expected)


def test_respaced_samplers_call_the_model_with_original_timestep_ids():
    process = make_process()
    kept = respace(process.schedule, "ddim10").timesteps.tolist()
    assert kept == list(range(0, 1000, 100))
    y0 = torch.zeros(2, 1, 8, 8)
    x_T = process.terminal_state((2, 1, 8, 8))
    for sampler in (sample_ddpm, sample_ddim):
        seen = []
        sampler(make_denoiser(point_mass_model(process, y0, seen), process), x_T, process, "ddim10")
        assert seen == kept[::-1]
    seen = []
    ddim_invert(make_denoiser(point_mass_model(process, y0, seen), process), x_T, process, "ddim10", progress=True)
    assert seen == kept[:-1]


def sample_variance(process, size, steps, variance="fixed_small"):
    """Mean per-pixel variance of DDPM samples from the Gaussian oracle, over its exact value DATA_STD² scale² mean_k g(k)²."""
    gen = torch.Generator().manual_seed(4)
    denoise = gaussian_oracle(process, torch.zeros(1, 1, size, size, dtype=torch.float64))
    x_T = process.terminal_state((256, 1, size, size), gen, dtype=torch.float64)
    samples = sample_ddpm(denoise, x_T, process, steps, variance, gen)
    gain = process.prior.gain((size, size), dtype=torch.float64)
    expected = DATA_STD**2 * process.prior.noise_scale((size, size)) ** 2 * gain.pow(2).mean().item()
    return samples.pow(2).mean().item() / expected


@pytest.mark.parametrize("size", [8, 16])
def test_ddpm_samples_have_the_data_variance_at_training_and_double_resolution(size):
    """Var(y_0) = DATA_STD² Var(T ξ) per pixel; at 2x it holds only if every fresh noise draw is resolution-scaled."""
    assert sample_variance(make_process(), size, 1000) == pytest.approx(1.0, abs=0.1)


def test_fixed_large_variance_is_used_when_asked():
    process = make_process(schedule="cosine")
    small, large = (sample_variance(process, 8, 50, v) for v in ("fixed_small", "fixed_large"))
    assert large > small + 0.05


def test_bad_arguments_are_rejected():
    process = make_process()
    x_T = process.terminal_state((1, 1, 8, 8))
    denoise = gaussian_oracle(process, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(denoise, x_T, process, 10, eta=-1.0)
    with pytest.raises(ValueError, match="fixed_small"):
        sample_ddpm(denoise, x_T, process, 5, variance="learned")
