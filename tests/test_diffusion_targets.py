import pytest
import torch

from infdiff.diffusion import TARGETS, DiscreteDDPM, GaussianMollifier, WhiteNoise, get_target, make_denoiser
from infdiff.diffusion.targets import noise_from_clean
from infdiff.diffusion.timesteps import step_times


@pytest.fixture(scope="module", params=["mollified", "coloured noise only"])
def process(request):
    return DiscreteDDPM.named(
        "cosine", 1000, GaussianMollifier(1.5, (8, 12)), mollified_states=request.param == "mollified"
    )


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 12, dtype=torch.float64, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 8, 12, dtype=torch.float64, generator=gen)
    t = step_times(torch.tensor([0, 250, 700, 990]), 1000)
    return x0, noise, t


def test_all_four_targets_are_registered():
    assert TARGETS.names() == ["epsilon", "mollified_epsilon", "v", "x0"]


@pytest.mark.parametrize("name", TARGETS.names())
def test_the_exact_target_as_network_output_gives_the_clean_state(process, batch, name):
    x0, noise, t = batch
    x_t = process.q_sample(x0, t, noise)
    exact = get_target(name).training_target(process, x0, noise, t)
    seen = []

    def model_fn(y, steps):
        seen.append((y, steps))
        return exact

    denoise = make_denoiser(model_fn, process, name, clip=False)
    torch.testing.assert_close(denoise(x_t, t), process.clean_state(x0), rtol=0, atol=1e-9)
    assert seen[0][0] is x_t and seen[0][1].tolist() == [0, 250, 700, 990]


@pytest.mark.parametrize("name", TARGETS.names())
def test_targets_hold_for_a_variance_exploding_process(batch, name):
    """``v``'s conversion divides by α² + σ² and the others need nothing of VP: an α = 1, σ = 3 process."""

    class Exploding(DiscreteDDPM):
        def alpha(self, t):
            return torch.ones_like(t, dtype=torch.float64)

        def sigma(self, t):
            return 3.0 * t.to(torch.float64)

    process = Exploding(DiscreteDDPM.named("linear", 100).schedule, WhiteNoise(8))
    x0, noise, _ = batch
    t = torch.full((4,), 1.0)
    exact = get_target(name).training_target(process, x0, noise, t)
    clean = get_target(name).predict_clean(process, exact, process.q_sample(x0, t, noise), t)
    torch.testing.assert_close(clean, x0, rtol=0, atol=1e-9)


def test_targets_are_different_functions(process, batch):
    x0, noise, t = batch
    values = [get_target(name).training_target(process, x0, noise, t) for name in TARGETS.names()]
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not torch.allclose(values[i], values[j])


def test_with_white_noise_and_plain_states_epsilon_and_the_prior_sample_coincide(batch):
    process = DiscreteDDPM.named("cosine", 1000, WhiteNoise(8))
    x0, noise, t = batch
    torch.testing.assert_close(get_target("mollified_epsilon").training_target(process, x0, noise, t), noise)
    torch.testing.assert_close(get_target("x0").predict_clean(process, x0, x0, t), x0)


def test_clip_clamps_the_estimate(process, batch):
    x0, _, t = batch
    denoise = make_denoiser(lambda y, steps: 3 * torch.ones_like(y), process, "x0", clip=True)
    assert denoise(torch.zeros_like(x0), t).max().item() == 1.0
    unclipped = make_denoiser(lambda y, steps: 3 * torch.ones_like(y), process, "x0", clip=False)
    assert unclipped(torch.zeros_like(x0), t).max().item() > 1.0


def test_noise_from_clean_inverts_the_forward_process(process, batch):
    x0, noise, t = batch
    x_t = process.q_sample(x0, t, noise)
    eta = noise_from_clean(process, process.clean_state(x0), x_t, t)
    torch.testing.assert_close(eta, process.prior.apply_sqrt_cov(noise), rtol=0, atol=1e-9)


def test_unknown_target_lists_the_valid_ones(process):
    with pytest.raises(ValueError, match="mollified_epsilon"):
        make_denoiser(lambda y, t: y, process, "score")
