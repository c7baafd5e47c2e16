"""Stage 2 of ∞-Diff: a DDPM over the autoencoder's latents (DiffAE's latent model).

The data set is encoded once with the EMA encoder of the newest stage-1 checkpoint (cached in
the run directory and re-encoded when that checkpoint changes), the latents are normalised per
dimension, ``z̃ = (z − μ) / σ``, a held-out fraction is kept for a test loss, and an MLP with
skips learns to denoise ``z̃`` (Preechakul et al. 2022; Bond-Taylor & Willcocks 2024, §4.2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import torch
from accelerate.utils import set_seed
from ml_collections import ConfigDict
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from infdiff.diffusion import MollifiedDiffusion, subset_diffusion_loss
from infdiff.pipeline.autoencoder import load_autoencoder
from infdiff.pipeline.build import (build_latent_model, build_latent_process, build_timestep_sampler,
                                     build_unflipped_dataset)
from infdiff.pipeline.runs import load_latest_checkpoint, run_directory, write_run_config
from infdiff.pipeline.sampling import sample_latents
from infdiff.train.batches import tensor_batches
from infdiff.train.checkpoint import atomic_torch_save, atomic_write_text, torch_load
from infdiff.train.images import save_image_grid
from infdiff.train.loop import Hooks, Trainer, make_accelerator
from infdiff.train.run_logger import RunLogger


class LatentDiffusion(nn.Module):
    """``forward(z0, t)``: per-example DDPM loss of the latent network on normalised latents."""

    def __init__(self, net: nn.Module, process: MollifiedDiffusion, target: str = "epsilon", loss_type: str = "l1"):
        super().__init__()
        self.net, self.process, self.target, self.loss_type = net, process, target, loss_type

    def forward(self, z0: torch.Tensor, t: torch.Tensor) -> Dict[str, torch.Tensor]:
        loss = subset_diffusion_loss(self.process, self.net, z0, t, None, self.target, loss=self.loss_type)
        return {"loss": loss, "diffusion": loss}


def build_latent_diffusion(config: ConfigDict, z_dim: int) -> LatentDiffusion:
    return LatentDiffusion(build_latent_model(config, z_dim), build_latent_process(config),
                           config.diffusion.model_mean_type, config.diffusion.loss_type)


def _checkpoint_identity(path: Path) -> dict:
    stat = path.stat()
    return {"checkpoint": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@torch.no_grad()
def encode_dataset(encoder: nn.Module, dataset, batch_size: int, num_workers: int, device) -> torch.Tensor:
    """Deterministic latents ``(N, z_dim)`` of every image (the mean for a Gaussian encoder)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    codes = [encoder(x.to(device), sample=False).mean.float().cpu() for x in tqdm(loader, desc="encoding")]
    return torch.cat(codes)


def cached_latents(latent_config: ConfigDict, decoder_config: ConfigDict, encoder: nn.Module, checkpoint: Path,
                   device) -> torch.Tensor:
    """Latents of the decoder config's data set by ``encoder`` (loaded from ``checkpoint``), read from
    ``<run>/latents.pt`` unless that cache was written with another checkpoint."""
    cache = run_directory(latent_config) / "latents.pt"
    identity = _checkpoint_identity(checkpoint)
    if cache.exists():
        stored = torch_load(cache)
        if stored.get("identity") == identity:
            return stored["latents"]
        tqdm.write(f"{cache} was encoded with another encoder checkpoint; encoding again")
    dataset = build_unflipped_dataset(decoder_config)
    latents = encode_dataset(encoder, dataset, latent_config.data.encode_batch_size,
                             latent_config.data.num_workers, device)
    atomic_torch_save({"identity": identity, "latents": latents}, cache)
    return latents


