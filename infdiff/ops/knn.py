"""Moving between scattered pixels and a regular coarse grid.

∞-Diff (§4.1) lifts features from the sparse pixels onto a coarse ``gh×gw`` grid by
inverse-squared-distance interpolation over the ``K`` nearest pixels,

    g(c) = Σ_{i ∈ kNN(c)} d(c, p_i)^{-2} x(p_i)  /  Σ_{i ∈ kNN(c)} d(c, p_i)^{-2},

and returns from the grid to the pixels by bilinear interpolation.  The nearest neighbours are
found by a window search on the dense index map of the fine grid (cost independent of ``N``)
with an exact brute-force fallback for the grid cells whose window cannot prove its answer.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from infdiff.ops.grid import Size, as_size, grid_coords
from infdiff.ops.sparse_conv import kernel_offsets
from infdiff.ops.sparse_image import SparseImage


def knn_brute_force(query: torch.Tensor, points: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN by pairwise distances: ``(dist² (B, G, k), ids (B, G, k))``, nearest first.

    Squared differences are summed elementwise (not ``cdist``'s matrix-product shortcut), so
    equal distances come out exactly equal and ties resolve alike on every device.
    """
    q, p = query.double().unsqueeze(-2), points.double().unsqueeze(-3)
    d2 = (q[..., 0] - p[..., 0]).square() + (q[..., 1] - p[..., 1]).square()
    dist, ids = nearest_first(d2, k)
    return dist.to(query.dtype), ids


def nearest_first(d2: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest of ``d2`` along its last dimension and their positions, nearest first.

    Equidistant candidates are common on regular grids (a coarse cell centre often sits
    symmetrically between fine pixels); a stable sort keeps the earlier one, so the answer is
    the same on every device, unlike ``topk``, whose tie order is unspecified.
    """
    dist, pick = torch.sort(d2, dim=-1, stable=True)
    return dist[..., :k], pick[..., :k]


def default_window_radius(k: int, density: float) -> int:
    """Window half-width (in fine pixels) that usually contains ``k`` points at ``density``.

    The expected number of present pixels within radius ``r`` is ``π r² ρ``; the window is
    one pixel wider than the radius holding ``k`` of them.
    """
    return max(1, math.ceil(math.sqrt(k / (math.pi * max(density, 1e-6)))) + 1)


def knn_grid_search(
    sparse: SparseImage, grid_size: Size, k: int, window_radius: Optional[int] = None, chunk_elements: int = 1 << 24
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` pixels of ``sparse`` nearest to each cell centre of a ``grid_size`` grid.

    Returns ``(dist² (B, G, k), ids (B, G, k))`` with ``G = gh * gw`` and ``ids`` positions in
    ``N``.  Each cell looks at a ``(2R+1)²`` window of the fine grid around its nearest fine
    pixel; the answer is exact whenever the k-th distance is at most ``(R + 1/2)`` fine
    pixels, the smallest distance to any pixel outside the window.  Other cells (and every cell
    when ``k`` exceeds what a window can hold) fall back to :func:`knn_brute_force`.
    """
    gh, gw = as_size(grid_size)
    h, w = sparse.size
    b, n = sparse.batch, sparse.num_points
    if not 1 <= k <= n:
        raise ValueError(f"k={k} neighbours requested from {n} points (expected 1 <= k <= N)")
    device = sparse.index.device
    radius = window_radius or default_window_radius(k, n / (h * w))
    query = grid_coords((gh, gw), device=device)
    dy, dx = kernel_offsets((2 * radius + 1, 2 * radius + 1), device)
    base_r = (query[:, 0] * h - 0.5).round().long()
    base_c = (query[:, 1] * w - 0.5).round().long()
    index_map = sparse.index_map()
    bound = ((radius + 0.5) / max(h, w)) ** 2

    dists, ids = [], []
    step = max(1, chunk_elements // (b * len(dy)))
    for start in range(0, gh * gw, step):
        sl = slice(start, start + step)
        rows, cols = base_r[sl, None] + dy, base_c[sl, None] + dx
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        flat = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)
        position = index_map[:, flat]
        cand = torch.stack((((rows + 0.5) / h - query[sl, 0:1]), ((cols + 0.5) / w - query[sl, 1:2])), -1)
        d2 = cand.square().sum(-1).expand(b, -1, -1)
        d2 = d2.masked_fill(~(inside & (position >= 0)), math.inf)
        kk = min(k, len(dy))
        dist, pick = nearest_first(d2, kk)
        dists.append(dist)
        ids.append(torch.gather(position, 2, pick))
    dist, ids = torch.cat(dists, 1), torch.cat(ids, 1)

    unproven = ~(dist[..., -1] <= bound) if k <= len(dy) else torch.ones_like(dist[..., 0], dtype=torch.bool)
    if bool(unproven.any()):
        dist, ids = _brute_force_fill(sparse, query, k, dist, ids, unproven)
    return dist, ids


def _brute_force_fill(sparse, query, k, dist, ids, unproven):
    """Replace the rows flagged ``unproven`` ``(B, G)`` by exact brute-force answers."""
    if dist.shape[-1] < k:
        dist = torch.cat((dist, dist.new_full((*dist.shape[:2], k - dist.shape[-1]), math.inf)), -1)
        ids = torch.cat((ids, ids.new_zeros((*ids.shape[:2], k - ids.shape[-1]))), -1)
    points = sparse.coords()
    for item in torch.nonzero(unproven.any(1)).flatten().tolist():
        cells = torch.nonzero(unproven[item]).flatten()
        d, i = knn_brute_force(query[cells].unsqueeze(0), points[item : item + 1], k)
        dist[item, cells], ids[item, cells] = d[0].to(dist.dtype), i[0]
    return dist, ids


def inverse_distance_weights(dist2: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalised weights ``d^{-2} / Σ d^{-2}`` (``eps`` guards cells sitting on a pixel)."""
    inv = 1.0 / (dist2 + eps)
    return inv / inv.sum(-1, keepdim=True)


def knn_plan(sparse: SparseImage, grid_size: Size, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cached ``(flat ids (B*G*k,), weights (B, G, k, 1))`` for :func:`interpolate_to_grid`."""
    grid_size = as_size(grid_size)

    def compute():
        dist, ids = knn_grid_search(sparse, grid_size, k)
        h, w = sparse.size
        weights = inverse_distance_weights(dist.float(), eps=1e-6 / (h * w))
        batch_offset = (torch.arange(sparse.batch, device=ids.device) * sparse.num_points).view(-1, 1, 1)
        return (ids + batch_offset).reshape(-1), weights.unsqueeze(-1)

    return sparse.cached(("knn", grid_size, k), compute)


def interpolate_to_grid(sparse: SparseImage, grid_size: Size, k: int = 3) -> torch.Tensor:
    """Inverse-squared-distance kNN interpolation of ``sparse`` onto a grid: ``(B, C, gh, gw)``."""
    gh, gw = as_size(grid_size)
    ids, weights = knn_plan(sparse, (gh, gw), k)
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
