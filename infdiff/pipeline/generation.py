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

from infdiff.data import build_dataset, dataset_entry
from infdiff.io import atomic_write_text
from infdiff.pipeline.autoencoder import load_autoencoder, reference_images
from infdiff.pipeline.build import SamplerSpec
from infdiff.pipeline.latent import load_latent_model
from infdiff.pipeline.runs import run_directory
from infdiff.train.config import ConfigError
from infdiff.train.images import save_image_grid, save_images, save_resolution_comparison
from infdiff.train.rng import mixed_seed


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


def decoder_sampler(decoder_config: ConfigDict, sampler: Optional[str], steps: int) -> SamplerSpec:
    """The decoder's sampler: ``sampler`` (default: the stage-1 config's) over ``steps`` steps."""
    return SamplerSpec.from_section(decoder_config.sampler, "sampler", name=sampler, steps=steps)


def generate_samples(
    latent_config: ConfigDict,
    decoder_config: ConfigDict,
    num_samples: int = 16,
    sample_img_size: Optional[int] = None,
    sampling_steps: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    sampler: Optional[str] = None,
    out_dir: Optional[Path] = None,
    noise_size: Optional[int] = None,
) -> Generated:
    """Sample latents and decode them at ``sample_img_size`` (default: the training size).

    Latent draws depend only on ``seed`` (not on the size), so calls at several sizes with one
    seed decode the same latents; with one ``noise_size`` (a common multiple of the sizes) they
    also decode the same noise function, so the calls show one sample at several resolutions.
    ``sampler`` names the decoder's sampler (default: ``decoder_config.sampler.name``).
    """
    device = default_device()
    decoder = load_autoencoder(decoder_config, device, flag="decoder_config")
    latent = load_latent_model(latent_config).to(device)
    spec = decoder_sampler(decoder_config, sampler, sampling_steps)
    size = sample_img_size or decoder_config.data.img_size
    out = fresh_directory(
        Path(out_dir) if out_dir else run_directory(latent_config) / f"samples_{size}px_{sampling_steps}steps"
    )
    images = []
    for start in tqdm(range(0, num_samples, batch_size), desc=f"sampling {size}px", disable=None):
        count = min(batch_size, num_samples - start)
        generator = torch.Generator(device=device).manual_seed(mixed_seed(seed, start))
        batch = decoder.decode(latent.sample(count, generator), size, spec, generator, noise_size).cpu()
        save_images(batch, out, prefix="sample_", start_index=start)
        images.append(batch)
    images = torch.cat(images)
    save_image_grid(images, out / "grid.png")
    info = dict(
        kind="samples",
        num_samples=num_samples,
        img_size=size,
        train_img_size=decoder_config.data.img_size,
        sampling_steps=sampling_steps,
        sampler=spec.name,
        latent_sampler=latent.sampler.name,
        latent_sampling_steps=latent.sampler.steps,
        seed=seed,
        noise_size=noise_size,
        decoder_checkpoint=str(decoder.checkpoint),
        decoder_step=decoder.step,
    )
    atomic_write_text(json.dumps(info, indent=2) + "\n", out / "samples.json")
    return Generated(out, images)


def held_out(data: ConfigDict, split: Optional[str] = None) -> dict:
    """The ``data`` section for ``split``: by default the held-out ``"test"`` split where the data set has one."""
    splits = dataset_entry(data).splits
    if split is None:
        split = "test" if "test" in splits else None
    elif split not in splits:
        raise ConfigError(
            f"--split {split}: the {data.name!r} data set has "
            + (f"the splits {', '.join(splits)}" if splits else "no splits (point data.root_dir at one)")
        )
    return dict(data.to_dict(), **({} if split is None else {"split": split}))


def generate_recons(
    decoder_config: ConfigDict,
    sizes: Sequence[int],
    num_images: int = 8,
    sampling_steps: int = 100,
    seed: int = 0,
    sampler: Optional[str] = None,
    out_dir: Optional[Path] = None,
    noise_size: Optional[int] = None,
    split: Optional[str] = None,
) -> Path:
    """Encode the first ``num_images`` images of ``split`` and decode them at every size in ``sizes``.

    Each size starts from the same seed; ``noise_size`` (a common multiple of ``sizes``) makes
    every size decode the same noise function (see :func:`generate_samples`).  ``split`` defaults
    to the held-out split where the data set has one (:func:`held_out`).

    ``recons.json`` holds the mean squared error at each size against the data set's exact
    rendering at that size when it has one (procedural shapes: true super-resolution error),
    else against the data image resampled bilinearly to that size (``"reference"`` says which).
    """
    device = default_device()
    decoder = load_autoencoder(decoder_config, device, flag="decoder_config")
    spec = decoder_sampler(decoder_config, sampler, sampling_steps)
    data = held_out(decoder_config.data, split)
    dataset = build_dataset(data)
    images = torch.stack([dataset[i] for i in range(min(num_images, len(dataset)))]).to(device)
    out = fresh_directory(Path(out_dir) if out_dir else run_directory(decoder_config) / "recons")
    z = decoder.encode(images)
    rows, errors = [("data", images.cpu())], {}
    for size in tqdm(sizes, desc="decoding", disable=None):
        generator = torch.Generator(device=device).manual_seed(seed)
        decoded = decoder.decode(z, size, spec, generator, noise_size).cpu()
        save_images(decoded, out, prefix=f"recon_{size}px_")
        rows.append((f"{size}px", decoded))
        reference = reference_images(dataset, len(images), size, images).cpu()
        errors[f"mse_{size}px"] = float((decoded - reference).square().mean())
    save_resolution_comparison(rows, out / "grid.png")
    exact = hasattr(dataset, "render_sample")
    info = dict(
        kind="reconstructions",
        sizes=list(sizes),
        num_images=len(images),
        split=data.get("split"),
        sampling_steps=sampling_steps,
        sampler=spec.name,
        seed=seed,
        noise_size=noise_size,
        reference="exact rendering" if exact else "bilinear resampling of the data image",
        decoder_checkpoint=str(decoder.checkpoint),
        decoder_step=decoder.step,
        **errors,
    )
    atomic_write_text(json.dumps(info, indent=2) + "\n", out / "recons.json")
    return out