def split_latents(latents: torch.Tensor, test_fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split into (train, test); the test part has ``round(N · fraction)`` rows."""
    order = torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(latents) * test_fraction)
    if len(latents) - n_test < 1:
        raise ValueError(f"data.test_fraction={test_fraction} leaves no training latents out of {len(latents)}")
    return latents[order[n_test:]], latents[order[:n_test]]


def test_loss_hook(test: torch.Tensor, config: ConfigDict, device):
    """Held-out loss of the EMA model over a fixed set of timesteps and noises."""

    @torch.no_grad()
    def evaluate(step: int, ema_model: LatentDiffusion) -> Dict[str, float]:
        if len(test) == 0:
            return {}
        generator = torch.Generator().manual_seed(config.run.seed)
        t = torch.randint(0, config.diffusion.steps, (len(test),), generator=generator).to(device)
        noise = torch.randn(test.shape, generator=generator).to(device)
        loss = subset_diffusion_loss(ema_model.process, ema_model.net, test.to(device), t, None,
                                     ema_model.target, noise, ema_model.loss_type)
        return {"test_loss": float(loss.mean())}

    return evaluate


def samples_hook(config: ConfigDict, decoder_config: ConfigDict, autoencoder: nn.Module, stats, run_dir: Path,
                 device):
    """Grids of images decoded (at the training resolution) from latents the EMA model samples."""
    mean, std = (s.to(device) for s in stats)

    def visualize(step: int, ema_model: LatentDiffusion) -> None:
        generator = torch.Generator(device=device).manual_seed(config.run.seed)
        z = sample_latents(ema_model.net, ema_model.process, config.train.sample_size, mean.shape[-1], mean, std,
                           ema_model.target, config.diffusion.sampling_steps, generator=generator)
        images = autoencoder.decode(z, decoder_config.data.img_size, decoder_config.train.plot_sampling_steps,
                                    generator=generator)
        save_image_grid(images, run_dir / "samples" / f"samples_{step:08d}.png")

    return visualize


def train_latent(config: ConfigDict, decoder_config: ConfigDict) -> Path:
    """Train (or resume) stage 2 for the stage-1 run named by ``decoder_config``."""
    accelerator = make_accelerator(config.train.mixed_precision)
    set_seed(config.run.seed)
    run_dir = run_directory(config)
    autoencoder, checkpoint, _ = load_autoencoder(decoder_config, accelerator.device, flag="decoder_config")
    with accelerator.main_process_first():
        latents = cached_latents(config, decoder_config, autoencoder.encoder, checkpoint, accelerator.device)
    train, test = split_latents(latents, config.data.test_fraction, config.run.seed)
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    train, test = (train - mean) / std, (test - mean) / std

    model = build_latent_diffusion(config, latents.shape[1])
    stats = {"latent_mean": mean, "latent_std": std, "decoder_checkpoint": str(checkpoint)}
    trainer = Trainer(model, config, run_dir, accelerator, build_timestep_sampler(config), Hooks(extra_state=stats))
    if trainer.resume():
        tqdm.write(f"resumed {run_dir} at step {trainer.step}")
    if accelerator.is_main_process:
        trainer.hooks.evaluate = test_loss_hook(test, config, accelerator.device)
        trainer.hooks.visualize = samples_hook(config, decoder_config, autoencoder, (mean, std), run_dir,
                                               accelerator.device)
        write_run_config(config, run_dir)
        atomic_write_text(json.dumps({"train": len(train), "test": len(test), "z_dim": latents.shape[1]}) + "\n",
                          run_dir / "latents.json")

    def batches(start_step: int):
        for z in tensor_batches(train, config.train.batch_size, config.run.seed, start_step,
                                accelerator.process_index, accelerator.num_processes):
            yield z.to(accelerator.device)

    with RunLogger(run_dir, is_main=accelerator.is_main_process, tensorboard=config.run.tensorboard,
                   wandb_project=config.run.wandb_project or None, config=config.to_dict()) as logger:
        trainer.fit(batches, logger)
    return run_dir


def load_latent_model(config: ConfigDict) -> Tuple[LatentDiffusion, torch.Tensor, torch.Tensor]:
    """EMA latent model of the newest stage-2 checkpoint, with the latent mean and std."""
    state, _ = load_latest_checkpoint(config, flag="config", script="train_latent_diffusion.py")
    mean, std = state["latent_mean"], state["latent_std"]
    model = build_latent_diffusion(config, mean.shape[-1])
    model.load_state_dict(state["ema"]["model"])
    return model.eval(), mean, std
