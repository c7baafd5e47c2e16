"""Pixel grids on the unit square and the quantities that depend on pixel size.

A grid of size ``(H, W)`` covers the unit square ``[0, 1]^2`` with cell-centred pixels:
pixel ``(i, j)`` sits at ``((i + 0.5) / H, (j + 0.5) / W)``.  Pixels are identified by their
row-major flat id ``i * W + j``.  Every quantity that depends on the pixel size (kernel support,
mollifier width, white-noise variance) is derived here from the current and the training size,
so networks and processes describe operators on the unit square rather than on pixels.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch

Size = Tuple[int, int]


def as_size(size: Union[int, Tuple[int, int]]) -> Size:
    """Normalise ``size`` (an int for square grids or an ``(H, W)`` pair) to ``(H, W)``."""
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"grid size must be positive, got {size!r}")
    return h, w


def index_to_rowcol(index: torch.Tensor, size: Size) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row and column of flat pixel ids on an ``(H, W)`` grid."""
    _, w = as_size(size)
    return torch.div(index, w, rounding_mode="floor"), index % w


def index_to_coords(index: torch.Tensor, size: Size, dtype=torch.float32) -> torch.Tensor:
    """Cell-centred unit-square coordinates ``(..., 2)`` (row, col order) of flat pixel ids."""
    h, w = as_size(size)
    row, col = index_to_rowcol(index, (h, w))
    return torch.stack(((row.to(dtype) + 0.5) / h, (col.to(dtype) + 0.5) / w), dim=-1)


def grid_coords(size: Size, device=None, dtype=torch.float32) -> torch.Tensor:
    """Coordinates ``(H * W, 2)`` of every pixel of a grid, in flat-id order."""
    h, w = as_size(size)
    return index_to_coords(torch.arange(h * w, device=device), (h, w), dtype)


def resolution_ratio(size: Size, train_size: Size) -> Tuple[float, float]:
    """Per-axis ratio of the current grid to the training grid (``> 1`` is finer)."""
    h, w = as_size(size)
    h0, w0 = as_size(train_size)
    return h / h0, w / w0


def resized_kernel_size(kernel_size: int, ratio: float) -> int:
    """Odd kernel size covering the same physical support at a grid ``ratio`` times finer.

    ``k' = 2 * floor(k * ratio / 2) + 1`` (the odd integer nearest to ``k * ratio``), at least 3,
    and exactly ``k`` when ``ratio == 1``.
    """
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    if ratio == 1:
        return kernel_size
    return max(3, 2 * math.floor(kernel_size * ratio / 2 + 1e-9) + 1)


def white_noise_scale(size: Size, train_size: Size) -> float:
    """Standard-deviation factor for per-pixel white noise on ``size`` relative to ``train_size``.

    A white-noise function averaged over a pixel of area ``1 / (H W)`` has variance
    proportional to ``H W``; keeping the noise *function* fixed across grids therefore scales
    the per-pixel standard deviation by ``sqrt(H W / (H0 W0))`` (``N' / N`` for square grids,
    ∞-Diff, Bond-Taylor & Willcocks 2024, sampling at other resolutions).
    """
    rh, rw = resolution_ratio(size, train_size)
    return math.sqrt(rh * rw)
