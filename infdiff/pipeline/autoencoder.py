"""Stage 1 of ∞-Diff: the diffusion autoencoder, trained on random coordinate subsets.

For a clean batch ``x0`` (Bond-Taylor & Willcocks 2024, §4):

    z      = Enc(x0 at a fresh random subset of pixels)
    L(x0)  = mean over a random subset S of ‖ f(x_t|_S, t, z) − target|_S ‖²  +  λ_KL KL(q(z|x0) ‖ N(0, I))

with ``x_t`` the mollified state on the full grid (:class:`~infdiff.diffusion.AutoencoderLoss`, the
network :class:`~infdiff.nn.DiffusionAutoencoder`).  This module builds the stage from a config,
trains it with the shared runner and loads trained runs for generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from ml_collections import ConfigDict

from infdiff.data import build_dataset, data_channels, flip_batch, random_flip
from infdiff.diffusion import DiffusionProcess
from infdiff.nn import DiffusionAutoencoder
from infdiff.pipeline.build import SamplerSpec, build_loss, build_model, build_process, train_size
from infdiff.pipeline.schema import validate_config
from infdiff.pipeline.runs import check_trained_with, load_latest_checkpoint
from infdiff.pipeline.sampling import decode_latents
from infdiff.pipeline.stage import Stage, run_stage
from infdiff.train.batches import check_batches, dataset_batches
from infdiff.train.images import save_step_comparison
from infdiff.train.loop import Hooks
from infdiff.train.rng import mixed_seed
from infdiff.train.settings import TrainSettings


def build_autoencoder(config: ConfigDict) -> DiffusionAutoencoder:
    """Stage 1's network (``config.model``) for the data's channels and the ``data.img_size`` grid."""
    return build_model(config, channels=data_channels(config.data), train_size=train_size(config))


@dataclass(frozen=True)
class TrainedAutoencoder:
    """A stage-1 network with the process, target and sampler it decodes with (and where it came from)."""

    model: DiffusionAutoencoder
    process: DiffusionProcess
    target: str
    sampler: SamplerSpec
    checkpoint: Optional[Path] = None
    step: Optional[int] = None

    @classmethod
    def from_config(cls, config: ConfigDict, model: DiffusionAutoencoder, **where) -> "TrainedAutoencoder":
        return cls(model, build_process(config), config.loss.target, SamplerSpec.from_section(config.sampler), **where)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic codes ``(B, z_dim)`` of images (the mean for a Gaussian encoder)."""
        return self.model.encode(images, sample=False).mean

    def decode(
        self,
        z: torch.Tensor,
        size: int,
        sampler: Optional[SamplerSpec] = None,
        generator: Optional[torch.Generator] = None,
        noise_size: Optional[int] = None,
        inv_snr: Optional[float] = None,
    ) -> torch.Tensor:
        """Images ``(B, C, size, size)`` in [-1, 1] from ``z``: :func:`decode_latents` with this run's settings."""
        shape = (z.shape[0], self.model.channels, size, size)
        return decode_latents(
            self.model.conditioned_on(z),
            self.process,
            self.target,
            sampler or self.sampler,
            shape,
            generator,
            z.device,
            noise_size=noise_size,
            inv_snr=inv_snr,
        )


def load_autoencoder(config: ConfigDict, device="cpu", flag: str = "config") -> TrainedAutoencoder:
    """The EMA weights of the newest stage-1 checkpoint of ``config``'s experiment, in eval mode.

    ``config`` must agree with the checkpoint's on what the weights mean (else a ``ConfigError``
    naming the keys); :func:`~infdiff.pipeline.runs.saved_run_config` gives such a config.
    """
    validate_config(config, flag)
    state, path = load_latest_checkpoint(config, flag=flag)
    check_trained_with(config, state, path, flag)
    model = build_autoencoder(config)
    model.load_state_dict(state["ema"]["model"])
    return TrainedAutoencoder.from_config(config, model.to(device).eval(), checkpoint=path, step=state["step"])


