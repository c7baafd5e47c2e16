"""Evaluation of a trained function-space score model (``test_sbdm.py``): samples drawn natively at a base size
and at ``upscale×`` it, each scored against the data at its own size.

The protocol of the CNO score operators (the Convolutional-Neural-Operator fork of Multilevel Diffusion,
Hagemann et al. 2023; notes in REFERENCE.md §2): 1000 samples per size by Euler–Maruyama over 200 steps,
the Riesz MMD (r = 1, the energy distance) on flattened images in [0, 1] against 1000 test images, and the
Vendi score (cosine kernel, order 1) of the flattened [0, 1] pixels; at ``upscale×`` the reference is the test
images resized to ``upscale × input_height``, at 1× those images average-pooled back.  That code makes its
"56²" CNO samples at 28² and upsamples them; here the network always runs on the grid it samples (the
``route`` is ``"native"``), with the run's process, prior and sampler (:func:`~infdiff.pipeline.sbdm.sample_images`).

References are the held-out (test) split where the data set has one, else the training data (the JSON says
which), made at each size by the data set itself (``data.img_size = size``: exact renders of the shapes,
antialiased resizing of stored images), with as many images as samples unless ``reference_count`` is
given.  At 1× with ``upscale > 1`` the samples are also scored against the ``upscale×`` reference average-pooled
(the CNO's 1× reference).  The real-vs-real floor of the Riesz MMD is that of the next as many images of the
same set against the reference, where the set holds them.  Every comparison gets :func:`score_images` (and,
with an extractor, FID, KID, precision/recall and feature Vendi) and the pixel Vendi score.

Samples ``start .. start + n − 1`` of a size are one batch drawn from ``mixed_seed(seed, start)`` (as
:class:`~infdiff.pipeline.generation.SampleSource` does): a seed and batch size give the same samples every
time; another batch size draws other ones.  ``bits_per_dim`` real images at the training size, uniformly
dequantised, also get their bits per dimension under the probability-flow ODE (:mod:`infdiff.sbdm.likelihood`).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from ml_collections import ConfigDict
from torch import nn
from tqdm.auto import tqdm

from infdiff.data import build_dataset, data_channels
from infdiff.diffusion import make_denoiser
from infdiff.io import PathLike, atomic_write_text
from infdiff.metrics import EXTRACTORS, FeatureExtractor, score_images, vendi_score
from infdiff.pipeline.build import SamplerSpec, build_process
from infdiff.pipeline.generation import default_device, fresh_directory, held_out, removed_if_left_empty, shards
from infdiff.pipeline.runs import trained_run
from infdiff.pipeline.sbdm import build_score_network, pictured, sample_images, score_stage
from infdiff.pipeline.schema import check_sampling_options, validate_config
from infdiff.train.config import ConfigError
from infdiff.train.images import save_resolution_comparison
from infdiff.train.rng import mixed_seed

GRID_COLUMNS, GRID_ROWS = 8, 4  # samples_<size>.png: up to 4 rows of samples above as many rows of data
LIKELIHOOD = dict(rtol=1e-5, atol=1e-5, estimator="rademacher")


class ScoreModel(NamedTuple):
    """A trained score network (EMA weights, eval mode, no gradients) with its run's config and checkpoint."""

    model: nn.Module
    config: ConfigDict
    checkpoint: Path
    step: int
    run_dir: Optional[Path]


def load_score_model(checkpoint: PathLike, device="cpu") -> ScoreModel:
    """The EMA score network of a run directory, checkpoint file or experiment name
    (:func:`~infdiff.pipeline.runs.trained_run`)."""
    run = trained_run(checkpoint, script="train_sbdm.py", stage=score_stage.__name__)
    validate_config(run.config, "checkpoint", str(run.checkpoint))
    model = build_score_network(run.config)
    model.load_state_dict(run.state["ema"]["model"])
    return ScoreModel(
        model.requires_grad_(False).to(device).eval(), run.config, run.checkpoint, run.state["step"], run.run_dir
    )


def check_grid(score: ScoreModel, size: int, flags: str, device) -> None:
    """A :class:`ConfigError` naming ``flags`` unless the prior draws and the network runs on a ``size²`` grid
    (one denoising call on one draw)."""
    process = build_process(score.config)
    try:
        with torch.no_grad():
            x = process.terminal_state((1, data_channels(score.config.data), size, size), None, device)
            make_denoiser(score.model, process, score.config.loss.target)(x, torch.full((1,), 0.5, device=device))
    except (ValueError, RuntimeError) as error:
        raise ConfigError(
            f"{flags}: the {score.config.model.arch} score network trained at {score.config.data.img_size}px "
            f"cannot sample a {size}x{size} grid ({error})"
        ) from None


