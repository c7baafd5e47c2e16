"""The Gaussian posterior ``q(x_s | x_t, x_0)`` between two times ``s < t`` of a process.

With ``α_{t|s} = α_t / α_s`` and ``σ²_{t|s} = σ_t² - α_{t|s}² σ_s²`` (the transition
``q(x_t | x_s)``), conditioning gives (Kingma et al. 2021, VDM, App. A; Ho et al. 2020, eq. 6-7
for a VP process)

    μ̃ = α_{t|s} σ_s² / σ_t² · x_t + α_s σ²_{t|s} / σ_t² · ŷ_0,      σ̃² = σ²_{t|s} σ_s² / σ_t².

The noise is the prior's, so the same formulas hold on mollified states (∞-Diff).  ``variance``
is ``"fixed_small"`` (``σ̃²``) or ``"fixed_large"`` (``σ²_{t|s}``, DDPM's ``β``), Ho et al. 2020 §3.2.
"""

from __future__ import annotations

from typing import Tuple

import torch

from infdiff.diffusion.process import DiffusionProcess

VARIANCES = ("fixed_small", "fixed_large")


def _transition(process: DiffusionProcess, t: float, s: float) -> Tuple[float, float, float, float]:
    """``(α_{t|s}, σ²_{t|s}, σ_s², σ_t²)`` of the transition from ``s`` to ``t > s``."""
    if not 0 <= s < t:
        raise ValueError(f"the posterior needs 0 <= s < t, got s={s}, t={t}")
    alpha_t, sigma_t = process.levels(t)
    alpha_s, sigma_s = process.levels(s)
    a = alpha_t / alpha_s
    return a, sigma_t**2 - a**2 * sigma_s**2, sigma_s**2, sigma_t**2


def posterior_variance(process: DiffusionProcess, t: float, s: float, variance: str = "fixed_small") -> float:
    """``σ̃²`` (``"fixed_small"``) or ``σ²_{t|s}`` (``"fixed_large"``) between times ``s < t``."""
    if variance not in VARIANCES:
        raise ValueError(f"unknown posterior variance {variance!r}; expected one of {list(VARIANCES)}")
    _, transition, var_s, var_t = _transition(process, t, s)
    return transition * var_s / var_t if variance == "fixed_small" else transition


def posterior_mean_variance(
    process: DiffusionProcess, t: float, s: float, y0: torch.Tensor, y_t: torch.Tensor, variance: str = "fixed_small"
) -> Tuple[torch.Tensor, float]:
    """Mean and variance (a float: the squared coefficient of fresh prior noise) of ``q(x_s | x_t, ŷ_0)``."""
    spread = posterior_variance(process, t, s, variance)
    a, transition, var_s, var_t = _transition(process, t, s)
    alpha_s = process.levels(s)[0]
    return (a * var_s / var_t) * y_t + (alpha_s * transition / var_t) * y0, spread