def image_batches(
    dataset, flips: bool, config: ConfigDict, settings: TrainSettings, accelerator: Accelerator
) -> Callable[[int], Iterator[torch.Tensor]]:
    """Training batches from ``start_step`` on, on the device; with ``flips``, each image mirrored with
    probability 1/2.

    The flips of step ``s`` are drawn from a generator seeded by the run's seed, ``s`` and the
    process, so batches, flips included, are a pure function of the step (exact resumption).
    """
    seed, rank = config.run.seed, accelerator.process_index

    def batches(start_step: int) -> Iterator[torch.Tensor]:
        loader = dataset_batches(
            dataset, settings.batch_size, seed, start_step, rank, accelerator.num_processes, config.data.num_workers
        )
        for step, x in enumerate(loader, start=start_step):
            if flips:
                x = flip_batch(x, torch.Generator().manual_seed(mixed_seed(seed, step, rank)))
            yield x.to(accelerator.device, non_blocking=True)

    return batches


def reference_images(dataset, count: int, size: int, images: torch.Tensor) -> torch.Tensor:
    """The first ``count`` data images at ``size``: exact renderings when the data set can make them
    (procedural shapes), else the bilinear resampling of ``images``."""
    render = getattr(dataset, "render_sample", None)
    if render is not None:
        return torch.stack([render(i, size) for i in range(count)])
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)


def reconstruction_hook(dataset, config: ConfigDict, settings: TrainSettings, run_dir: Path, device) -> Callable:
    """Pictures (and numbers) of EMA reconstructions at the training resolution and at 2×.

    Writes ``samples/recon_<step>.png`` (rows: data, decoded at 1×, decoded at 2×) and a JSON of
    per-resolution mean squared errors; at 2× the reference is the data set's exact rendering
    when it has one (the procedural shapes), else the bilinear upsampling of the data.
    """
    count = min(settings.sample_size, len(dataset))
    images = torch.stack([dataset[i] for i in range(count)]).to(device)
    size = config.data.img_size
    references = {1: images, 2: reference_images(dataset, count, 2 * size, images).to(device)}

    def visualize(step: int, ema_model: DiffusionAutoencoder) -> Dict[str, float]:
        trained = TrainedAutoencoder.from_config(config, ema_model)
        z = ema_model.encode(images).z
        rows, metrics = [("data", images)], {}
        for factor, reference in references.items():
            generator = torch.Generator(device=device).manual_seed(config.run.seed)
            decoded = trained.decode(z, factor * size, generator=generator)
            rows.append((f"{factor}x", decoded))
            metrics[f"recon_mse_{factor}x"] = float((decoded - reference).square().mean())
        save_step_comparison(rows, metrics, run_dir / "samples", "recon", step)
        return metrics

    return visualize


def autoencoder_stage(config: ConfigDict, accelerator: Accelerator, settings: TrainSettings, run_dir: Path) -> Stage:
    """Stage 1's network, loss, batches and reconstruction pictures (for :func:`run_stage`)."""
    dataset = build_dataset(config.data)
    check_batches(len(dataset), settings.batch_size, accelerator.num_processes, "images")
    model = build_autoencoder(config)
    hooks = Hooks(
        visualize=reconstruction_hook(dataset, config, settings, run_dir, accelerator.device)
        if accelerator.is_main_process
        else None
    )
    loss = build_loss(config, build_process(config))
    flips = random_flip(config.data)
    data = (
        f"{config.data.name}, {len(dataset)} images of {data_channels(config.data)}×{config.data.img_size}²"
        f" ({'random flips' if flips else 'no flips'}); the loss sees {config.loss.points or 'every'} and the "
        f"encoder {config.loss.encoder_points or 'every'} of {config.data.img_size**2} pixels"
    )
    return Stage(
        model, loss, image_batches(dataset, flips, config, settings, accelerator), hooks, summary={"data": data}
    )


def train_autoencoder(config: ConfigDict) -> Path:
    """Train (or resume) stage 1 of ``config``'s experiment; returns the run directory."""
    return run_stage(config, autoencoder_stage)
