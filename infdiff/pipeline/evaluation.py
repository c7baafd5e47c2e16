"""FID and KID of a trained model's samples, or of a folder of PNGs, against its training set (``calculate_fid.py``).

As ∞-Diff measures it: the reference is the stage-1 data set as trained on (FFHQ: every image of the
folder, train and validation alike) rendered or resized at the *sample* resolution, the samples are
the two-stage model's, deblurred by the Wiener filter, and features come from one extractor
(:data:`infdiff.metrics.EXTRACTORS`; the paper's FID_CLIP is ``clip_vit_b_32``).  Feature statistics
stream in float64 and are computed per batch shard, so under ``accelerate launch`` / ``torchrun`` each
process scores its own shards and the merged statistics are those of a one-process run.  Reference
statistics are cached (:func:`~infdiff.metrics.statistics.cached_features`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from accelerate import PartialState
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from infdiff.data import build_dataset, data_channels, load_image, to_tensor
from infdiff.data.files import list_images, require_path
from infdiff.io import atomic_write_text
from infdiff.metrics import (
    EXTRACTORS,
    ExtractorUnavailable,
    FeatureExtractor,
    FeatureStatistics,
    cached_features,
    features_of,
    fid,
    kid,
    top_octave_energy,
)
from infdiff.pipeline.build import SamplerSpec
from infdiff.pipeline.generation import SampleSource, decoder_sampler, gathered, shards, shared_directory
from infdiff.pipeline.runs import run_directory
from infdiff.train.images import save_images

BatchOf = Callable[[int, int], torch.Tensor]


def shard_features(
    extractor: FeatureExtractor,
    count: int,
    batch_size: int,
    batch_of: BatchOf,
    keep: int,
    desc: str,
    state: PartialState,
    on_batch: Optional[Callable] = None,
) -> Tuple[FeatureStatistics, torch.Tensor]:
    """Statistics of the features of items ``0 .. count - 1`` (``batch_of(start, size)`` makes a batch) and the
    first ``keep`` features, merged over processes in shard order."""
    mine: Dict[int, tuple] = {}
    progress = None if state.is_main_process else True
    for start, size in tqdm(
        shards(count, batch_size, state.process_index, state.num_processes), desc=desc, disable=progress
    ):
        images = batch_of(start, size)
        if on_batch is not None:
            on_batch(start, images)
        features = extractor(images)
        mine[start] = (FeatureStatistics.of(features).state_dict(), features[: max(0, keep - start)])
    merged = gathered(mine, state)
    statistics = FeatureStatistics.empty(extractor.dim)
    for start in sorted(merged):
        statistics = statistics.merge(FeatureStatistics.from_state_dict(merged[start][0]))
    return statistics, torch.cat([merged[start][1] for start in sorted(merged)])[:keep]


def reference_features(
    decoder_config: ConfigDict,
    size: int,
    extractor: FeatureExtractor,
    count: Optional[int],
    batch_size: int,
    keep: int,
    cache_dir: Path,
    state: PartialState,
) -> Tuple[FeatureStatistics, torch.Tensor, dict]:
    """Features of the stage-1 data set at ``size`` (its first ``count`` images; all by default), cached."""
    data = dict(decoder_config.data.to_dict(), img_size=size)
    dataset = build_dataset(data)
    count = len(dataset) if count is None else min(count, len(dataset))
    described = {
        "dataset": data["name"],
        "split": data.get("split") or "train",
        "resolution": size,
        "count": count,
        "root_dir": data.get("root_dir") or None,
    }
    key = dict(described, extractor=extractor.name, kept=keep, data=data)

    def compute():
        return shard_features(
            extractor,
            count,
            batch_size,
            lambda start, n: torch.stack([dataset[i] for i in range(start, start + n)]),
            keep,
            f"reference {size}px",
            state,
        )

    if state.num_processes > 1:  # every process helps compute, the main process writes the cache
        statistics, features = compute()
        if state.is_main_process:
            cached_features(cache_dir, key, lambda: (statistics, features))
        return statistics, features, described
    statistics, features = cached_features(cache_dir, key, compute)
    return statistics, features, described


def folder_batches(directory: Path, channels: int) -> Tuple[int, BatchOf]:
    """The PNGs (any image files) of ``directory``, sorted by name, as batches in [-1, 1]."""
    root = require_path(directory, "--samples_dir", "a folder of sample images")
    files = list_images(root)
    if not files:
        raise FileNotFoundError(f"--samples_dir {directory}: no image files in it")

    def batch_of(start: int, count: int) -> torch.Tensor:
        return torch.stack(
            [to_tensor(load_image(Path(root) / name, channels)) for name in files[start : start + count]]
        )

    return len(files), batch_of


def calculate_fid(
    decoder_config: ConfigDict,
    latent_config: Optional[ConfigDict] = None,
    num_samples: int = 50_000,
    sample_img_size: Optional[int] = None,
    sampling_steps: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    sampler: Optional[str] = None,
    variance: Optional[str] = None,
    latent: Optional[SamplerSpec] = None,
    inv_snr: Optional[float] = None,
    extractor: str = "inception",
    samples_dir: Optional[Path] = None,
    reference_count: Optional[int] = None,
    kid_samples: int = 10_000,
    out_dir: Optional[Path] = None,
    cache_dir: Optional[Path] = None,
) -> dict:
    """FID (and KID on up to ``kid_samples`` features) of ``num_samples`` samples, or of ``samples_dir``.

    Writes ``fid.json`` (every setting the numbers depend on) beside the scored samples: a fresh folder
    of the latent run holding the generated PNGs, or ``samples_dir`` itself.  Returns the dict written.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    features = EXTRACTORS[extractor]()
    cache_dir = Path(cache_dir or Path(decoder_config.run.output_dir) / "fid_stats")
    channels = data_channels(decoder_config.data)
    if samples_dir is not None:
        count, batch_of = folder_batches(Path(samples_dir), channels)
        out, on_batch, settings = Path(samples_dir), None, {"samples_dir": str(samples_dir)}
        size = batch_of(0, 1).shape[-1]
    else:
        source = SampleSource.load(
            latent_config,
            decoder_config,
            sample_img_size,
            decoder_sampler(decoder_config, sampler, sampling_steps, variance),
            latent,
            seed=seed,
            inv_snr=inv_snr,
        )
        count, batch_of, size, settings = num_samples, source.batch, source.size, source.settings()
        out = shared_directory(
            Path(out_dir)
            if out_dir
            else run_directory(latent_config) / f"fid_{size}px_{sampling_steps}steps_{features.name}",
            state,
        )

        def on_batch(start, images):
            save_images(images, out, prefix="sample_", start_index=start)

    stats, kept = shard_features(
        features, count, batch_size, batch_of, kid_samples, f"samples {size}px", state, on_batch
    )
    reference, reference_kept, described = reference_features(
        decoder_config, size, features, reference_count, batch_size, kid_samples, cache_dir, state
    )
    kid_mean, kid_std = kid(kept, reference_kept) if min(len(kept), len(reference_kept)) >= 2 else (None, None)
    result = dict(
        kind="fid",
        extractor=features.name,
        extractor_description=features.description,
        num_samples=stats.count,
        fid=fid(stats, reference),
        kid=kid_mean,
        kid_std=kid_std,
        kid_subsets=100,
        kid_samples=min(len(kept), len(reference_kept)),
        reference=described,
        train_img_size=decoder_config.data.img_size,
        batch_size=batch_size,
        processes=state.num_processes,
        **settings,
    )
    if state.is_main_process:
        atomic_write_text(json.dumps(result, indent=2) + "\n", out / "fid.json")
    state.wait_for_everyone()
    return result


