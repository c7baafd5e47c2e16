"""Every metric of a sample set against a reference set, as one JSON-ready dict (small and medium counts).

Pixel metrics (images in [-1, 1]): the CNO Riesz MMD and its unbiased form, its real-vs-real floor when
a second real set is given, sliced Wasserstein on pixels in [0, 1], and the top-octave sharpness of
both sets.  With an extractor: FID, KID (mean and std over subsets), precision/recall and the Vendi
score of both sets, computed on that extractor's features, whose name and description the dict carries.
Large sample counts go through :class:`~infdiff.metrics.statistics.FeatureStatistics` instead (FID only).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from infdiff.metrics.distances import riesz_mmd, sliced_wasserstein
from infdiff.metrics.diversity import vendi_score
from infdiff.metrics.extractors import FeatureExtractor, features_of
from infdiff.metrics.fid import fid
from infdiff.metrics.kid import kid
from infdiff.metrics.precision_recall import precision_recall
from infdiff.metrics.sharpness import top_octave_energy
from infdiff.metrics.statistics import FeatureStatistics


def score_images(
    samples: torch.Tensor,
    reference: torch.Tensor,
    extractor: Optional[FeatureExtractor] = None,
    held_out: Optional[torch.Tensor] = None,
    kid_subsets: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    reference_features: Optional[torch.Tensor] = None,
) -> Dict[str, object]:
    """The metrics of ``samples`` against ``reference`` (both ``(N, C, H, W)`` in [-1, 1]; module docstring).

    ``reference_features`` (the extractor's features of ``reference``) saves recomputing them when one
    reference scores several sample sets.
    """
    unit = lambda images: ((images.clamp(-1, 1) + 1) / 2).flatten(1)  # noqa: E731
    result: Dict[str, object] = {
        "count": len(samples),
        "reference_count": len(reference),
        "resolution": list(samples.shape[-2:]),
        "riesz_mmd": riesz_mmd(samples, reference),
        "riesz_mmd_unbiased": riesz_mmd(samples, reference, True),
        "sliced_wasserstein": sliced_wasserstein(unit(samples), unit(reference), seed=seed),
        "sharpness": top_octave_energy(samples),
        "reference_sharpness": top_octave_energy(reference),
    }
    if held_out is not None:
        result["riesz_mmd_floor"] = riesz_mmd(held_out, reference)
        result["floor_count"] = len(held_out)
    if extractor is None:
        return result
    batches = lambda images: images.split(batch_size)  # noqa: E731
    f_samples = features_of(extractor, batches(samples))
    f_reference = features_of(extractor, batches(reference)) if reference_features is None else reference_features
    kid_mean, kid_std = kid(f_samples, f_reference, kid_subsets, seed=seed)
    precision, recall = precision_recall(f_samples, f_reference)
    result.update(
        extractor=extractor.name,
        extractor_description=extractor.description,
        fid=fid(FeatureStatistics.of(f_samples), FeatureStatistics.of(f_reference)),
        kid=kid_mean,
        kid_std=kid_std,
        kid_subsets=kid_subsets,
        precision=precision,
        recall=recall,
        vendi=vendi_score(f_samples),
        reference_vendi=vendi_score(f_reference),
    )
    return result
