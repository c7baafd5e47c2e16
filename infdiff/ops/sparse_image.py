"""The one type for "features at some pixels of an H×W grid"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable

import torch

from infdiff.ops.grid import Size, as_size, index_to_coords


def gather_pixels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values ``(B, N, C)`` of a dense batch ``x`` ``(B, C, H, W)`` at flat pixel ids ``(B, N)``."""
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1).transpose(1, 2)
    return torch.gather(flat, 1, index.unsqueeze(-1).expand(-1, -1, c))


def full_index(batch: int, size: Size, device=None) -> torch.Tensor:
    """Flat ids ``(B, H * W)`` of every pixel, for treating a dense image as a sparse one."""
    h, w = as_size(size)
    return torch.arange(h * w, device=device).expand(batch, -1)


@dataclass(frozen=True, eq=False)
class SparseImage:
    """Features ``values`` ``(B, N, C)`` at flat pixel ids ``index`` ``(B, N)`` of a grid ``size``.

    Every batch item holds the same number ``N`` of distinct pixels.  Quantities that depend
    only on ``(index, size)`` (neighbour tables, normalisers, kNN plans) are computed once and
    shared by all images derived with :meth:`with_values`, so a network's blocks reuse them.
    """

    values: torch.Tensor
    index: torch.Tensor
    size: Size
    _cache: Dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "size", as_size(self.size))
        if self.values.dim() != 3:
            raise ValueError(f"values must be (B, N, C), got shape {tuple(self.values.shape)}")
        if self.index.shape != self.values.shape[:2]:
            raise ValueError(
                f"index shape {tuple(self.index.shape)} does not match values "
                f"{tuple(self.values.shape)} (expected (B, N))"
            )

    @classmethod
    def from_dense(cls, x: torch.Tensor, index: torch.Tensor | None = None) -> "SparseImage":
        """Sample a dense ``(B, C, H, W)`` batch at ``index`` (every pixel when ``None``)."""
        size = tuple(x.shape[-2:])
        if index is None:
            index = full_index(x.shape[0], size, x.device)
        return cls(gather_pixels(x, index), index, size)

    @property
    def batch(self) -> int:
        return self.values.shape[0]

    @property
    def num_points(self) -> int:
        return self.values.shape[1]

    @property
    def channels(self) -> int:
        return self.values.shape[2]

    @property
    def num_pixels(self) -> int:
        return self.size[0] * self.size[1]

    def with_values(self, values: torch.Tensor) -> "SparseImage":
        """The same pixels carrying new ``values`` ``(B, N, C')``; shares the cache."""
        return SparseImage(values, self.index, self.size, self._cache)

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return ``compute()`` memoised under ``key`` for this set of pixels."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def coords(self) -> torch.Tensor:
        """Unit-square coordinates ``(B, N, 2)`` of the pixels."""
        return self.cached("coords", lambda: index_to_coords(self.index, self.size))

    def index_map(self) -> torch.Tensor:
        """``(B, H * W)`` map from flat pixel id to position in ``N``, ``-1`` where absent."""

        def compute():
            m = torch.full((self.batch, self.num_pixels), -1, dtype=torch.long, device=self.index.device)
            positions = torch.arange(self.num_points, device=self.index.device).expand(self.batch, -1)
            return m.scatter_(1, self.index, positions)

        return self.cached("index_map", compute)

    def to_dense(self, fill: float = 0.0) -> torch.Tensor:
        """Dense ``(B, C, H, W)`` image with ``fill`` at absent pixels."""
        b, _, c = self.values.shape
        out = self.values.new_full((b, self.num_pixels, c), fill)
        out.scatter_(1, self.index.unsqueeze(-1).expand(-1, -1, c), self.values)
        return out.transpose(1, 2).reshape(b, c, *self.size)

    def mask(self) -> torch.Tensor:
        """Occupancy ``(B, 1, H, W)``: 1 at the pixels present, 0 elsewhere."""
        return (self.index_map() >= 0).to(self.values.dtype).view(self.batch, 1, *self.size)