@torch.no_grad()
def native_samples(
    score: ScoreModel, sampler: SamplerSpec, count: int, size: int, batch_size: int, seed: int, device
) -> torch.Tensor:
    """``count`` samples ``(count, C, size, size)`` in [-1, 1] on the CPU, the network run on the ``size²`` grid."""
    batches = []
    for start, n in tqdm(shards(count, batch_size), desc=f"sampling {size}px", disable=None):
        generator = torch.Generator(device=device).manual_seed(mixed_seed(seed, start))
        batches.append(sample_images(score.model, score.config, n, size, generator, device, sampler).cpu())
    return torch.cat(batches)


class Reference(NamedTuple):
    """Real images at one size, the disjoint real set of the MMD floor (or ``None``), and what they are."""

    images: torch.Tensor
    floor: Optional[torch.Tensor]
    described: dict


def data_images(data: dict, size: int, count: int, with_floor: bool = True) -> Reference:
    """The first ``count`` images of ``data`` made at ``size`` (``data.img_size = size``) and, when the set holds
    twice as many and ``with_floor``, the next ``count`` as the floor set."""
    dataset = build_dataset(dict(data, img_size=size))
    count = min(count, len(dataset))
    total = 2 * count if with_floor and len(dataset) >= 2 * count else count
    images = torch.stack([dataset[i] for i in tqdm(range(total), desc=f"reference {size}px", disable=None)])
    split = data.get("split") or "train"
    described = dict(
        dataset=data["name"],
        split=split,
        source="the held-out test split" if split == "test" else "the training data (the data set has no test split)",
        resolution=size,
        count=count,
        floor_count=count if total > count else None,
        made=f"by the data set at data.img_size={size}",
    )
    return Reference(images[:count], images[count:] if total > count else None, described)


def pooled(reference: Reference, factor: int) -> Reference:
    """``reference`` average-pooled ``factor×`` (the CNO protocol's 1× reference)."""
    pool = lambda images: None if images is None else F.avg_pool2d(images, factor)  # noqa: E731
    images = pool(reference.images)
    made = f"the {reference.described['resolution']}px reference average-pooled {factor}x"
    return Reference(images, pool(reference.floor), dict(reference.described, resolution=images.shape[-1], made=made))


def pixel_vendi(images: torch.Tensor) -> float:
    """The Vendi score (cosine kernel, order 1) of the flattened images mapped to [0, 1], as the CNO code takes it."""
    return vendi_score(((images.clamp(-1, 1) + 1) / 2).flatten(1))


def compared(
    samples: torch.Tensor, reference: Reference, extractor: Optional[FeatureExtractor], batch_size: int, seed: int
) -> dict:
    """``{"reference": ..., "metrics": ...}`` of ``samples`` against ``reference`` (module docstring)."""
    metrics = score_images(samples, reference.images, extractor, reference.floor, batch_size=batch_size, seed=seed)
    metrics.update(vendi_pixel=pixel_vendi(samples), reference_vendi_pixel=pixel_vendi(reference.images))
    return {"reference": reference.described, "metrics": metrics}


def save_samples_beside_data(samples: torch.Tensor, data: torch.Tensor, path: Path) -> Path:
    """Up to :data:`GRID_ROWS` rows of samples above as many rows of data images, labelled."""
    shown = min(GRID_COLUMNS * GRID_ROWS, len(samples), len(data))
    columns = min(GRID_COLUMNS, shown)
    shown -= shown % columns
    rows = [
        (label if start == 0 else None, pictured(images[start : start + columns]))
        for label, images in (("samples", samples), ("data", data))
        for start in range(0, shown, columns)
    ]
    return save_resolution_comparison(rows, path)


