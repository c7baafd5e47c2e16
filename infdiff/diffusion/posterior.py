"""The DDPM posterior ``q(y_{t-1} | y_t, y_0)`` on mollified states."""

from __future__ import annotations

from typing import Tuple

import torch

from infdiff.diffusion.schedules import Schedule

_VARIANCES = {
    "fixed_small": lambda schedule: schedule.posterior_variance,
    "fixed_large": lambda schedule: schedule.betas,
}


def posterior_mean_variance(
    schedule: Schedule, i: int, y0: torch.Tensor, y_t: torch.Tensor, variance: str = "fixed_small"
) -> Tuple[torch.Tensor, float]:
    """Mean and variance of ``q(y_{i-1} | y_i, y_0)`` at position ``i`` of ``schedule``.

    ``μ̃ = sqrt(ᾱ_{i-1}) β_i / (1 - ᾱ_i) y_0 + sqrt(α_i) (1 - ᾱ_{i-1}) / (1 - ᾱ_i) y_i`` (Ho et al.
    2020, eq. 6-7).  In ∞-Diff the same formula holds on mollified states, the noise being
    ``T ξ``.  ``variance`` is ``"fixed_small"`` (``β̃_i``) or ``"fixed_large"`` (``β_i``), Ho et
    al. 2020 §3.2.  The variance is returned as a float (the coefficient of fresh noise squared).
    """
    if variance not in _VARIANCES:
        raise ValueError(f"unknown posterior variance {variance!r}; expected one of {sorted(_VARIANCES)}")
    coef_y0, coef_yt = schedule.posterior_mean_coefs
    mean = float(coef_y0[i]) * y0 + float(coef_yt[i]) * y_t
    return mean, float(_VARIANCES[variance](schedule)[i])
