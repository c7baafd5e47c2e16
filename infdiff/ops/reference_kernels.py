"""The pure-PyTorch reference of every sparse kernel, with the signatures of the compiled ones.

Each function here computes exactly what its namesake in ``csrc/`` computes (the tests hold them
to it), on any device PyTorch supports, so ``model.backend=torch`` is the ground truth and the
fallback.  ``T`` is a neighbour table ``(K, M)``: ``T[j, p]`` is the row of the point at offset
``j`` of point ``p`` in the ``(M, C)`` values, or ``M`` when that pixel is absent.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch

from infdiff.ops.grid import index_to_rowcol


def kernel_offsets(kernel_size, device=None):
    """Row and column offsets of a ``kh×kw`` window in row-major (``F.conv2d``) order."""
    kh, kw = kernel_size
    dy, dx = torch.meshgrid(
        torch.arange(kh, device=device) - kh // 2, torch.arange(kw, device=device) - kw // 2, indexing="ij"
    )
    return dy.reshape(-1), dx.reshape(-1)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the kernels accumulate ``dtype`` in (``at::opmath_type``): float64 for float64, else float32;
    the dtype of the convolutions' row scale and of the layer norm's row statistics."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows(table: torch.Tensor, flip: bool) -> torch.Tensor:
    return table.flip(0) if flip else table


def _scaled(rows: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
    """``s[p] rows[p]``, computed in the scale's (accumulation) dtype."""
    return rows if scale is None else (rows.to(scale.dtype) * scale.unsqueeze(1)).to(rows.dtype)


def gather_conv(
    values: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, scale: Optional[torch.Tensor], flip: bool
) -> torch.Tensor:
    """``out[p] = s[p] Σ_j weight[:, j] * values[T[j, p]]``; with ``flip`` the transpose, ``T``'s rows
    reversed and ``s`` on the gathered rows, ``out[q] = Σ_j weight[:, j] * s[T'[j, q]] values[T'[j, q]]``."""
    table = _rows(table, flip)
    padded = torch.cat((_scaled(values, scale) if flip else values, values.new_zeros(1, values.shape[1])))
    out = padded.index_select(0, table[0]) * weight[:, 0]
    for j in range(1, table.shape[0]):
        out.addcmul_(padded.index_select(0, table[j]), weight[:, j])
    return out if flip else _scaled(out, scale)


def gather_conv_weight(
    grad: torch.Tensor, values: torch.Tensor, table: torch.Tensor, scale: Optional[torch.Tensor], flip: bool
) -> torch.Tensor:
    """``dw[c, j] = Σ_p s[p] grad[p, c] * values[T[j, p], c]`` (with ``flip``, ``s`` on the values): the
    gradient of :func:`gather_conv` in its weight."""
    table = _rows(table, flip)
    if flip:
        values = _scaled(values, scale)
    else:
        grad = _scaled(grad, scale)
    padded = torch.cat((values, values.new_zeros(1, values.shape[1])))
    return torch.stack([(grad * padded.index_select(0, table[j])).sum(0) for j in range(table.shape[0])], dim=1)


def neighbour_table(
    index: torch.Tensor, index_map: torch.Tensor, height: int, width: int, kernel_h: int, kernel_w: int
) -> torch.Tensor:
    """``T[j, b*N + n]``: where the pixel at ``index[b, n]`` + offset ``j`` sits in the flattened ``(B*N)`` values."""
    b, n = index.shape
    device = index.device
    row, col = index_to_rowcol(index.reshape(1, -1), (height, width))
    dy, dx = kernel_offsets((kernel_h, kernel_w), device)
    nrow, ncol = row + dy[:, None], col + dx[:, None]
    inside = (nrow >= 0) & (nrow < height) & (ncol >= 0) & (ncol < width)
    flat = (nrow.clamp(0, height - 1) * width + ncol.clamp(0, width - 1)).view(len(dy), b, n)
    position = torch.gather(index_map.unsqueeze(0).expand(len(dy), -1, -1), 2, flat)
    present = inside.view(len(dy), b, n) & (position >= 0)
    batch_offset = (torch.arange(b, device=device) * n).view(1, b, 1)
    table = torch.where(present, position + batch_offset, torch.full_like(position, b * n))
    return table.reshape(len(dy), b * n).to(torch.int32 if b * n < 2**31 - 1 else torch.long)


def _window_table(index, index_map, height, width, kernel_h, kernel_w):
    return neighbour_table(index.long(), index_map.long(), height, width, kernel_h, kernel_w)


def window_conv(values, weight, index, index_map, height, width, kernel_h, kernel_w, scale, flip):
    """:func:`gather_conv` over the table of ``index`` in ``index_map``, built here and dropped after."""
    table = _window_table(index, index_map, height, width, kernel_h, kernel_w)
    return gather_conv(values, weight, table, scale, flip)


def window_conv_weight(grad, values, index, index_map, height, width, kernel_h, kernel_w, scale, flip):
    """:func:`gather_conv_weight` over the table :func:`window_conv` builds."""
    table = _window_table(index, index_map, height, width, kernel_h, kernel_w)
    return gather_conv_weight(grad, values, table, scale, flip)


def nearest_first(d2: torch.Tensor, k: int):
    """The ``k`` smallest of ``d2`` along its last dimension and their positions, nearest first.

    Equidistant candidates are common on regular grids (a coarse cell centre often sits
    symmetrically between fine pixels); a stable sort keeps the earlier one, so the answer is
    the same on every device, unlike ``topk``, whose tie order is unspecified.
    """
    dist, pick = torch.sort(d2, dim=-1, stable=True)
    return dist[..., :k], pick[..., :k]


