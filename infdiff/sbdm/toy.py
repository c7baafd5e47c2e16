"""A Gaussian mixture with its exact denoiser: ground truth for losses and samplers in a few dimensions.

For data ``x_0 ~ Σ_i π_i N(μ_i, Σ_i)`` and ``x_t = α x_0 + σ η`` with ``η ~ N(0, C)`` (``C = Q Q``
dense), ``x_t`` is the mixture ``Σ_i π_i N(α μ_i, α² Σ_i + σ² C)``, so

    E[x_0 | x_t] = Σ_i w_i(x_t) (μ_i + α Σ_i (α² Σ_i + σ² C)^{-1} (x_t - α μ_i)),
    w_i ∝ π_i N(x_t; α μ_i, α² Σ_i + σ² C)      (normalised by logsumexp),

the exact ``ŷ_0`` and hence, through :func:`~infdiff.sbdm.samplers.preconditioned_score`, the
exact preconditioned score.  :class:`DensePrior` is the matching noise prior on vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.distributions import MultivariateNormal

from infdiff.diffusion.priors import NoisePrior
from infdiff.diffusion.process import DiffusionProcess


@dataclass(frozen=True, eq=False)
class DensePrior(NoisePrior):
    """``N(0, Q Q)`` on vectors ``(B, D)`` with a dense symmetric ``Q`` (``sqrt_cov``)."""

    sqrt_cov: torch.Tensor = field(default_factory=lambda: torch.eye(2, dtype=torch.float64))
    train_size: Optional[int] = None
    noise_grid: Optional[int] = None

    def __post_init__(self):
        if self.sqrt_cov.dim() != 2 or not torch.allclose(self.sqrt_cov, self.sqrt_cov.T):
            raise ValueError(f"sqrt_cov must be a symmetric (D, D) matrix, got shape {tuple(self.sqrt_cov.shape)}")

    @property
    def covariance(self) -> torch.Tensor:
        return self.sqrt_cov @ self.sqrt_cov

    def apply_sqrt_cov(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.sqrt_cov.T.to(x)

    def apply_inverse_sqrt_cov(self, x: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        return torch.linalg.solve(self.sqrt_cov.to(x), x.T).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, Q Q)`` per row of ``x`` ``(B, D)`` (float64)."""
        zero = torch.zeros(len(self.sqrt_cov), dtype=torch.float64)
        return MultivariateNormal(zero, self.covariance.double()).log_prob(x.double())


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """``Σ_i π_i N(μ_i, Σ_i)``: ``weights`` ``(K,)``, ``means`` ``(K, D)``, ``covariances`` ``(K, D, D)`` (float64)."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    def __post_init__(self):
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covariances.shape != (k, d, d):
            raise ValueError(
                f"weights {tuple(self.weights.shape)}, means {tuple(self.means.shape)} and covariances "
                f"{tuple(self.covariances.shape)} must be (K,), (K, D) and (K, D, D)"
            )
        if not torch.isclose(self.weights.sum(), torch.tensor(1.0, dtype=self.weights.dtype)):
            raise ValueError(f"mixture weights must sum to 1, got {float(self.weights.sum())}")

    def sample(self, count: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        component = torch.multinomial(self.weights, count, replacement=True, generator=generator)
        white = torch.randn(count, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        roots = torch.linalg.cholesky(self.covariances)
        return self.means[component] + torch.einsum("nij,nj->ni", roots[component], white)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log Σ_i π_i N(x; μ_i, Σ_i)`` per row of ``x`` ``(N, D)`` (float64, by logsumexp)."""
        components = MultivariateNormal(self.means, self.covariances).log_prob(x.double()[:, None, :])  # (N, K)
        return torch.logsumexp(self.weights.log() + components, dim=1)

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        centred = self.means - self.mean()
        spread = torch.einsum("k,ki,kj->ij", self.weights, centred, centred)
        return (self.weights[:, None, None] * self.covariances).sum(0) + spread

    def denoiser(self, process: DiffusionProcess, noise_covariance: torch.Tensor) -> Callable:
        """The exact ``ŷ_0 = E[x_0 | x_t]`` (module docstring) as ``denoise_fn(x_t, t)``."""

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            alpha, sigma = process.levels(float(t[0]))
            marginal = alpha**2 * self.covariances + sigma**2 * noise_covariance  # (K, D, D)
            centred = x.double()[:, None, :] - alpha * self.means  # (N, K, D)
            solved = torch.linalg.solve(marginal, centred.transpose(0, 1).transpose(1, 2))  # (K, D, N)
            mahalanobis = (centred.transpose(0, 1) * solved.transpose(1, 2)).sum(-1)  # (K, N)
            log_w = self.weights.log()[:, None] - 0.5 * (mahalanobis + torch.logdet(marginal)[:, None])
            w = torch.softmax(log_w, dim=0)  # (K, N)
            means = self.means[:, None, :] + alpha * torch.einsum("kij,kjn->kni", self.covariances, solved)
            return (w[..., None] * means).sum(0).to(x.dtype)

        return denoise


def two_mode_mixture() -> GaussianMixture:
    """The toy of the tests and ``experiments/sbdm_toy.py``: weights 0.3 / 0.7, modes at (-2, 0) and (1.5, 1)."""
    return GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-2.0, 0.0], [1.5, 1.0]], dtype=torch.float64),
        torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.5, -0.2], [-0.2, 0.4]]], dtype=torch.float64),
    )


COLOURED_ROOT_2D = torch.tensor([[1.0, 0.4], [0.4, 0.6]], dtype=torch.float64)
"""``Q`` of the toy's coloured prior (correlated, anisotropic noise)."""
