"""Moving between scattered pixels and a regular coarse grid.

∞-Diff (§4.1) lifts features from the sparse pixels onto a coarse ``gh×gw`` grid by
inverse-squared-distance interpolation over the ``K`` nearest pixels,

    g(c) = Σ_{i ∈ kNN(c)} d(c, p_i)^{-2} x(p_i)  /  Σ_{i ∈ kNN(c)} d(c, p_i)^{-2},

and returns from the grid to the pixels by bilinear interpolation.  The nearest neighbours are
found by a window search on the dense index map of the fine grid (cost independent of ``N``)
with an exact scan over all points for the grid cells whose window cannot prove its answer.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from infdiff.ops import backends as ops
from infdiff.ops.backends import AUTO, resolve_backend
from infdiff.ops.grid import Size, as_size, grid_coords
from infdiff.ops.sparse_image import SparseImage


def default_window_radius(k: int, density: float) -> int:
    """Window half-width (in fine pixels) that usually contains ``k`` points at ``density``.

    The expected number of present pixels within radius ``r`` is ``π r² ρ``; the window is
    one pixel wider than the radius holding ``k`` of them.
    """
    return max(1, math.ceil(math.sqrt(k / (math.pi * max(density, 1e-6)))) + 1)


def knn_grid_search(
    sparse: SparseImage, grid_size: Size, k: int, window_radius: Optional[int] = None, backend: str = AUTO
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` pixels of ``sparse`` nearest to each cell centre of a ``grid_size`` grid.

    Returns ``(dist² (B, G, k), ids (B, G, k))`` with ``G = gh * gw`` and ``ids`` positions in
    ``N``.  Each cell looks at a ``(2R+1)²`` window of the fine grid around its nearest fine
    pixel; the answer is exact whenever the k-th distance is at most ``(R + 1/2)`` fine
    pixels, the smallest distance to any pixel outside the window.  Other cells (and every cell
    when ``k`` exceeds what a window can hold) are answered by an exact scan over all points
    (``infdiff::knn_window``, :mod:`infdiff.ops.backends`).
    """
    gh, gw = as_size(grid_size)
    h, w = sparse.size
    n = sparse.num_points
    if not 1 <= k <= n:
        raise ValueError(f"k={k} neighbours requested from {n} points (expected 1 <= k <= N)")
    device = sparse.index.device
    radius = window_radius or default_window_radius(k, n / (h * w))
    query = grid_coords((gh, gw), device=device)
    base = torch.stack(((query[:, 0] * h - 0.5).round().long(), (query[:, 1] * w - 0.5).round().long()), 1)
    chosen = resolve_backend(backend, device.type)
    dist, ids = ops.knn_window(sparse.index_map(), sparse.coords(), query, base, h, w, radius, k, chosen)
    return dist, ids


def inverse_distance_weights(dist2: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalised weights ``d^{-2} / Σ d^{-2}`` (``eps`` guards cells sitting on a pixel)."""
    inv = 1.0 / (dist2 + eps)
    return inv / inv.sum(-1, keepdim=True)


def knn_plan(sparse: SparseImage, grid_size: Size, k: int, backend: str = AUTO) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cached ``(flat ids (B*G*k,), weights (B, G, k, 1))`` for :func:`interpolate_to_grid`."""
    grid_size = as_size(grid_size)

    def compute():
        dist, ids = knn_grid_search(sparse, grid_size, k, backend=backend)
        h, w = sparse.size
        weights = inverse_distance_weights(dist.float(), eps=1e-6 / (h * w))
        batch_offset = (torch.arange(sparse.batch, device=ids.device) * sparse.num_points).view(-1, 1, 1)
        return (ids + batch_offset).reshape(-1), weights.unsqueeze(-1)

    return sparse.cached(("knn", grid_size, k), compute)


def interpolate_to_grid(sparse: SparseImage, grid_size: Size, k: int = 3, backend: str = AUTO) -> torch.Tensor:
    """Inverse-squared-distance kNN interpolation of ``sparse`` onto a grid: ``(B, C, gh, gw)``."""
    gh, gw = as_size(grid_size)
    ids, weights = knn_plan(sparse, (gh, gw), k, backend)
    b, c = sparse.batch, sparse.channels
    gathered = sparse.values.reshape(-1, c).index_select(0, ids).view(b, gh * gw, k, c)
    out = (gathered * weights.to(gathered.dtype)).sum(2)
    return out.transpose(1, 2).reshape(b, c, gh, gw)


def sample_grid_at_points(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of ``grid`` ``(B, C, gh, gw)`` at unit-square ``coords`` ``(B, N, 2)``.

    Cell-centred grids make this ``F.grid_sample(align_corners=False)``; outside the outermost
    cell centres the border value is held.  Returns ``(B, N, C)``.
    """
    xy = coords.flip(-1).to(grid.dtype) * 2 - 1
    out = F.grid_sample(grid, xy.unsqueeze(2), mode="bilinear", padding_mode="border", align_corners=False)
    return out.squeeze(-1).transpose(1, 2)


def grid_to_sparse(grid: torch.Tensor, sparse: SparseImage) -> SparseImage:
    """Values of ``grid`` bilinearly sampled at the pixels of ``sparse``."""
    return sparse.with_values(sample_grid_at_points(grid, sparse.coords()))
