"""Improved precision and recall (Kynkäänniemi et al. 2019): k-nearest-neighbour manifolds of feature sets.

Each set's manifold is the union of balls around its features, each ball reaching the ``k``-th nearest
other feature of the same set (``k = 3``).  **Precision** is the fraction of samples inside the
reference manifold (quality), **recall** the fraction of reference features inside the samples'
manifold (coverage).
"""

from __future__ import annotations

from typing import Tuple

import torch


def _knn_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each feature to its ``k``-th nearest other feature of the same set."""
    radii = []
    for start in range(0, len(features), chunk):
        distances = torch.cdist(features[start : start + chunk], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # the 0 to itself is the first
    return torch.cat(radii)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Whether each point lies in some ball ``(centre, radius)``."""
    found = []
    for start in range(0, len(points), chunk):
        found.append((torch.cdist(points[start : start + chunk], centres) <= radii).any(dim=1))
    return torch.cat(found)


def precision_recall(
    samples: torch.Tensor, reference: torch.Tensor, k: int = 3, chunk: int = 1024
) -> Tuple[float, float]:
    """``(precision, recall)`` of ``samples`` against ``reference`` feature sets (module docstring)."""
    x, y = samples.flatten(1).to(torch.float64), reference.flatten(1).to(torch.float64)
    if min(len(x), len(y)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} features per set, got {len(x)}, {len(y)}")
    precision = _inside(x, y, _knn_radii(y, k, chunk), chunk).double().mean()
    recall = _inside(y, x, _knn_radii(x, k, chunk), chunk).double().mean()
    return float(precision), float(recall)