def knn_brute_force(query: torch.Tensor, points: torch.Tensor, k: int):
    """Exact kNN by pairwise distances in float64: ``(dist² (B, G, k), ids (B, G, k))``, nearest first.

    Squared differences are summed elementwise (not ``cdist``'s matrix-product shortcut), so
    equal distances come out exactly equal and ties resolve alike on every device.
    """
    q, p = query.double().unsqueeze(-2), points.double().unsqueeze(-3)
    d2 = (q[..., 0] - p[..., 0]).square() + (q[..., 1] - p[..., 1]).square()
    dist, ids = nearest_first(d2, k)
    return dist.to(query.dtype), ids


def knn_window(
    index_map: torch.Tensor,
    coords: torch.Tensor,
    query: torch.Tensor,
    base: torch.Tensor,
    height: int,
    width: int,
    radius: int,
    k: int,
    chunk_elements: int = 1 << 24,
) -> List[torch.Tensor]:
    """The ``k`` present pixels nearest to each query ``(G, 2)``, searched in the ``(2R+1)²`` window
    around ``base`` ``(G, 2)`` (row, col) of the fine index map ``(B, H*W)``.

    Exact whenever the k-th distance is at most ``(R + 1/2)`` fine pixels (no pixel outside the
    window can be nearer); other cells are answered by :func:`knn_brute_force` over ``coords``
    ``(B, N, 2)``.  Returns ``[dist² (B, G, k) float32, ids (B, G, k) positions in N]``.
    """
    b, g = index_map.shape[0], query.shape[0]
    dy, dx = kernel_offsets((2 * radius + 1, 2 * radius + 1), query.device)
    bound = ((radius + 0.5) / max(height, width)) ** 2
    kk = min(k, len(dy))
    dists, ids = [], []
    step = max(1, chunk_elements // (b * len(dy)))
    for start in range(0, g, step):
        sl = slice(start, start + step)
        rows, cols = base[sl, 0:1] + dy, base[sl, 1:2] + dx
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        position = index_map[:, rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)]
        cand = torch.stack((((rows + 0.5) / height - query[sl, 0:1]), ((cols + 0.5) / width - query[sl, 1:2])), -1)
        d2 = cand.square().sum(-1).expand(b, -1, -1).masked_fill(~(inside & (position >= 0)), math.inf)
        dist, pick = nearest_first(d2, kk)
        dists.append(dist)
        ids.append(torch.gather(position, 2, pick))
    dist, ids = torch.cat(dists, 1), torch.cat(ids, 1)
    if kk < k:
        dist = torch.cat((dist, dist.new_full((b, g, k - kk), math.inf)), -1)
        ids = torch.cat((ids, ids.new_zeros((b, g, k - kk))), -1)
    unproven = ~(dist[..., -1] <= bound)
    for item in torch.nonzero(unproven.any(1)).flatten().tolist():
        cells = torch.nonzero(unproven[item]).flatten()
        d, i = knn_brute_force(query[cells].unsqueeze(0), coords[item : item + 1], k)
        dist[item, cells], ids[item, cells] = d[0].to(dist.dtype), i[0]
    return [dist, ids]


def modulated_layer_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> List[torch.Tensor]:
    """``[y, mean, rstd]``: ``y = (x - mean) · rstd · scale[b] + shift[b]`` over the channels of ``x``
    ``(B, R, C)``, with per-sample ``scale`` and ``shift`` ``(B, C)``; the row statistics ``(B·R,)`` are
    float32 (float64 for float64 ``x``), as :func:`torch.nn.functional.layer_norm` computes them."""
    stats_dtype = accumulation_dtype(x.dtype)
    wide = x.to(stats_dtype)
    mean = wide.mean(-1, keepdim=True)
    var = (wide - mean).square().mean(-1, keepdim=True)  # biased, as the kernels' two passes
    rstd = torch.rsqrt(var + eps)
    y = torch.addcmul(shift[:, None].to(stats_dtype), (wide - mean) * rstd, scale[:, None].to(stats_dtype))
    return [y.to(x.dtype), mean.reshape(-1), rstd.reshape(-1)]


def modulated_layer_norm_backward(
    grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
) -> List[torch.Tensor]:
    """``[grad_x, grad_scale, grad_shift]`` of :func:`modulated_layer_norm`: with ``x̂ = (x - mean) rstd``
    and ``g' = grad · scale[b]``, ``grad_x = rstd (g' - mean_c g' - x̂ mean_c(g' x̂))``,
    ``grad_scale = Σ_r grad x̂`` and ``grad_shift = Σ_r grad`` per sample."""
    shape = x.shape[0], x.shape[1], 1
    wide_grad = grad.to(mean.dtype)
    unit = (x.to(mean.dtype) - mean.reshape(shape)) * rstd.reshape(shape)
    modulated = wide_grad * scale[:, None].to(mean.dtype)
    centred = modulated - modulated.mean(-1, keepdim=True) - unit * (modulated * unit).mean(-1, keepdim=True)
    grad_x = rstd.reshape(shape) * centred
    return [grad_x.to(x.dtype), (wide_grad * unit).sum(1).to(x.dtype), wide_grad.sum(1).to(x.dtype)]
