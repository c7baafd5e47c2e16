"""Generation from trained runs: unconditional samples and reconstructions at any resolution.

Outputs go to a fresh directory per call (``<run>/<name>``, or ``<name>_1``, ``_2``, … when that
exists), so an earlier run is never overwritten; every call writes individual PNGs, a grid and
a JSON describing what was generated.  Everything is seeded and batched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from infdiff.pipeline.autoencoder import load_autoencoder, reference_images
from infdiff.pipeline.build import build_unflipped_dataset
from infdiff.pipeline.latent import load_latent_model
from infdiff.pipeline.runs import run_directory
from infdiff.pipeline.sampling import sample_latents
from infdiff.train.checkpoint import atomic_write_text
from infdiff.train.images import save_image_grid, save_images, save_resolution_comparison


class Generated(NamedTuple):
    """Where the outputs were written, and the images themselves ``(B, C, H, W)`` in [-1, 1]."""

    directory: Path
    images: torch.Tensor


def fresh_directory(base: Path) -> Path:
    """``base`` if it does not exist yet, else the first free ``base_1``, ``base_2``, …"""
    candidate, n = base, 0
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    candidate.mkdir(parents=True)
    return candidate


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generate_samples(latent_config: ConfigDict, decoder_config: ConfigDict, num_samples: int = 16,
                     sample_img_size: Optional[int] = None, sampling_steps: int = 100, batch_size: int = 16,
                     seed: int = 0, sampler: str = "ddim", out_dir: Optional[Path] = None,
                     noise_size: Optional[int] = None) -> Generated:
    """Sample latents and decode them at ``sample_img_size`` (default: the training size).

    Latent draws depend only on ``seed`` (not on the size), so calls at several sizes with one
    seed decode the same latents; with one ``noise_size`` (a common multiple of the sizes) they
    also decode the same noise function, so the calls show one sample at several resolutions.
    """
    device = default_device()
    autoencoder, checkpoint, step = load_autoencoder(decoder_config, device)
    latent_model, mean, std = load_latent_model(latent_config)
    latent_model, mean, std = latent_model.to(device), mean.to(device), std.to(device)
    size = sample_img_size or decoder_config.data.img_size
    out = fresh_directory(Path(out_dir) if out_dir else
                          run_directory(latent_config) / f"samples_{size}px_{sampling_steps}steps")
    images = []
    for start in tqdm(range(0, num_samples, batch_size), desc=f"sampling {size}px"):
        count = min(batch_size, num_samples - start)
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + start)
        z = sample_latents(latent_model.net, latent_model.process, count, mean.shape[-1], mean, std,
                           latent_model.target, latent_config.diffusion.sampling_steps, generator=generator)
        batch = autoencoder.decode(z, size, sampling_steps, sampler, generator, noise_size).cpu()
        save_images(batch, out, prefix="sample_", start_index=start)
        images.append(batch)
    images = torch.cat(images)
    save_image_grid(images, out / "grid.png")
    info = dict(kind="samples", num_samples=num_samples, img_size=size, train_img_size=decoder_config.data.img_size,
                sampling_steps=sampling_steps, sampler=sampler, seed=seed, noise_size=noise_size,
                decoder_checkpoint=str(checkpoint), decoder_step=step)
    atomic_write_text(json.dumps(info, indent=2) + "\n", out / "samples.json")
    return Generated(out, images)


def generate_recons(decoder_config: ConfigDict, sizes: Sequence[int], num_images: int = 8, sampling_steps: int = 100,
                    seed: int = 0, sampler: str = "ddim", out_dir: Optional[Path] = None,
                    noise_size: Optional[int] = None) -> Path:
    """Encode the first ``num_images`` data images and decode them at every size in ``sizes``.

    Each size starts from the same seed; ``noise_size`` (a common multiple of ``sizes``) makes
    every size decode the same noise function (see :func:`generate_samples`).

    ``recons.json`` holds the mean squared error at each size against the data set's exact
    rendering at that size when it has one (procedural shapes: true super-resolution error),
    else against the bilinearly resampled data image.
    """
    device = default_device()
    autoencoder, checkpoint, step = load_autoencoder(decoder_config, device)
    dataset = build_unflipped_dataset(decoder_config)
    images = torch.stack([dataset[i] for i in range(min(num_images, len(dataset)))]).to(device)
    out = fresh_directory(Path(out_dir) if out_dir else run_directory(decoder_config) / "recons")
    with torch.no_grad():
        z = autoencoder.encoder(images).z
    rows, errors = [("data", images.cpu())], {}
    for size in tqdm(sizes, desc="decoding"):
        generator = torch.Generator(device=device).manual_seed(seed)
        decoded = autoencoder.decode(z, size, sampling_steps, sampler, generator, noise_size).cpu()
        save_images(decoded, out, prefix=f"recon_{size}px_")
        rows.append((f"{size}px", decoded))
        reference = reference_images(dataset, len(images), size, images).cpu()
        errors[f"mse_{size}px"] = float((decoded - reference).square().mean())
    save_resolution_comparison(rows, out / "grid.png")
    info = dict(kind="reconstructions", sizes=list(sizes), num_images=len(images), sampling_steps=sampling_steps,
                sampler=sampler, seed=seed, noise_size=noise_size, decoder_checkpoint=str(checkpoint),
                decoder_step=step, **errors)
    atomic_write_text(json.dumps(info, indent=2) + "\n", out / "recons.json")
    return out
