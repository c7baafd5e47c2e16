"""Score-based SDEs in function space (Song et al. 2021, "Score-based generative modeling through
SDEs", §3.4; in function space with a trace-class noise operator, Hagemann et al. 2023, Multilevel
Diffusion), as :class:`~infdiff.diffusion.process.DiffusionProcess` implementations.

The forward SDE ``dx = f(x, t) dt + g(t) Q dW`` with ``C = Q Q*`` the prior's covariance has the
marginal ``x_t = α(t) x_0 + σ(t) η``, ``η ~ N(0, C)``, so every loss, target and sampler written
against the process protocol applies; the noise-prediction target is ``η = Q z`` and the
preconditioned score is ``C ∇ log p_t(x) = -(x - α ŷ_0) / σ²`` (nothing inverts ``Q``).

* :class:`VPSDE`: ``β(t) = β_min + (β_max - β_min) t`` (0.1 + 19.9 t), ``f = -β x / 2``,
  ``g = sqrt(β)``; ``α = exp(-B / 2)``, ``σ² = 1 - e^{-B}`` with ``B(t) = ∫_0^t β``.
* :class:`SubVPSDE`: the same drift, ``g² = β (1 - e^{-2B})``, ``σ = 1 - e^{-B}``.
* :class:`VESDE`: ``σ(t) = σ_min (σ_max / σ_min)^t``, ``f = 0``, ``g = σ(t) sqrt(2 log(σ_max / σ_min))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from infdiff.diffusion.priors import NoisePrior, WhiteNoise
from infdiff.diffusion.process import PROCESSES, DiffusionProcess, expand_like


def _as_time(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class _LinearBetaSDE(DiffusionProcess):
    """Shared by the VP and sub-VP SDEs: the linear ``β(t)`` and its integral ``B(t)``."""

    prior: NoisePrior = field(default_factory=WhiteNoise)
    beta_min: float = 0.1
    beta_max: float = 20.0
    mollified_states: bool = False

    def __post_init__(self):
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(
                f"beta_min={self.beta_min!r}, beta_max={self.beta_max!r}: expected 0 <= beta_min < beta_max"
            )

    def beta(self, t) -> torch.Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * _as_time(t)

    def integral(self, t) -> torch.Tensor:
        """``B(t) = β_min t + (β_max - β_min) t² / 2``."""
        t = _as_time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha(self, t):
        return torch.exp(-0.5 * self.integral(t))

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * expand_like(self.beta(t), x) * x


@PROCESSES.register("vp_sde")
@dataclass(frozen=True, eq=False)
class VPSDE(_LinearBetaSDE):
    """The variance-preserving SDE (module docstring)."""

    def sigma(self, t):
        return (-torch.expm1(-self.integral(t))).sqrt()

    def diffusion(self, t):
        return self.beta(t).sqrt()


@PROCESSES.register("subvp_sde")
@dataclass(frozen=True, eq=False)
class SubVPSDE(_LinearBetaSDE):
    """The sub-VP SDE, whose noise stays below the VP one's (module docstring)."""

    def sigma(self, t):
        return -torch.expm1(-self.integral(t))

    def diffusion(self, t):
        return (self.beta(t) * -torch.expm1(-2 * self.integral(t))).sqrt()


@PROCESSES.register("ve_sde")
@dataclass(frozen=True, eq=False)
class VESDE(DiffusionProcess):
    """The variance-exploding SDE (module docstring); ``α = 1``."""

    prior: NoisePrior = field(default_factory=WhiteNoise)
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    mollified_states: bool = False

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min={self.sigma_min!r}, sigma_max={self.sigma_max!r}: expected 0 < min < max")

    def alpha(self, t):
        return torch.ones_like(_as_time(t))

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _as_time(t)

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
