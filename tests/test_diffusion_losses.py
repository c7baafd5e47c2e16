import pytest
import torch

from infdiff.diffusion import (
    TARGETS,
    AutoencoderLoss,
    DiffusionLoss,
    DiscreteDDPM,
    GaussianMollifier,
    LossAwareTimesteps,
    denoising_loss,
    get_target,
)
from infdiff.diffusion.timesteps import step_times
from infdiff.ops import SparseImage
from infdiff.ops.sparse_image import gather_pixels


@pytest.fixture(scope="module")
def process():
    return DiscreteDDPM.named("linear", 1000, GaussianMollifier(1.0, (8, 10)), mollified_states=True)


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 8, 10, dtype=torch.float64, generator=gen) * 2 - 1
    noise = torch.randn(3, 2, 8, 10, dtype=torch.float64, generator=gen)
    t = step_times(torch.tensor([5, 400, 900]), 1000)
    index = torch.stack([torch.randperm(80, generator=gen)[:30] for _ in range(3)])
    return x0, noise, t, index


@pytest.mark.parametrize("name", TARGETS.names())
@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_an_oracle_on_the_subset_has_zero_loss(process, batch, name, loss):
    x0, noise, t, index = batch
    exact = gather_pixels(get_target(name).training_target(process, x0, noise, t), index)
    losses = denoising_loss(process, lambda x_t, s: exact, x0, t, noise, index, name, loss)
    assert losses.shape == (3,)
    torch.testing.assert_close(losses, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_model_sees_the_noisy_state_at_the_subset_and_the_step_ids(process, batch):
    x0, noise, t, index = batch
    x_t = process.q_sample(x0, t, noise)
    rows, cols = index // 10, index % 10
    expected = torch.stack([x_t[b][:, rows[b], cols[b]].T for b in range(3)])
    seen = {}

    def model_fn(x, s):
        seen["x"], seen["s"] = x, s
        return x.with_values(torch.zeros_like(x.values))

    losses = denoising_loss(process, model_fn, x0, t, noise, index, "mollified_epsilon")
    assert isinstance(seen["x"], SparseImage) and seen["x"].values.shape == (3, 30, 2)
    assert torch.equal(seen["x"].index, index) and seen["x"].size == (8, 10)
    torch.testing.assert_close(seen["x"].values, expected, rtol=0, atol=0)
    assert seen["s"].tolist() == [5, 400, 900]
    mollified_noise = process.prior.apply_sqrt_cov(noise)
    wanted = torch.stack([mollified_noise[b][:, rows[b], cols[b]].T for b in range(3)])
    torch.testing.assert_close(losses, wanted.pow(2).mean((1, 2)), rtol=1e-12, atol=0)


def test_l1_loss_is_the_mean_absolute_error(process, batch):
    x0, noise, t, index = batch
    losses = denoising_loss(process, lambda v, s: torch.zeros_like(v.values), x0, t, noise, index, "x0", "l1")
    torch.testing.assert_close(losses, gather_pixels(x0, index).abs().mean((1, 2)), rtol=1e-12, atol=0)


def test_dense_latent_loss_uses_the_same_function():
    process = DiscreteDDPM.named("constant", 100)
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(5, 16, dtype=torch.float64, generator=gen)
    noise = torch.randn(5, 16, dtype=torch.float64, generator=gen)
    t = step_times(torch.randint(0, 100, (5,), generator=gen), 100)
    assert denoising_loss(process, lambda z, s: noise, z0, t, noise, target="epsilon").abs().max() == 0
    losses = denoising_loss(process, lambda z, s: torch.zeros_like(z), z0, t, noise, target="epsilon")
    torch.testing.assert_close(losses, noise.pow(2).mean(1), rtol=1e-12, atol=0)


def test_the_loss_draws_its_own_times_noise_and_subset_from_the_generator(process, batch):
    x0 = batch[0].float()
    loss = DiffusionLoss(process, "x0", points=30, train_size=(8, 10))
    seen = []

    def model(x, s):
        seen.append((x.index.clone(), s.clone(), x.values.clone()))
        return x.with_values(torch.zeros_like(x.values))

    first = loss(model, x0, torch.Generator().manual_seed(3))
    second = loss(model, x0, torch.Generator().manual_seed(3))
    third = loss(model, x0, torch.Generator().manual_seed(4))
    assert (
        first.keys() == {"loss", "diffusion"} and first["loss"].shape == (3,) and first["loss"].dtype == torch.float32
    )
    torch.testing.assert_close(first["loss"], second["loss"], rtol=0, atol=0)
    for a, b in zip(seen[0], seen[1]):
        assert torch.equal(a, b)
    assert not torch.equal(seen[0][0], seen[2][0]) and not torch.equal(seen[0][1], seen[2][1])
    assert seen[0][0].shape == (3, 30) and (seen[0][1] >= 0).all() and (seen[0][1] < 1000).all()
    assert not torch.equal(first["loss"], third["loss"])


def test_every_pixel_means_the_dense_path(process, batch):
    loss = DiffusionLoss(process, "x0", points=80, train_size=(8, 10))
    shapes = []
    loss(lambda x, s: shapes.append(tuple(x.shape)) or torch.zeros_like(x), batch[0].float())
    assert shapes == [(3, 2, 8, 10)]


def test_importance_weights_multiply_the_loss_and_the_time_distribution_learns(process, batch):
    loss = DiffusionLoss(process, "x0", timesteps="loss-second-moment", points=30)
    assert isinstance(loss.times, LossAwareTimesteps)
    parts = loss(
        lambda x, s: x.with_values(torch.zeros_like(x.values)), batch[0].float(), torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(parts["loss"], parts["diffusion"])  # uniform until warmed up
    assert int(loss.times.state_dict()["counts"].sum()) == 3
    loss.times._counts.fill_(10)
    loss.times._losses[:500] = 10.0
    loss.times._losses[500:] = 1.0
    parts = loss(
        lambda x, s: x.with_values(torch.zeros_like(x.values)), batch[0].float(), torch.Generator().manual_seed(0)
    )
    assert not torch.allclose(parts["loss"], parts["diffusion"])


def test_the_autoencoder_loss_feeds_the_encoder_a_fresh_view_and_weights_its_kl(process, batch):
    x0 = batch[0].float()
    loss = AutoencoderLoss(process, "x0", points=30, encoder_points=20, kl_weight=0.5, train_size=(8, 10))
    seen = {}

    def model(x, s, encoder_input):
        seen["decoder"], seen["encoder"] = x.index, encoder_input
        return x.with_values(torch.zeros_like(x.values)), {"kl": torch.full((3,), 4.0)}

    parts = loss(model, x0, torch.Generator().manual_seed(0))
    assert isinstance(seen["encoder"], SparseImage) and seen["encoder"].values.shape == (3, 20, 2)
    torch.testing.assert_close(seen["encoder"].values, gather_pixels(x0, seen["encoder"].index))
    assert not torch.equal(seen["encoder"].index[:, :20], seen["decoder"][:, :20])
    torch.testing.assert_close(parts["loss"], parts["diffusion"] + 2.0)
    torch.testing.assert_close(parts["kl"], torch.full((3,), 4.0))
    every = AutoencoderLoss(process, "x0", points=30, encoder_points=None)
    every(model, x0)
    assert torch.equal(seen["encoder"], x0), "every pixel: the encoder gets the dense image"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(points=81), "points=81: expected a pixel count from 1 to the 80 pixels"),
        (dict(points=0), "points=0"),
        (dict(encoder_points=True), "encoder_points=True"),
        (dict(kl_weight=-1.0), "kl_weight=-1.0"),
        (dict(pointwise="huber"), "pointwise='huber'"),
        (dict(subset="sobol"), "unknown pixel-subset design 'sobol'"),
        (dict(timesteps="lognormal"), "unknown training-time"),
    ],
)
def test_bad_settings_are_rejected_naming_the_argument(process, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderLoss(process, train_size=(8, 10), **kwargs)


def test_bad_inputs_are_rejected_with_clear_messages(process, batch):
    x0, noise, t, index = batch
    with pytest.raises(ValueError, match="model output shape"):
        denoising_loss(process, lambda v, s: v.values[:, :5], x0, t, noise, index)
    with pytest.raises(ValueError, match="'mse'"):
        denoising_loss(process, lambda v, s: v, x0, t, noise, index, pointwise="huber")
    with pytest.raises(ValueError, match=r"index \(B, N\)"):
        denoising_loss(process, lambda v, s: v, x0, t, noise, index[0])
