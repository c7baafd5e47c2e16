"""Stage 2 of ∞-Diff: a DDPM over the autoencoder's latents (DiffAE's latent model).

The data set is encoded once with the EMA encoder of the newest stage-1 checkpoint (cached in
the run directory and re-encoded when that checkpoint changes), the latents are normalised per
dimension, ``z̃ = (z − μ) / σ``, a held-out fraction is kept for a test loss, and an MLP with
skips learns to denoise ``z̃`` (Preechakul et al. 2022; Bond-Taylor & Willcocks 2024, §4.2) with
the ``loss`` and ``process`` of the latent config, trained by the shared runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from ml_collections import ConfigDict
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from infdiff.data import build_dataset, random_flip
from infdiff.diffusion import TIME_DISTRIBUTIONS, DiffusionProcess, denoising_loss
from infdiff.io import UnsafeFileError, atomic_torch_save, atomic_write_text, torch_load
from infdiff.pipeline.autoencoder import TrainedAutoencoder, load_autoencoder
from infdiff.pipeline.build import SamplerSpec, build_loss, build_model, build_process
from infdiff.pipeline.schema import validate_config
from infdiff.pipeline.runs import check_trained_with, load_latest_checkpoint, run_directory
from infdiff.pipeline.sampling import sample_latents
from infdiff.pipeline.stage import Stage, run_stage
from infdiff.train.batches import check_batches, tensor_batches
from infdiff.train.images import save_image_grid
from infdiff.train.loop import Hooks
from infdiff.train.settings import TrainSettings


def build_latent_model(config: ConfigDict, z_dim: int) -> nn.Module:
    """Stage 2's network (``config.model``) over latents of width ``z_dim``."""
    return build_model(config, z_dim=z_dim)


