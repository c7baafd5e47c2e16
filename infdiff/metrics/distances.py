"""Sample-based distances between distributions: the Riesz-kernel MMD (energy distance) and sliced Wasserstein.

**Riesz MMD, r = 1** (Székely's energy distance; Altekrüger et al. 2023), as the Multilevel Diffusion
and CNO code computes it (their ``metrics.mmd``): on flattened images *in [0, 1]*,

    D(X, Y) = E‖x − y‖ − ½ E‖x − x'‖ − ½ E‖y − y'‖

with every expectation a mean over **all** pairs, self-pairs (distance 0) included: a V-statistic,
biased upwards by ~(E‖x − x'‖ + E‖y − y'‖) / (4n) and positive even for two draws of one
distribution.  ``unbiased=True`` drops the self-pairs from the within-set means (a U-statistic,
0 in expectation for equal distributions).  Either is half of MMD² for the kernel ``−‖x − y‖``,
reported as is, not square-rooted.  The CNO README's MNIST numbers use 1000 samples against 1000
held-out images; the floor of the V-statistic at a given count is that of two real sets of it
(:func:`energy_distance` of two disjoint real sets).

**Sliced Wasserstein-2**: the root mean square, over ``projections`` random unit directions, of the
1-D Wasserstein-2 distance between the projected sets (sorted projections; quantiles when the counts
differ).
"""

from __future__ import annotations

import torch


def _mean_distance(a: torch.Tensor, b: torch.Tensor, chunk: int, exclude_self: bool) -> float:
    """Mean of ‖a_i − b_j‖ over all pairs (over i ≠ j when ``exclude_self``, for ``a is b``), chunked."""
    total = 0.0
    for start in range(0, len(a), chunk):
        total += float(torch.cdist(a[start : start + chunk], b).sum())
    pairs = len(a) * (len(b) - 1) if exclude_self else len(a) * len(b)
    return total / pairs


def energy_distance(x: torch.Tensor, y: torch.Tensor, unbiased: bool = False, chunk: int = 512) -> float:
    """``E‖x − y‖ − ½ E‖x − x'‖ − ½ E‖y − y'‖`` of two sets of vectors ``(n, d)``, ``(m, d)`` (module docstring)."""
    x, y = x.flatten(1).to(torch.float64), y.flatten(1).to(torch.float64)
    if unbiased and min(len(x), len(y)) < 2:
        raise ValueError("the unbiased energy distance needs at least 2 vectors in each set")
    between = _mean_distance(x, y, chunk, exclude_self=False)
    return between - 0.5 * _mean_distance(x, x, chunk, unbiased) - 0.5 * _mean_distance(y, y, chunk, unbiased)


def riesz_mmd(samples: torch.Tensor, reference: torch.Tensor, unbiased: bool = False) -> float:
    """The CNO / Multilevel Diffusion Riesz MMD of image batches in [-1, 1] (mapped to [0, 1], flattened)."""
    return energy_distance((samples.clamp(-1, 1) + 1) / 2, (reference.clamp(-1, 1) + 1) / 2, unbiased)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance of two sets of vectors (module docstring), directions from ``seed``."""
    x, y = x.flatten(1).to(torch.float64), y.flatten(1).to(torch.float64)
    directions = torch.randn(
        x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    directions /= directions.norm(dim=0, keepdim=True)
    px, py = (x @ directions).sort(0).values, (y @ directions).sort(0).values
    if len(px) != len(py):
        levels = torch.linspace(0, 1, max(len(px), len(py)), dtype=torch.float64)
        px, py = torch.quantile(px, levels, dim=0), torch.quantile(py, levels, dim=0)
    return float((px - py).square().mean().sqrt())
