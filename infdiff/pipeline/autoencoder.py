"""Stage 1 of ∞-Diff: the diffusion autoencoder as one module whose forward is the training loss.

For a clean batch ``x0`` and timesteps ``t`` (Bond-Taylor & Willcocks 2024, §4):

    z      = Enc(x0 at a fresh random subset of pixels)
    L(x0)  = mean over a random subset S of ‖ f(x_t|_S, t, z) − target|_S ‖²  +  λ_KL KL(q(z|x0) ‖ N(0, I))

with ``x_t`` the mollified state on the full grid.  Keeping encoder and decoder in one module
lets DDP synchronise both in a single backward pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from ml_collections import ConfigDict
from torch import nn
from tqdm.auto import tqdm

from infdiff.diffusion import MollifiedDiffusion, subset_diffusion_loss
from infdiff.nn import SparseEncoder, SparseUNet, kl_to_standard_normal
from infdiff.ops import SparseImage, sample_subset
from infdiff.pipeline.build import (build_decoder, build_encoder, build_process, build_timestep_sampler,
                                     build_unflipped_dataset)
from infdiff.pipeline.runs import load_latest_checkpoint, run_directory, write_run_config
from infdiff.pipeline.sampling import decode_latents
from infdiff.train.batches import dataset_batches
from infdiff.train.checkpoint import atomic_write_text
from infdiff.train.images import save_resolution_comparison
from infdiff.train.loop import Hooks, Trainer, make_accelerator
from infdiff.train.run_logger import RunLogger


class DiffusionAutoencoder(nn.Module):
    """Encoder + ∞-Diff decoder + mollified process; ``forward(x0, t)`` returns per-example losses.

    ``points`` and ``encoder_points`` are the pixels the decoder's loss and the encoder see per
    image (``None``: every pixel; the paper draws an independent quarter for each);
    ``inv_snr`` is the Wiener regulariser :meth:`decode` uses to display samples.
    """

    def __init__(self, encoder: SparseEncoder, decoder: SparseUNet, process: MollifiedDiffusion,
                 target: str = "mollified_epsilon", loss_type: str = "mse", points: Optional[int] = None,
                 subset: str = "uniform", kl_weight: float = 0.0, inv_snr: float = 0.05,
                 encoder_points: Optional[int] = None):
        super().__init__()
        self.encoder, self.decoder, self.process = encoder, decoder, process
        self.target, self.loss_type = target, loss_type
        self.points, self.encoder_points, self.subset, self.kl_weight = points, encoder_points, subset, kl_weight
        self.inv_snr = inv_snr

    def decode(self, z: torch.Tensor, size: int, steps: int, sampler: str = "ddim",
               generator: Optional[torch.Generator] = None, noise_size: Optional[int] = None) -> torch.Tensor:
        """Images ``(B, C, size, size)`` in [-1, 1] from ``z``: :func:`decode_latents` with this model's settings."""
        return decode_latents(self.decoder, self.process, z, size, self.decoder.channels, self.target, steps, sampler,
                              inv_snr=self.inv_snr, generator=generator, noise_size=noise_size)

    def _subset(self, x0: torch.Tensor, points: Optional[int]) -> Optional[torch.Tensor]:
        """Flat ids ``(B, points)`` of a fresh random subset, or ``None`` when ``points`` covers every pixel."""
        size = tuple(x0.shape[-2:])
        if points is None or points == size[0] * size[1]:
            return None
        return sample_subset(self.subset, x0.shape[0], size, points, device=x0.device)

    def forward(self, x0: torch.Tensor, t: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-example losses; a subset covering every pixel runs the networks' dense paths (same operators)."""
        size = tuple(x0.shape[-2:])
        index = self._subset(x0, self.points)
        encoder_index = self._subset(x0, self.encoder_points)
        encoding = self.encoder(x0 if encoder_index is None else SparseImage.from_dense(x0, encoder_index))

        def model_fn(values, timesteps):
            if index is None:
                return self.decoder(values, timesteps, encoding.z)
            return self.decoder(SparseImage(values, index, size), timesteps, encoding.z).values

        diffusion = subset_diffusion_loss(self.process, model_fn, x0, t, index, self.target, loss=self.loss_type)
        kl = kl_to_standard_normal(encoding)
        return {"loss": diffusion + self.kl_weight * kl, "diffusion": diffusion, "kl": kl}


def _pixel_count(config: ConfigDict, key: str) -> int:
    """``config.mc_integral.<key>``, checked to be a count of pixels of the ``data.img_size`` grid."""
    value, pixels = config.mc_integral[key], config.data.img_size ** 2
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= pixels:
        raise ValueError(f"mc_integral.{key}={value!r}: expected a pixel count from 1 to data.img_size² = {pixels}")
    return value


def build_autoencoder(config: ConfigDict) -> DiffusionAutoencoder:
    """Stage 1 from a config: encoder, decoder, process and the loss settings."""
    return DiffusionAutoencoder(
        build_encoder(config), build_decoder(config), build_process(config),
        target=config.diffusion.model_mean_type, loss_type=config.diffusion.loss_type,
        points=_pixel_count(config, "q_sample"), subset=config.mc_integral.type, kl_weight=config.model.kld_weight,
        inv_snr=config.diffusion.wiener_inv_snr, encoder_points=_pixel_count(config, "encoder_q_sample"))


def load_autoencoder(config: ConfigDict, device="cpu", flag: str = "config"
                     ) -> Tuple[DiffusionAutoencoder, Path, int]:
    """The EMA weights of the newest stage-1 checkpoint of ``config``'s experiment, in eval mode.

    ``flag`` names the command-line config in the error raised when there is no checkpoint.
    """
    state, path = load_latest_checkpoint(config, flag=flag)
    model = build_autoencoder(config)
    model.load_state_dict(state["ema"]["model"])
    return model.to(device).eval(), path, state["step"]


def image_batches(dataset, config: ConfigDict, accelerator) -> Callable[[int], Iterator[torch.Tensor]]:
    """Training batches from ``start_step`` on, on the device, randomly flipped in the main process.

    The flip draws from the global RNG (restored on resume), not in loader workers, so a resumed
    run sees the same flips as an uninterrupted one.
    """

    def batches(start_step: int) -> Iterator[torch.Tensor]:
        loader = dataset_batches(dataset, config.train.batch_size, config.run.seed, start_step,
                                 accelerator.process_index, accelerator.num_processes, config.data.num_workers)
        for x in loader:
            if config.data.random_flip:
                flip = (torch.rand(x.shape[0]) < 0.5).view(-1, 1, 1, 1)
                x = torch.where(flip, x.flip(-1), x)
            yield x.to(accelerator.device, non_blocking=True)

    return batches


def reconstruction_hook(dataset, config: ConfigDict, run_dir: Path, device) -> Callable:
    """Pictures (and numbers) of EMA reconstructions at the training resolution and at 2×.

    Writes ``samples/recon_<step>.png`` (rows: data, decoded at 1×, decoded at 2×) and a JSON of
    per-resolution mean squared errors; at 2× the reference is the data set's exact rendering
    when it has one (the procedural shapes), else the bilinear upsampling of the data.
    """
    count = min(config.train.sample_size, len(dataset))
    images = torch.stack([dataset[i] for i in range(count)]).to(device)
    size = config.data.img_size
    references = {1: images, 2: reference_images(dataset, count, 2 * size, images).to(device)}

    def visualize(step: int, ema_model: DiffusionAutoencoder) -> Dict[str, float]:
        z = ema_model.encoder(images).z
        rows, metrics = [("data", images)], {}
        for factor, reference in references.items():
            generator = torch.Generator(device=device).manual_seed(config.run.seed)
            decoded = ema_model.decode(z, factor * size, config.train.plot_sampling_steps, generator=generator)
            rows.append((f"{factor}x", decoded))
            metrics[f"recon_mse_{factor}x"] = float((decoded - reference).square().mean())
        out = run_dir / "samples" / f"recon_{step:08d}"
        save_resolution_comparison(rows, out.with_suffix(".png"))
        atomic_write_text(json.dumps({"step": step, **metrics}, indent=2) + "\n", out.with_suffix(".json"))
        return metrics

    return visualize


def reference_images(dataset, count: int, size: int, images: torch.Tensor) -> torch.Tensor:
    """The first ``count`` data images at ``size``: exact renderings when the data set can make them
    (procedural shapes), else the bilinear resampling of ``images``."""
    render = getattr(dataset, "render_sample", None)
    if render is not None:
        return torch.stack([render(i, size) for i in range(count)])
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)


def train_autoencoder(config: ConfigDict) -> Path:
    """Train (or resume) stage 1 of ``config``'s experiment; returns the run directory."""
    accelerator = make_accelerator(config.train.mixed_precision)
    set_seed(config.run.seed)
    run_dir = run_directory(config)
    dataset = build_unflipped_dataset(config)
    trainer = Trainer(build_autoencoder(config), config, run_dir, accelerator, build_timestep_sampler(config))
    if trainer.resume():
        tqdm.write(f"resumed {run_dir} at step {trainer.step}")
    if accelerator.is_main_process:
        trainer.hooks = Hooks(visualize=reconstruction_hook(dataset, config, run_dir, accelerator.device))
        write_run_config(config, run_dir)
    with RunLogger(run_dir, is_main=accelerator.is_main_process, tensorboard=config.run.tensorboard,
                   wandb_project=config.run.wandb_project or None, config=config.to_dict()) as logger:
        trainer.fit(image_batches(dataset, config, accelerator), logger)
    return run_dir
