"""Kernel Inception Distance (Bińkowski et al. 2018): an unbiased MMD² with a cubic polynomial kernel.

``k(x, y) = (xᵀy / d + 1)³``.  Over ``num_subsets`` random subsets of ``m = min(n₁, n₂, subset_size)``
features of each set (without replacement), the unbiased estimate

    MMD²_u = [Σ_{i≠j} k(x_i, x_j) + Σ_{i≠j} k(y_i, y_j)] / (m (m − 1)) − 2 Σ_{i,j} k(x_i, y_j) / m²

is averaged (clean-fid's ``kernel_distance``, with 100 subsets of at most 1000).  Being unbiased it
is usable at the small counts where FID is not (its mean over subsets of equal sets is 0).
"""

from __future__ import annotations

from typing import Tuple

import torch


def mmd2_unbiased_polynomial(x: torch.Tensor, y: torch.Tensor) -> float:
    """MMD²_u of two equal-size feature sets ``(m, d)`` with the cubic kernel (module docstring)."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def kid(
    samples: torch.Tensor, reference: torch.Tensor, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> Tuple[float, float]:
    """KID's mean and standard deviation over ``num_subsets`` subsets (module docstring), in float64."""
    x, y = samples.to(torch.float64), reference.to(torch.float64)
    m = min(len(x), len(y), subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {len(x)} and {len(y)}")
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(
        [
            mmd2_unbiased_polynomial(
                x[torch.randperm(len(x), generator=generator)[:m]], y[torch.randperm(len(y), generator=generator)[:m]]
            )
            for _ in range(num_subsets)
        ],
        dtype=torch.float64,
    )
    return float(values.mean()), float(values.std()) if num_subsets > 1 else 0.0