def dequantised(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images in [-1, 1] as 8-bit values ``u`` dequantised uniformly: ``(u + U[0, 1)) / 128 − 1``
    (the convention of :func:`~infdiff.sbdm.likelihood.bits_per_dim`)."""
    levels = ((images.clamp(-1, 1) + 1) * 127.5).round()
    noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (levels + noise) / 128 - 1


def data_bits_per_dim(score: ScoreModel, data: dict, count: int, batch_size: int, seed: int, device) -> dict:
    """Bits per dimension of the first ``count`` reference images at the training size (dequantised; the
    probe and the dequantisation of the batch at ``start`` drawn from ``mixed_seed(seed, start)``)."""
    from infdiff.sbdm.likelihood import bits_per_dim

    reference = data_images(data, score.config.data.img_size, count, with_floor=False)
    process = build_process(score.config)
    # the network's own score: clamping ŷ_0 to [-1, 1], as sampling does, would make the flow non-smooth
    denoise = make_denoiser(score.model, process, score.config.loss.target, clip=False)
    values = []
    for start, n in tqdm(shards(len(reference.images), batch_size), desc="bits/dim", disable=None):
        generator = torch.Generator(device=device).manual_seed(mixed_seed(seed, start))
        x = dequantised(reference.images[start : start + n].to(device), generator)
        try:
            values.append(bits_per_dim(denoise, process, x, generator=generator, **LIKELIHOOD).cpu())
        except (ValueError, NotImplementedError) as error:  # a process or prior without a likelihood
            raise ConfigError(f"--bits_per_dim {count}: {error}") from None
    bpd = torch.cat(values).double()
    return dict(
        mean=float(bpd.mean()),
        std=float(bpd.std()) if len(bpd) > 1 else 0.0,
        count=len(bpd),
        resolution=score.config.data.img_size,
        reference=reference.described,
        dequantisation="uniform: (u + U[0, 1)) / 128 - 1 for the 8-bit values u",
        **LIKELIHOOD,
    )


def evaluate_score_model(
    checkpoint: PathLike,
    upscale: int = 2,
    input_height: Optional[int] = None,
    num_samples: int = 1000,
    steps: Optional[int] = None,
    sampler: Optional[str] = None,
    batch_size: int = 64,
    seed: int = 0,
    out_dir: Optional[PathLike] = None,
    extractor: Optional[str] = None,
    reference_count: Optional[int] = None,
    bits_per_dim: int = 0,
) -> dict:
    """Sample a trained score model natively at ``input_height`` (default: its training size) and ``upscale×`` it
    and score each size against the data there (module docstring).

    ``checkpoint``: a run directory, checkpoint file or experiment name; ``steps`` / ``sampler`` replace the
    config's sampler settings; ``extractor`` (a name of :data:`~infdiff.metrics.EXTRACTORS`) adds the feature
    metrics; ``reference_count`` real images per size (default ``num_samples``); ``bits_per_dim`` real images
    whose bits per dimension to compute.  Writes ``metrics.json`` and ``samples_<size>.png`` into ``out_dir``
    (default: a fresh ``<run>/evaluation/step<step>_<size>px_x<upscale>_<sampler>_<steps>steps``) and returns the
    dict written.
    """
    check_sampling_options(
        upscale=upscale,
        input_height=input_height,
        num_samples=num_samples,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        reference_count=reference_count,
        bits_per_dim=bits_per_dim,
    )
    device = default_device()
    score = load_score_model(checkpoint, device)
    config = score.config
    spec = SamplerSpec.from_section(config.sampler, "sampler", name=sampler, steps=steps)
    base = input_height or config.data.img_size
    sizes = [base] + ([upscale * base] if upscale > 1 else [])
    for size in sizes:
        check_grid(score, size, f"--input_height {base}" if size == base else f"--upscale {upscale}", device)
    features = EXTRACTORS[extractor]() if extractor else None
    data = held_out(config.data)
    count = reference_count or num_samples
    default_out = (score.run_dir or score.checkpoint.parent) / "evaluation"
    out = fresh_directory(
        Path(out_dir)
        if out_dir
        else default_out / f"step{score.step:08d}_{base}px_x{upscale}_{spec.name}_{spec.steps}steps"
    )
    results = {}
    with removed_if_left_empty(out):
        likelihood = data_bits_per_dim(score, data, bits_per_dim, batch_size, seed, device) if bits_per_dim else None
        references = {size: data_images(data, size, count) for size in sizes}
        for size in sizes:
            samples = native_samples(score, spec, num_samples, size, batch_size, seed, device)
            save_samples_beside_data(samples, references[size].images, out / f"samples_{size}.png")
            entry = dict(
                resolution=size,
                factor=size // base,
                route="native",
                num_samples=len(samples),
                steps=spec.steps,
                sampler=spec.name,
                sampler_options=spec.options,
                process=config.process.name,
                prior=config.prior.name,
                arch=config.model.arch,
                **compared(samples, references[size], features, batch_size, seed),
            )
            if size == base and upscale > 1:
                entry["pooled"] = compared(
                    samples, pooled(references[upscale * base], upscale), features, batch_size, seed
                )
            results[str(size)] = entry
    result = dict(
        kind="score_model_evaluation",
        checkpoint=str(score.checkpoint),
        step=score.step,
        seed=seed,
        batch_size=batch_size,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        device=str(device),
        train_img_size=config.data.img_size,
        input_height=base,
        upscale=upscale,
        extractor=None if features is None else features.name,
        sizes=results,
        bits_per_dim=likelihood,
        out_dir=str(out),
    )
    atomic_write_text(json.dumps(result, indent=2) + "\n", out / "metrics.json")
    return result