@dataclass(frozen=True)
class TrainedLatentModel:
    """A latent network with its process, target and sampler, and the latent statistics it de-normalises with."""

    model: nn.Module
    process: DiffusionProcess
    target: str
    sampler: SamplerSpec
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_config(
        cls, config: ConfigDict, model: nn.Module, mean: torch.Tensor, std: torch.Tensor
    ) -> "TrainedLatentModel":
        return cls(
            model, build_process(config), config.loss.target, SamplerSpec.from_section(config.sampler), mean, std
        )

    def to(self, device) -> "TrainedLatentModel":
        return TrainedLatentModel(
            self.model.to(device), self.process, self.target, self.sampler, self.mean.to(device), self.std.to(device)
        )

    def sample(self, count: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``count`` de-normalised latents."""
        return sample_latents(
            self.model, self.process, self.target, self.sampler, count, self.mean, self.std, generator
        )


def _checkpoint_identity(path: Path) -> dict:
    stat = path.stat()
    return {"checkpoint": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@torch.no_grad()
def encode_dataset(
    autoencoder: TrainedAutoencoder, dataset, batch_size: int, num_workers: int, device, mirrored: bool = False
) -> torch.Tensor:
    """Deterministic latents ``(N, z_dim)`` of every image (the mean for a Gaussian encoder); with ``mirrored``
    also those of every image flipped left-right, after them (``(2N, z_dim)``)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    batches = list(tqdm(loader, desc="encoding", disable=None))
    codes = [autoencoder.encode(x.to(device)).float().cpu() for x in batches]
    if mirrored:
        codes += [autoencoder.encode(x.flip(-1).to(device)).float().cpu() for x in batches]
    return torch.cat(codes)


def mirrored_latents(latent_config: ConfigDict, decoder_config: ConfigDict) -> bool:
    """Whether stage 2 also learns the codes of mirror images: ``data.flip_latents`` and stage 1 flipped."""
    return bool(latent_config.data.flip_latents) and random_flip(decoder_config.data)


def cached_latents(
    latent_config: ConfigDict, decoder_config: ConfigDict, autoencoder: TrainedAutoencoder, device
) -> torch.Tensor:
    """Latents of the decoder config's data set, read from ``<run>/latents.pt`` unless that cache was
    written with another checkpoint than ``autoencoder``'s or without the same mirrored copies.

    As in the ∞-Diff code, when stage 1 trained on random flips and ``data.flip_latents`` is set, the
    codes of every image's mirror image are included too.
    """
    cache = run_directory(latent_config) / "latents.pt"
    mirrored = mirrored_latents(latent_config, decoder_config)
    identity = dict(_checkpoint_identity(autoencoder.checkpoint), mirrored=mirrored)
    if cache.exists():
        stored = _read_cache(cache)
        if isinstance(stored, dict) and stored.get("identity") == identity:
            return stored["latents"]
        if stored is not None:
            tqdm.write(f"{cache} was encoded from another encoder checkpoint or mirroring; encoding again")
    dataset = build_dataset(decoder_config.data)
    latents = encode_dataset(
        autoencoder, dataset, latent_config.data.encode_batch_size, latent_config.data.num_workers, device, mirrored
    )
    atomic_torch_save({"identity": identity, "latents": latents}, cache)
    return latents


def _read_cache(cache: Path) -> Any:
    """The stored latent cache, or ``None`` (with a message) when it is unreadable or refused as unsafe."""
    try:
        return torch_load(cache)
    except UnsafeFileError as error:
        tqdm.write(f"refusing {error}; encoding again")
    except Exception as error:  # a truncated or corrupt file raises many different types
        tqdm.write(f"{cache} is unreadable ({type(error).__name__}: {error}); encoding again")
    return None


def split_latents(
    latents: torch.Tensor, test_fraction: float, seed: int, mirrored: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split into (train, test) by image: the test part holds ``round(N · fraction)`` of the
    ``N`` images (with ``mirrored``, the second half of ``latents`` is the first half's mirror images, and an
    image and its mirror image fall on the same side)."""
    images = len(latents) // 2 if mirrored else len(latents)
    order = torch.randperm(images, generator=torch.Generator().manual_seed(seed))
    if mirrored:
        order = torch.stack([order, order + images], dim=1).flatten()
    n_test = round(images * test_fraction) * (2 if mirrored else 1)
    if len(latents) - n_test < 1:
        raise ValueError(f"data.test_fraction={test_fraction} leaves no training latents out of {len(latents)}")
    return latents[order[n_test:]], latents[order[:n_test]]


def test_loss_hook(test: torch.Tensor, config: ConfigDict, device):
    """Held-out loss of the EMA model at a fixed set of uniformly drawn times and noises."""
    process = build_process(config)
    generator = torch.Generator()
    times = TIME_DISTRIBUTIONS["uniform"](process)

    @torch.no_grad()
    def evaluate(step: int, ema_model: nn.Module) -> Dict[str, float]:
        if len(test) == 0:
            return {}
        generator.manual_seed(config.run.seed)
        t, _ = times.sample(len(test), generator)
        white = process.prior.white_noise(test.shape, generator)
        loss = denoising_loss(
            process,
            ema_model,
            test.to(device),
            t.to(device),
            white.to(device),
            None,
            config.loss.target,
            config.loss.pointwise,
        )
        return {"test_loss": float(loss.mean())}

    return evaluate


def samples_hook(
    config: ConfigDict, decoder_config: ConfigDict, autoencoder: TrainedAutoencoder, mean, std, run_dir: Path, device
):
    """Grids of images decoded (at the training resolution) from latents the EMA model samples."""
    mean, std = mean.to(device), std.to(device)

    def visualize(step: int, ema_model: nn.Module) -> None:
        generator = torch.Generator(device=device).manual_seed(config.run.seed)
        z = TrainedLatentModel.from_config(config, ema_model, mean, std).sample(config.train.sample_size, generator)
        images = autoencoder.decode(z, decoder_config.data.img_size, generator=generator)
        save_image_grid(images, run_dir / "samples" / f"samples_{step:08d}.png")

    return visualize


def latent_stage(
    config: ConfigDict, accelerator: Accelerator, settings: TrainSettings, run_dir: Path, decoder_config: ConfigDict
) -> Stage:
    """Stage 2's network, loss, batches over the normalised latents, test loss and sample pictures."""
    autoencoder = load_autoencoder(decoder_config, accelerator.device, flag="decoder_config")
    with accelerator.main_process_first():
        latents = cached_latents(config, decoder_config, autoencoder, accelerator.device)
    mirrored = mirrored_latents(config, decoder_config)
    train, test = split_latents(latents, config.data.test_fraction, config.run.seed, mirrored)
    check_batches(len(train), settings.batch_size, accelerator.num_processes, "latents")
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    hooks = Hooks()
    if accelerator.is_main_process:
        hooks = Hooks(
            evaluate=test_loss_hook(test, config, accelerator.device),
            visualize=samples_hook(config, decoder_config, autoencoder, mean, std, run_dir, accelerator.device),
        )
        atomic_write_text(
            json.dumps({"train": len(train), "test": len(test), "z_dim": latents.shape[1]}) + "\n",
            run_dir / "latents.json",
        )

    def batches(start_step: int):
        for z in tensor_batches(
            train,
            settings.batch_size,
            config.run.seed,
            start_step,
            accelerator.process_index,
            accelerator.num_processes,
        ):
            yield z.to(accelerator.device)

    metadata = {"latent_mean": mean, "latent_std": std, "decoder_checkpoint": str(autoencoder.checkpoint)}
    summary = {
        "data": f"{len(train)} + {len(test)} held-out latents of width {latents.shape[1]} from "
        f"{autoencoder.checkpoint} (step {autoencoder.step})"
    }
    set_seed(config.run.seed)  # encoding draws from the global RNG: the run must not depend on whether it ran
    return Stage(
        build_latent_model(config, latents.shape[1]),
        build_loss(config, build_process(config)),
        batches,
        hooks,
        metadata,
        summary,
    )


def train_latent(config: ConfigDict, decoder_config: ConfigDict) -> Path:
    """Train (or resume) stage 2 for the stage-1 run named by ``decoder_config``."""
    return run_stage(config, lambda *args: latent_stage(*args, decoder_config=decoder_config))


def load_latent_model(config: ConfigDict, flag: str = "config") -> TrainedLatentModel:
    """EMA latent model of the newest stage-2 checkpoint, with the latent mean and std, in eval mode."""
    validate_config(config, flag)
    state, path = load_latest_checkpoint(config, flag=flag, script="train_latent_diffusion.py")
    check_trained_with(config, state, path, flag)
    mean, std = state["latent_mean"], state["latent_std"]
    model = build_latent_model(config, mean.shape[-1])
    model.load_state_dict(state["ema"]["model"])
    return TrainedLatentModel.from_config(config, model.eval(), mean, std)
