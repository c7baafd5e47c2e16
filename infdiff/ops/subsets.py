"""Random subsets of pixel coordinates (∞-Diff trains on a fraction of the pixels of each image).

Each batch item keeps ``n`` distinct pixels of an ``H×W`` grid, returned as sorted flat ids
``(B, n)``.  Two designs are provided, chosen by name through the registry :data:`SUBSETS`:

* ``"uniform"``: uniformly without replacement, independently per item;
* ``"halton"``: a randomly shifted 2-D Halton sequence (bases 2 and 3, Cranley–Patterson
  rotation per item), a quasi-Monte-Carlo design that covers the square more evenly than
  independent draws; duplicates after rounding to pixels are dropped and the remainder is
  filled uniformly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch

from infdiff.ops.grid import Size, as_size
from infdiff.registry import Registry

SUBSETS = Registry("pixel-subset design")


def _check_count(n: int, size: Size) -> int:
    h, w = as_size(size)
    if not 1 <= n <= h * w:
        raise ValueError(f"cannot keep {n} pixels of a {h}x{w} grid (expected 1 <= n <= {h * w})")
    return h * w


@SUBSETS.register("uniform")
def uniform_subset(
    batch: int, size: Size, n: int, generator: Optional[torch.Generator] = None, device=None
) -> torch.Tensor:
    """``n`` distinct pixel ids per item, uniformly without replacement; sorted ``(B, n)``."""
    total = _check_count(n, size)
    scores = torch.rand(batch, total, generator=generator, device=device)
    return scores.topk(n, dim=1).indices.sort(dim=1).values


def radical_inverse(i: torch.Tensor, base: int) -> torch.Tensor:
    """Van der Corput radical inverse ``phi_b(i) = sum_k d_k b^{-k-1}`` for ``i = sum_k d_k b^k``."""
    i = i.clone()
    out = torch.zeros(i.shape, dtype=torch.float64)
    scale = 1.0 / base
    while bool((i > 0).any()):
        out += (i % base).double() * scale
        i = torch.div(i, base, rounding_mode="floor")
        scale /= base
    return out


@lru_cache(maxsize=8)
def halton_points(count: int) -> torch.Tensor:
    """First ``count`` points ``(count, 2)`` of the 2-D Halton sequence (bases 2, 3), skipping 0."""
    i = torch.arange(1, count + 1)
    return torch.stack((radical_inverse(i, 2), radical_inverse(i, 3)), dim=1)


@SUBSETS.register("halton")
def halton_subset(
    batch: int, size: Size, n: int, generator: Optional[torch.Generator] = None, device=None
) -> torch.Tensor:
    """``n`` distinct pixel ids per item from a randomly rotated Halton sequence; sorted ``(B, n)``."""
    total = _check_count(n, size)
    h, w = as_size(size)
    base = halton_points(2 * n)
    shifts = torch.rand(batch, 1, 2, generator=generator, device=device).cpu().double()
    fill_scores = torch.rand(batch, total, generator=generator, device=device).cpu()
    points = (base.unsqueeze(0) + shifts) % 1.0
    ids = (points[..., 0] * h).long().clamp_max(h - 1) * w + (points[..., 1] * w).long().clamp_max(w - 1)
    out = []
    for item_ids, scores in zip(ids, fill_scores):
        first = torch.zeros(total, dtype=torch.long).scatter_reduce(
            0, item_ids, torch.arange(len(item_ids)), reduce="amin", include_self=False
        )
        seen = torch.zeros(total, dtype=torch.bool)
        seen[item_ids] = True
        order = torch.where(seen, first.double(), len(item_ids) + scores.double())
        out.append(order.topk(n, largest=False).indices)
    return torch.stack(out).sort(dim=1).values.to(device)


def draw_subset(
    kind: str, batch: int, size: Size, n: int, generator: Optional[torch.Generator] = None, device=None
) -> torch.Tensor:
    """``n`` pixel ids per item from the design named ``kind`` (one of :data:`SUBSETS`)."""
    return SUBSETS[kind](batch, size, n, generator=generator, device=device)
