import pytest
import torch

from infdiff.diffusion.losses import subset_diffusion_loss
from infdiff.diffusion.mollifier import GaussianMollifier
from infdiff.diffusion.parameterization import TARGETS, get_target
from infdiff.diffusion.process import MollifiedDiffusion
from infdiff.diffusion.schedules import Schedule
from infdiff.ops.sparse_image import gather_pixels


@pytest.fixture(scope="module")
def process():
    return MollifiedDiffusion(Schedule.named("linear", 1000), GaussianMollifier(1.0, (8, 10)))


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 8, 10, dtype=torch.float64, generator=gen) * 2 - 1
    noise = torch.randn(3, 2, 8, 10, dtype=torch.float64, generator=gen)
    t = torch.tensor([5, 400, 900])
    index = torch.stack([torch.randperm(80, generator=gen)[:30] for _ in range(3)])
    return x0, noise, t, index


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_an_oracle_on_the_subset_has_zero_loss(process, batch, name, loss):
    x0, noise, t, index = batch
    exact = gather_pixels(get_target(name).training_target(process, x0, noise, t), index)
    losses = subset_diffusion_loss(process, lambda x_t, timesteps: exact, x0, t, index, name, noise, loss)
    assert losses.shape == (3,)
    torch.testing.assert_close(losses, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_model_sees_the_noisy_state_at_the_subset(process, batch):
    x0, noise, t, index = batch
    x_t = process.q_sample(x0, t, noise)
    rows, cols = index // 10, index % 10
    expected = torch.stack([x_t[b][:, rows[b], cols[b]].T for b in range(3)])
    seen = {}

    def model_fn(values, timesteps):
        seen["values"], seen["t"] = values, timesteps
        return torch.zeros_like(values)

    losses = subset_diffusion_loss(process, model_fn, x0, t, index, "mollified_epsilon", noise)
    assert seen["values"].shape == (3, 30, 2)
    torch.testing.assert_close(seen["values"], expected, rtol=0, atol=0)
    assert seen["t"] is t
    mollified_noise = process.mollify(noise)
    wanted = torch.stack([mollified_noise[b][:, rows[b], cols[b]].T for b in range(3)])
    torch.testing.assert_close(losses, wanted.pow(2).mean((1, 2)), rtol=1e-12, atol=0)


def test_l1_loss_is_the_mean_absolute_error(process, batch):
    x0, noise, t, index = batch
    losses = subset_diffusion_loss(process, lambda v, s: torch.zeros_like(v), x0, t, index, "x0", noise, "l1")
    torch.testing.assert_close(losses, gather_pixels(x0, index).abs().mean((1, 2)), rtol=1e-12, atol=0)


def test_dense_latent_loss_uses_the_same_function():
    process = MollifiedDiffusion(Schedule.named("constant", 100))
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(5, 16, dtype=torch.float64, generator=gen)
    noise = torch.randn(5, 16, dtype=torch.float64, generator=gen)
    t = torch.randint(0, 100, (5,), generator=gen)
    assert subset_diffusion_loss(process, lambda z, s: noise, z0, t, target="epsilon", noise=noise).abs().max() == 0
    losses = subset_diffusion_loss(process, lambda z, s: torch.zeros_like(z), z0, t, target="epsilon", noise=noise)
    torch.testing.assert_close(losses, noise.pow(2).mean(1), rtol=1e-12, atol=0)


def test_draws_its_own_noise_and_returns_finite_losses(process, batch):
    x0, _, t, index = batch
    losses = subset_diffusion_loss(process, lambda v, s: torch.zeros_like(v), x0.float(), t, index)
    assert losses.shape == (3,) and losses.dtype == torch.float32 and torch.isfinite(losses).all()


def test_bad_inputs_are_rejected_with_clear_messages(process, batch):
    x0, noise, t, index = batch
    with pytest.raises(ValueError, match="model output shape"):
        subset_diffusion_loss(process, lambda v, s: v[:, :5], x0, t, index, noise=noise)
    with pytest.raises(ValueError, match="'mse'"):
        subset_diffusion_loss(process, lambda v, s: v, x0, t, index, noise=noise, loss="huber")
    with pytest.raises(ValueError, match=r"index \(B, N\)"):
        subset_diffusion_loss(process, lambda v, s: v, x0, t, index[0], noise=noise)
