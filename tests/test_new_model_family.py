"""A new model family is an addition, not a fork: a variance-exploding SDE and a prior defined here only.

Both are registered (and their keys declared in the config schema) from this file, named by a
config, trained with the shared stage runner and loop (``loss(model, batch, generator)``, EMA,
checkpoints) and sampled with the shared samplers; nothing outside this file knows about them.
"""

import math
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from ml_collections import ConfigDict

from infdiff.diffusion import PRIORS, PROCESSES, DiffusionProcess, NoisePrior
from infdiff.ops.grid import Size
from infdiff.pipeline.build import SamplerSpec, build_loss, build_model, build_process
from infdiff.pipeline.runs import load_latest_checkpoint
from infdiff.pipeline.schema import CONFIG_SCHEMA, POSITIVE, validate_config
from infdiff.pipeline.sampling import sample_latents
from infdiff.pipeline.stage import Stage, run_stage
from infdiff.train.batches import tensor_batches

MODES = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
MODE_STD = 0.3


@dataclass(frozen=True)
class ScaledWhiteNoise(NoisePrior):
    """``C = c² I``."""

    scale: float = 1.0
    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None

    def apply_sqrt_cov(self, x):
        return self.scale * x

    def apply_inverse_sqrt_cov(self, x, inv_snr=None):
        return x / self.scale


@dataclass(frozen=True, eq=False)
class VarianceExplodingSDE(DiffusionProcess):
    """``dx = g(t) dW_C`` with ``σ(t) = σ_min (σ_max / σ_min)^t``, ``g = σ sqrt(2 log(σ_max / σ_min))``, ``α = 1``
    (Song et al. 2021, SMLD as an SDE)."""

    prior: NoisePrior
    sigma_min: float = 0.01
    sigma_max: float = 5.0
    mollified_states: bool = False

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t), dtype=torch.float64)

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** torch.as_tensor(t, dtype=torch.float64)

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))


TOY_KEYS = {"prior.scale": POSITIVE, "process.sigma_min": POSITIVE, "process.sigma_max": POSITIVE}


@pytest.fixture
def registered():
    PROCESSES.register("toy_ve_sde", VarianceExplodingSDE)
    PRIORS.register("toy_scaled_white", ScaledWhiteNoise)
    new_keys = [key for key in TOY_KEYS if key not in CONFIG_SCHEMA]  # the shipped SDEs declare sigma_min/max
    for key in new_keys:
        CONFIG_SCHEMA.declare(key, TOY_KEYS[key])
    yield
    PROCESSES.unregister("toy_ve_sde")
    PRIORS.unregister("toy_scaled_white")
    for key in new_keys:
        CONFIG_SCHEMA.undeclare(key)


def toy_config(output_dir) -> ConfigDict:
    return ConfigDict(
        dict(
            run=dict(
                experiment="toy",
                output_dir=str(output_dir),
                seed=0,
                deterministic=False,
                tensorboard=False,
                wandb_project="",
            ),
            data=dict(num_samples=4096),
            train=dict(
                batch_size=256,
                max_steps=400,
                log_steps=100,
                checkpoint_steps=400,
                ema_decay=0.9,
                ema_update_every=1,
                plot_samples_steps=10_000,
            ),
            model=dict(arch="latent_mlp", hidden=64, num_layers=3, time_dim=32),
            prior=dict(name="toy_scaled_white", scale=1.0),
            process=dict(name="toy_ve_sde", sigma_min=0.01, sigma_max=5.0),
            loss=dict(name="denoising", target="epsilon", pointwise="mse", timesteps="uniform"),
            sampler=dict(name="ddim", steps=40, eta=0.0),
            optimizer=dict(learning_rate=3e-3, decay_fraction=0.25),
        )
    )


def mixture(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MODES[torch.randint(0, 2, (count,), generator=g)] + MODE_STD * torch.randn(count, 2, generator=g)


def toy_stage(config, accelerator, settings, run_dir) -> Stage:
    data = mixture(config.data.num_samples, config.run.seed)

    def batches(start_step):
        for x in tensor_batches(data, settings.batch_size, config.run.seed, start_step):
            yield x.to(accelerator.device)

    return Stage(
        build_model(config, z_dim=2),
        build_loss(config, build_process(config)),
        batches,
        summary={"data": f"{len(data)} points of a two-mode mixture"},
    )


def near_a_mode(points: torch.Tensor) -> torch.Tensor:
    return (torch.cdist(points, MODES).min(1).values < 3 * MODE_STD).float().mean()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_toy_sde_and_prior_train_with_the_shared_loop_and_sample_with_the_shared_samplers(
    tmp_path, registered, sampler
):
    config = toy_config(tmp_path)
    process = build_process(config)
    assert isinstance(process, VarianceExplodingSDE) and isinstance(process.prior, ScaledWhiteNoise)
    run_stage(config, toy_stage)
    state, _ = load_latest_checkpoint(config)
    model = build_model(config, z_dim=2)
    model.load_state_dict(state["ema"]["model"])
    spec = SamplerSpec.from_section(config.sampler, name=sampler)

    def draw(network):
        generator = torch.Generator().manual_seed(1)
        return sample_latents(
            network.eval(), process, config.loss.target, spec, 2000, torch.zeros(2), torch.ones(2), generator
        )

    samples, untrained = draw(model), draw(build_model(config, z_dim=2))
    assert near_a_mode(samples) > 0.8 > 0.2 > near_a_mode(untrained)
    left = (samples[:, 0] < 0).float().mean()
    assert 0.35 < left < 0.65, "both modes are sampled"
    assert 0.2 < samples[:, 1].std() < 0.45, "with the modes' spread (0.3; measured 0.29-0.30)"


def test_the_family_declares_its_keys_so_they_are_checked_before_building(tmp_path, registered, recwarn):
    config = toy_config(tmp_path)
    validate_config(config)
    assert not [w for w in recwarn if "not declared" in str(w.message)]
    config.process.sigma_max = -5.0
    with pytest.raises(ValueError, match=r"--config.process.sigma_max=-5.0: expected a number > 0"):
        validate_config(config)
