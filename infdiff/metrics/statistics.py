"""Streaming feature statistics (count, sum, sum of outer products in float64) and their cache on disk.

Features are folded in batch by batch (:meth:`FeatureStatistics.update`), so a sample set is never
held in memory, and statistics of disjoint shards combine exactly by addition
(:meth:`FeatureStatistics.merge`): a data-parallel run that merges its shards in shard order gets the
numbers of a one-process run.  Reference statistics are cached under a key naming the data set, split,
resolution, extractor and count, with the features KID needs (:func:`cached_features`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Tuple

import torch

from infdiff.io import PathLike, atomic_torch_save


@dataclass
class FeatureStatistics:
    """``count`` features folded into ``total`` ``(d,)`` and ``outer`` ``(d, d)`` (float64)."""

    count: int
    total: torch.Tensor
    outer: torch.Tensor

    @classmethod
    def empty(cls, dim: int) -> "FeatureStatistics":
        return cls(0, torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64))

    @classmethod
    def of(cls, features: torch.Tensor) -> "FeatureStatistics":
        return cls.empty(features.shape[1]).update(features)

    def update(self, features: torch.Tensor) -> "FeatureStatistics":
        """Fold in ``features`` ``(N, d)``; returns ``self``."""
        f = features.detach().to(torch.float64).cpu()
        if f.dim() != 2 or f.shape[1] != self.total.shape[0]:
            raise ValueError(f"expected features (N, {self.total.shape[0]}), got {tuple(features.shape)}")
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f
        return self

    def merge(self, other: "FeatureStatistics") -> "FeatureStatistics":
        """The statistics of both sets together (a new object)."""
        return FeatureStatistics(self.count + other.count, self.total + other.total, self.outer + other.outer)

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count

    @property
    def covariance(self) -> torch.Tensor:
        """The unbiased sample covariance ``(Σ f fᵀ − N μ μᵀ) / (N − 1)``."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 features, got {self.count}")
        mean = self.mean
        return (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)

    def state_dict(self) -> dict:
        return {"count": self.count, "total": self.total, "outer": self.outer}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "FeatureStatistics":
        return cls(int(state["count"]), state["total"], state["outer"])


def cache_path(directory: PathLike, key: Mapping[str, object]) -> Path:
    """``<directory>/<name>_<split>_<resolution>px_<extractor>_<count>_<hash>.pt`` for a statistics key."""
    digest = hashlib.sha1(json.dumps(dict(key), sort_keys=True, default=str).encode()).hexdigest()[:10]
    parts = [key.get("dataset"), key.get("split"), f"{key.get('resolution')}px", key.get("extractor"), key.get("count")]
    return Path(directory) / ("_".join(str(p) for p in parts) + f"_{digest}.pt")


def cached_features(
    directory: PathLike, key: Mapping[str, object], compute: Callable[[], Tuple[FeatureStatistics, torch.Tensor]]
) -> Tuple[FeatureStatistics, torch.Tensor]:
    """The statistics and kept features stored under ``key`` in ``directory``, else ``compute()`` saved there.

    ``key`` must name everything the numbers depend on (data set and its root, split, resolution,
    extractor, count); it is stored in the file and checked on reading.  Files hold tensors and plain
    data only and load with ``weights_only=True``.
    """
    path = cache_path(directory, key)
    plain_key = json.loads(json.dumps(dict(key), default=str))
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("key") == plain_key:
            return FeatureStatistics.from_state_dict(stored["statistics"]), stored["features"]
    statistics, features = compute()
    atomic_torch_save({"key": plain_key, "statistics": statistics.state_dict(), "features": features}, path)
    return statistics, features