def default_extractor() -> FeatureExtractor:
    """The FID Inception-v3 when the metrics extra is installed, else the random features (reports say which)."""
    try:
        return EXTRACTORS["inception"]()
    except ExtractorUnavailable:
        return EXTRACTORS["random"]()


def against_exact_renders(
    images: torch.Tensor, decoder_config: ConfigDict, extractor: FeatureExtractor, kid_subsets: int = 100, seed: int = 0
) -> dict:
    """KID and sharpness of ``images`` against exact renders of as many training images at their size.

    For data sets that render at any size (the shapes): the first ``len(images)`` training images
    rendered at the images' resolution are the reference.
    """
    dataset = build_dataset(decoder_config.data)
    size = images.shape[-1]
    reference = torch.stack([dataset.render_sample(i, size) for i in range(len(images))])
    kid_mean, kid_std = kid(
        features_of(extractor, images.split(32)), features_of(extractor, reference.split(32)), kid_subsets, seed=seed
    )
    return dict(
        resolution=size,
        count=len(images),
        extractor=extractor.name,
        extractor_description=extractor.description,
        kid=kid_mean,
        kid_std=kid_std,
        kid_subsets=kid_subsets,
        sharpness=top_octave_energy(images),
        reference_sharpness=top_octave_energy(reference),
    )
