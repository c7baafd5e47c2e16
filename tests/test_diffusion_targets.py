import pytest
import torch

from infdiff.diffusion.mollifier import GaussianMollifier
from infdiff.diffusion.parameterization import TARGETS, get_target, make_denoiser, noise_from_y0
from infdiff.diffusion.process import MollifiedDiffusion
from infdiff.diffusion.schedules import Schedule


@pytest.fixture(scope="module")
def process():
    return MollifiedDiffusion(Schedule.named("cosine", 1000), GaussianMollifier(1.5, (8, 12)))


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 12, dtype=torch.float64, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 8, 12, dtype=torch.float64, generator=gen)
    t = torch.tensor([0, 250, 700, 990])
    return x0, noise, t


def test_all_four_targets_are_registered():
    assert sorted(TARGETS) == ["epsilon", "mollified_epsilon", "v", "x0"]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_exact_target_as_network_output_gives_the_mollified_clean_image(process, batch, name):
    x0, noise, t = batch
    y_t = process.q_sample(x0, t, noise)
    exact = get_target(name).training_target(process, x0, noise, t)
    seen = []

    def model_fn(y, timesteps):
        seen.append((y, timesteps))
        return exact

    denoise = make_denoiser(model_fn, process, name, clip=False)
    torch.testing.assert_close(denoise(y_t, t), process.mollify(x0), rtol=0, atol=1e-9)
    assert seen[0][0] is y_t and seen[0][1] is t


def test_targets_are_different_functions(process, batch):
    x0, noise, t = batch
    values = [get_target(name).training_target(process, x0, noise, t) for name in sorted(TARGETS)]
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not torch.allclose(values[i], values[j])


def test_clip_clamps_the_estimate(process, batch):
    x0, _, t = batch
    denoise = make_denoiser(lambda y, timesteps: 3 * torch.ones_like(y), process, "x0", clip=True)
    out = denoise(torch.zeros_like(x0), t)
    assert out.max().item() == 1.0


def test_noise_from_y0_inverts_the_forward_process(process, batch):
    x0, noise, t = batch
    y_t = process.q_sample(x0, t, noise)
    eps = noise_from_y0(y_t, process.mollify(x0), process.alpha_bar(t, y_t))
    torch.testing.assert_close(eps, process.mollify(noise), rtol=0, atol=1e-9)


def test_unknown_target_lists_the_valid_ones(process):
    with pytest.raises(ValueError, match="mollified_epsilon"):
        make_denoiser(lambda y, t: y, process, "score")
