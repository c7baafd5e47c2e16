"""The Fréchet distance between Gaussians fitted to two feature sets (FID, Heusel et al. 2017).

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}

``tr (Σ₁ Σ₂)^{1/2}`` is computed as ``Σ √λ`` over the eigenvalues of the symmetric PSD matrix
``Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` (which has the eigenvalues of ``Σ₁ Σ₂``), in float64 with symmetric
eigendecompositions: no complex parts to discard and no singular-matrix offsets, unlike
``scipy.linalg.sqrtm`` of the non-symmetric product.
"""

from __future__ import annotations

import torch

from infdiff.metrics.statistics import FeatureStatistics


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    m = matrix.to(torch.float64)
    values, vectors = torch.linalg.eigh((m + m.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``tr (Σ₁ Σ₂)^{1/2}`` for symmetric PSD ``Σ₁``, ``Σ₂`` (module docstring)."""
    root = sqrtm_psd(sigma1)
    inner = root @ sigma2.to(torch.float64) @ root
    return float(torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum())


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}`` (float64)."""
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    mean_term = float((mu1 - mu2).square().sum())
    return mean_term + float(sigma1.trace() + sigma2.trace()) - 2 * trace_sqrt_product(sigma1, sigma2)


def fid(samples: FeatureStatistics, reference: FeatureStatistics) -> float:
    """The FID of two sets' :class:`FeatureStatistics`."""
    return frechet_distance(samples.mean, samples.covariance, reference.mean, reference.covariance)
