"""A convolution whose kernel is a function on the unit square, not a stencil of pixels.

A ``k × k`` convolution laid out for a grid of side ``grid`` approximates the integral operator

    (K f)(x) = ∫ κ(x − y) f(y) dy ≈ Σ_j κ(x − y_j) f(y_j) |cell|,

its taps being ``κ`` integrated over the cells of a patch ``k`` cells wide: ``κ`` is read as
constant on each tap's cell.  On an input grid ``r`` times finer (per axis) the same operator gets
``k'`` taps, the smallest odd number covering the patch (``k' ≥ r k``), and each new tap is the
integral of that piecewise-constant ``κ`` over its own, ``r`` times smaller, cell:

    w'_m = Σ_j w_j |cell'_m ∩ cell_j| / |cell_j|        (per axis; the 2-D kernel is A_h W A_wᵀ),

which keeps the kernel's sum and first moments exactly, so a smooth input sees the same operator up
to O(h²) on every grid (for ``r = 2`` a 3-tap ``[a, b, c]`` becomes ``[a/2, a, (a+b)/2, b, (b+c)/2,
c, c/2] / 2``).  The network's output on a smooth input then no longer depends on the grid it is
sampled on, which the DDPM U-Net's pixel stencils, reused as they are at another resolution, lack
(REFERENCE §2: the CNO README's U-Net loses most of its quality at 2×).  Grids coarser than the
layout keep the ``k`` taps (a stencil cannot shrink below its grid).  At the edges the input is
extended evenly (mirrored about the square's boundary, the Neumann convention of the spectral
priors), which, unlike zero padding, is the same function on every grid.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from infdiff.ops.grid import Size, as_size


def fine_taps(kernel_size: int, ratio: float) -> int:
    """The smallest odd tap count covering ``kernel_size`` cells of a grid ``ratio >= 1`` times coarser."""
    return 2 * math.ceil((kernel_size * ratio - 1) / 2 - 1e-9) + 1


@functools.lru_cache(maxsize=256)
def cell_overlap_matrix(kernel_size: int, taps: int, ratio: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """``A`` ``(taps, kernel_size)``: the fraction of coarse tap ``j``'s cell inside fine tap ``m``'s cell
    (both centred at 0, the fine cells ``1 / ratio`` as wide); ``A W Aᵀ`` is the fine kernel.  Cached: every
    layer of a network asks for the same few at each sampling step (never modify the result in place)."""
    coarse = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    fine = (torch.arange(taps, dtype=torch.float64) - taps // 2) / ratio
    half = 0.5 / ratio
    low = torch.maximum(fine[:, None] - half, coarse[None, :] - 0.5)
    high = torch.minimum(fine[:, None] + half, coarse[None, :] + 0.5)
    return (high - low).clamp_min(0).to(dtype=dtype, device=device)


def _mirrored(n: int, pad: int, device) -> torch.Tensor:
    """Indices ``-pad .. n + pad - 1`` of a grid of ``n`` cells mirrored about its edges (``-1 -> 0``, ``n -> n - 1``)."""
    index = torch.arange(-pad, n + pad, device=device)
    index = torch.where(index < 0, -index - 1, index)
    return torch.where(index >= n, 2 * n - 1 - index, index).clamp(0, n - 1)


def even_extension(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """``x`` ``(..., H, W)`` padded by its mirror image about the grid's edges: the even extension of a
    function on the unit square, the same on every grid (zero padding puts an O(1) step at the edge)."""
    h, w = x.shape[-2:]
    x = x.index_select(-2, _mirrored(h, pad_h, x.device)) if pad_h else x
    return x.index_select(-1, _mirrored(w, pad_w, x.device)) if pad_w else x


class GridConv2d(nn.Conv2d):
    """``nn.Conv2d`` with odd ``kernel_size`` whose taps cover a fixed patch of the unit square
    (module docstring); ``grid`` is the side (or ``(H, W)``) the layer is laid out for, ``stride``
    1 (same size) or 2 (halving: the patch is kept and the output has half the input's cells)."""

    def __init__(self, in_channels: int, out_channels: int, grid: Size, kernel_size: int = 3, stride: int = 1):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size}: expected an odd size (centred taps)")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.grid = as_size(grid)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}"

    def kernel_at(self, size: Size) -> torch.Tensor:
        """The kernel ``(out, in, k_h', k_w')`` this layer applies on an input grid of ``size``."""
        k = self.kernel_size[0]
        ratios = [max(1.0, n / n0) for n, n0 in zip(as_size(size), self.grid)]
        if ratios == [1.0, 1.0]:
            return self.weight
        w = self.weight
        a_h, a_w = (cell_overlap_matrix(k, fine_taps(k, r), r, w.dtype, w.device) for r in ratios)
        return torch.einsum("mj,oijl,nl->oimn", a_h, w, a_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.kernel_at(tuple(x.shape[-2:]))
        x = even_extension(x, weight.shape[-2] // 2, weight.shape[-1] // 2)
        return F.conv2d(x, weight.to(x.dtype), self.bias, self.stride)
