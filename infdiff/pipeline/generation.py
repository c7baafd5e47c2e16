"""Generation from trained runs: unconditional samples and reconstructions at any resolution.

Outputs go to a fresh directory per call (``<run>/<name>``, or ``<name>_1``, ``_2``, … when that
exists), so an earlier run is never overwritten; every call writes individual PNGs, a grid and
a JSON describing what was generated.  Everything is seeded and batched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from infdiff.data import build_dataset, dataset_entry
from infdiff.io import atomic_write_text
from infdiff.pipeline.autoencoder import TrainedAutoencoder, load_autoencoder, reference_images
from infdiff.pipeline.build import SamplerSpec
from infdiff.pipeline.latent import TrainedLatentModel, load_latent_model
from infdiff.pipeline.memory import check_decoding_fits
from infdiff.pipeline.schema import check_sampling_options
from infdiff.pipeline.runs import run_directory
from infdiff.train.config import ConfigError
from infdiff.train.images import save_image_grid, save_images, save_resolution_comparison
from infdiff.train.rng import mixed_seed


GRID = 64  # samples shown in grid.png


class Generated(NamedTuple):
    """Where the outputs were written, and the images themselves ``(B, C, H, W)`` in [-1, 1]."""

    directory: Path
    images: torch.Tensor


def fresh_directory(base: Path) -> Path:
    """``base`` if it does not exist yet, else the first free ``base_1``, ``base_2``, …

    A ``base`` (or a folder above it) that is an existing file is refused rather than written beside.
    """
    for path in (base, *base.parents):
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"--out_dir {str(base)!r}: {str(path)!r} is an existing file; expected a folder (created if missing)"
            )
    candidate, n = base, 0
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    candidate.mkdir(parents=True)
    return candidate


@contextlib.contextmanager
def removed_if_left_empty(directory: Path, is_main: bool = True) -> Iterator[Path]:
    """On a failure inside it (an error, Ctrl-C), the main process removes ``directory`` if nothing was written
    into it yet, so a failed call leaves no empty output folder; what was written is kept."""
    try:
        yield directory
    except BaseException:
        if is_main and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        raise


def check_noise_grid(noise_size: Optional[int], sizes: Sequence[int]) -> None:
    """A ``noise_size`` must be a multiple of every size decoded (the noise is averaged down to each)."""
    if noise_size is not None and any(noise_size % size for size in sizes):
        raise ConfigError(
            f"--noise_size {noise_size} is not a multiple of the size(s) {', '.join(map(str, sizes))}; "
            f"use a common multiple, e.g. {math.lcm(*sizes)}"
        )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def decoder_sampler(
    decoder_config: ConfigDict,
    sampler: Optional[str] = None,
    steps: Optional[int] = None,
    variance: Optional[str] = None,
) -> SamplerSpec:
    """The decoder's sampler: ``sampler`` (default: the stage-1 config's) over ``steps`` steps, with DDPM's
    posterior ``variance`` (``fixed_small`` / ``fixed_large``) when given."""
    options = {} if variance is None else {"variance": variance}
    return SamplerSpec.from_section(decoder_config.sampler, "sampler", name=sampler, steps=steps, options=options)


def latent_sampler(
    latent_config: ConfigDict, sampler: Optional[str] = None, steps: Optional[int] = None
) -> SamplerSpec:
    """The latent DDPM's sampler: the stage-2 config's (the paper's: ancestral DDPM over all 1000 steps with
    the fixed-large variance) unless ``sampler`` / ``steps`` replace it."""
    return SamplerSpec.from_section(latent_config.sampler, "sampler", name=sampler, steps=steps)


def shards(count: int, batch_size: int, rank: int = 0, world_size: int = 1) -> List[Tuple[int, int]]:
    """``(start, size)`` of the batches of ``count`` items that process ``rank`` of ``world_size`` handles
    (every ``world_size``-th batch): disjoint, and together every batch of a one-process run."""
    return [(start, min(batch_size, count - start)) for start in range(0, count, batch_size)][rank::world_size]


@dataclass(frozen=True)
class SampleSource:
    """Seeded samples of a trained two-stage model: the batch starting at sample ``start`` depends only on
    ``(seed, start)``, so shards drawn by several processes are those of one process.

    ``inv_snr`` replaces the prior's Wiener regulariser when deblurring the decoder's mollified samples
    (∞-Diff scores them deblurred with 0.05).
    """

    decoder: TrainedAutoencoder
    latent: TrainedLatentModel
    size: int
    sampler: SamplerSpec
    seed: int = 0
    noise_size: Optional[int] = None
    inv_snr: Optional[float] = None

    @classmethod
    def load(
        cls,
        latent_config: ConfigDict,
        decoder_config: ConfigDict,
        size: Optional[int] = None,
        sampler: Optional[SamplerSpec] = None,
        latent: Optional[SamplerSpec] = None,
        **settings,
    ) -> "SampleSource":
        device = default_device()
        decoder = load_autoencoder(decoder_config, device, flag="decoder_config")
        trained = load_latent_model(latent_config).to(device)
        if latent is not None:
            trained = dataclasses.replace(trained, sampler=latent)
        return cls(
            decoder,
            trained,
            size or decoder_config.data.img_size,
            sampler or decoder_sampler(decoder_config),
            **settings,
        )

    def batch(self, start: int, count: int) -> torch.Tensor:
        """Samples ``start .. start + count - 1`` ``(count, C, size, size)`` in [-1, 1], on the CPU."""
        generator = torch.Generator(device=self.latent.mean.device).manual_seed(mixed_seed(self.seed, start))
        z = self.latent.sample(count, generator)
        return self.decoder.decode(z, self.size, self.sampler, generator, self.noise_size, self.inv_snr).cpu()

    def settings(self) -> dict:
        """What the samples depend on, for the JSON written beside them."""
        return dict(
            img_size=self.size,
            sampling_steps=self.sampler.steps,
            sampler=self.sampler.name,
            sampler_options=self.sampler.options,
            latent_sampler=self.latent.sampler.name,
            latent_sampling_steps=self.latent.sampler.steps,
            latent_sampler_options=self.latent.sampler.options,
            seed=self.seed,
            noise_size=self.noise_size,
            inv_snr=self.inv_snr,
            decoder_checkpoint=str(self.decoder.checkpoint),
            decoder_step=self.decoder.step,
        )


def shared_directory(base: Path, state: PartialState) -> Path:
    """A :func:`fresh_directory` made by the main process and named to every process."""
    name = [fresh_directory(base) if state.is_main_process else None]
    if state.num_processes > 1:
        name = broadcast_object_list(name)
    return Path(name[0])


def gathered(parts: Dict[int, object], state: PartialState) -> Dict[int, object]:
    """Every process's ``{shard start: value}`` merged (each process holds disjoint shards)."""
    if state.num_processes == 1:
        return parts
    merged: Dict[int, object] = {}
    for part in gather_object([parts]):
        merged.update(part)
    return merged


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
    variance: Optional[str] = None,
    latent: Optional[SamplerSpec] = None,
    inv_snr: Optional[float] = None,
) -> Generated:
    """Sample latents and decode them at ``sample_img_size`` (default: the training size).

    Latent draws depend only on ``seed`` (not on the size), so calls at several sizes with one
    seed decode the same latents; with one ``noise_size`` (a common multiple of the sizes) they
    also decode the same noise function, so the calls show one sample at several resolutions.
    ``sampler`` names the decoder's sampler (default: ``decoder_config.sampler.name``), ``variance``
    DDPM's posterior variance, ``latent`` replaces the latent sampler.  Under ``accelerate launch`` /
    ``torchrun`` each process draws its own shard of the batches (:func:`shards`); the samples are
    those of a one-process run, and the returned images are those of this process's shards.
    """
    check_sampling_options(
        num_samples=num_samples,
        batch_size=batch_size,
        sample_img_size=sample_img_size,
        sampling_steps=sampling_steps,
        noise_size=noise_size,
        seed=seed,
        inv_snr=inv_snr,
    )
    state = PartialState(cpu=not torch.cuda.is_available())
    spec = decoder_sampler(decoder_config, sampler, sampling_steps, variance)
    source = SampleSource.load(
        latent_config, decoder_config, sample_img_size, spec, latent, seed=seed, noise_size=noise_size, inv_snr=inv_snr
    )
    check_noise_grid(noise_size, [source.size])
    check_decoding_fits(source.decoder, source.size, min(batch_size, num_samples), noise_size, default_device())
    out = shared_directory(
        Path(out_dir) if out_dir else run_directory(latent_config) / f"samples_{source.size}px_{sampling_steps}steps",
        state,
    )
    mine = {}
    with removed_if_left_empty(out, state.is_main_process):
        for start, count in tqdm(
            shards(num_samples, batch_size, state.process_index, state.num_processes),
            desc=f"sampling {source.size}px",
            disable=None if state.is_main_process else True,
        ):
            mine[start] = source.batch(start, count)
            save_images(mine[start], out, prefix="sample_", start_index=start)
    first = gathered({start: batch[:GRID] for start, batch in mine.items() if start < GRID}, state)
    if state.is_main_process:
        save_image_grid(torch.cat([first[start] for start in sorted(first)])[:GRID], out / "grid.png")
        info = dict(
            kind="samples",
            num_samples=num_samples,
            train_img_size=decoder_config.data.img_size,
            processes=state.num_processes,
            **source.settings(),
        )
        atomic_write_text(json.dumps(info, indent=2) + "\n", out / "samples.json")
    state.wait_for_everyone()
    return Generated(out, torch.cat([mine[start] for start in sorted(mine)]))


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
    variance: Optional[str] = None,
) -> Path:
    """Encode the first ``num_images`` images of ``split`` and decode them at every size in ``sizes``.

    Each size starts from the same seed; ``noise_size`` (a common multiple of ``sizes``) makes
    every size decode the same noise function (see :func:`generate_samples`).  ``split`` defaults
    to the held-out split where the data set has one (:func:`held_out`); ``variance`` is DDPM's posterior
    variance.

    ``recons.json`` holds the mean squared error at each size against the data set's exact
    rendering at that size when it has one (procedural shapes: true super-resolution error),
    else against the data image resampled bilinearly to that size (``"reference"`` says which).
    """
    check_sampling_options(
        sizes=tuple(sizes), num_images=num_images, sampling_steps=sampling_steps, noise_size=noise_size, seed=seed
    )
    check_noise_grid(noise_size, sizes)
    device = default_device()
    decoder = load_autoencoder(decoder_config, device, flag="decoder_config")
    spec = decoder_sampler(decoder_config, sampler, sampling_steps, variance)
    for size in sizes:
        check_decoding_fits(decoder, size, num_images, noise_size, device)
    data = held_out(decoder_config.data, split)
    dataset = build_dataset(data)
    images = torch.stack([dataset[i] for i in range(min(num_images, len(dataset)))]).to(device)
    out = fresh_directory(Path(out_dir) if out_dir else run_directory(decoder_config) / "recons")
    rows, errors = [("data", images.cpu())], {}
    with removed_if_left_empty(out):
        z = decoder.encode(images)
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
        sampler_options=spec.options,
        seed=seed,
        noise_size=noise_size,
        reference="exact rendering" if exact else "bilinear resampling of the data image",
        decoder_checkpoint=str(decoder.checkpoint),
        decoder_step=decoder.step,
        **errors,
    )
    atomic_write_text(json.dumps(info, indent=2) + "\n", out / "recons.json")
    return out
