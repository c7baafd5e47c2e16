import pytest
import torch

from infdiff.diffusion import PROCESSES, DiscreteDDPM, GaussianMollifier, Schedule, WhiteNoise, respace
from infdiff.diffusion.timesteps import step_times


@pytest.fixture(scope="module")
def process():
    return DiscreteDDPM.named("linear", 1000, GaussianMollifier(1.0, 8), mollified_states=True)


def mollifier_matrix(mollifier, n):
    """The (n*n, n*n) matrix of the mollifier on an n x n grid (row p is T applied to pixel p)."""
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    return mollifier(basis).reshape(n * n, n * n)


def test_q_sample_moments_match_the_mollified_process(process):
    gen = torch.Generator().manual_seed(0)
    n, batch, step = 8, 4000, 300
    x0 = torch.rand(1, 1, n, n, dtype=torch.float64, generator=gen) * 2 - 1
    t = step_times(torch.full((batch,), step), 1000)
    x_t = process.q_sample(x0.expand(batch, -1, -1, -1), t, generator=gen)
    abar = process.schedule.alphas_cumprod[step]
    t_matrix = mollifier_matrix(process.prior, n)
    noise_variance = t_matrix.pow(2).sum(1).reshape(n, n)
    expected_variance = (1 - abar) * noise_variance
    variance = x_t.var(0)[0]
    torch.testing.assert_close(variance, expected_variance, rtol=0.12, atol=0)
    assert (variance / expected_variance).mean().item() == pytest.approx(1.0, abs=0.03)
    expected_mean = abar.sqrt() * process.clean_state(x0)[0, 0]
    standard_error = (expected_variance / batch).sqrt()
    assert ((x_t.mean(0)[0] - expected_mean).abs() < 5 * standard_error).all()


def test_q_sample_with_given_noise_is_linear_in_mollified_parts(process):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=gen)
    noise = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=gen)
    steps = torch.tensor([0, 500, 999])
    abar = process.schedule.alphas_cumprod[steps].view(-1, 1, 1, 1)
    expected = abar.sqrt() * process.prior(x0) + (1 - abar).sqrt() * process.prior(noise)
    torch.testing.assert_close(process.q_sample(x0, step_times(steps, 1000), noise), expected, rtol=0, atol=1e-12)


def test_without_mollified_states_only_the_noise_is_coloured():
    prior = GaussianMollifier(1.0, 8)
    process = DiscreteDDPM.named("linear", 1000, prior)
    gen = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 2, 1, 8, 8, dtype=torch.float64, generator=gen)
    abar = process.schedule.alphas_cumprod[[10, 700]].view(-1, 1, 1, 1)
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * prior(noise)
    torch.testing.assert_close(process.q_sample(x0, step_times(torch.tensor([10, 700]), 1000), noise), expected)
    assert torch.equal(process.clean_state(x0), x0) and torch.equal(process.data_estimate(x0), x0)


def test_continuous_time_is_exact_on_the_steps_and_log_linear_between(process):
    abar = process.schedule.alphas_cumprod
    on_steps = process.alpha_bar(step_times(torch.arange(1000), 1000))
    torch.testing.assert_close(on_steps, abar, rtol=0, atol=0)
    assert float(process.alpha_bar(torch.tensor(0.0))) == 1.0
    between = process.alpha_bar(torch.tensor([0.5 / 1000, 500.5 / 1000], dtype=torch.float64))
    torch.testing.assert_close(between[0], abar[0].sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(between[1], (abar[499] * abar[500]).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        process.alpha(torch.tensor(0.3)) ** 2 + process.sigma(torch.tensor(0.3)) ** 2,
        torch.tensor(1.0, dtype=torch.float64),
    )
    assert process.model_time(step_times(torch.tensor([0, 7, 999]), 1000)).tolist() == [0, 7, 999]
    assert process.num_steps == 1000


@pytest.mark.parametrize("spec", [10, "ddim25", "5,10"])
def test_sampling_times_are_the_respaced_steps_descending(process, spec):
    kept = respace(process.schedule, spec).timesteps
    times = process.sampling_times(spec)
    assert times == sorted(times, reverse=True) and len(times) == len(kept)
    assert process.model_time(torch.tensor(times)).tolist() == kept.flip(0).tolist()


def test_terminal_state_is_the_prior_noise_for_a_variance_preserving_process(process):
    first = process.terminal_state((2, 1, 8, 8), torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = process.prior.sample((2, 1, 8, 8), torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(first, noise, rtol=1e-12, atol=0)


def test_data_estimate_undoes_the_mollifier_of_mollified_states(process):
    u = (torch.arange(8, dtype=torch.float64) + 0.5) / 8
    x = (torch.sin(3 * u)[:, None] * torch.cos(5 * u)[None, :]).view(1, 1, 8, 8)
    torch.testing.assert_close(
        process.data_estimate(process.clean_state(x)), process.prior.wiener_inverse(process.prior(x), 0.05)
    )
    assert process.data_estimate(process.clean_state(x)).sub(x).norm() < 0.5 * process.clean_state(x).sub(x).norm()


def test_vector_data_uses_a_plain_ddpm():
    process = PROCESSES["ddpm"](schedule="constant", steps=100)
    assert isinstance(process.prior, WhiteNoise) and process.prior.train_size is None
    assert process.prior.noise_scale((4, 7)) == 1.0
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(4, 7, dtype=torch.float64, generator=gen)
    noise = torch.randn(4, 7, dtype=torch.float64, generator=gen)
    steps = torch.tensor([0, 10, 50, 99])
    abar = process.schedule.alphas_cumprod[steps].unsqueeze(1)
    torch.testing.assert_close(
        process.q_sample(x0, step_times(steps, 100), noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    )


def test_a_discrete_process_has_no_sde_and_bad_inputs_are_rejected(process):
    with pytest.raises(NotImplementedError, match="not defined by an SDE"):
        process.drift(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="noise shape"):
        process.q_sample(torch.zeros(2, 1, 8, 8), torch.tensor([0.1, 0.2]), torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match="unknown beta schedule"):
        DiscreteDDPM.named("cosin", 10)
    assert DiscreteDDPM(Schedule.named("cosine", 10)).prior == WhiteNoise()
