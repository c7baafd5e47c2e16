"""The Vendi score (Friedman & Dieng 2023): the effective number of distinct items in a set.

With the cosine kernel ``K_ij = x̂_iᵀ x̂_j`` (rows normalised to unit length) and ``λ`` the eigenvalues
of ``K / n``, the score of order ``q = 1`` is ``exp(−Σ λ log λ)``: 1 for ``n`` identical items and ``n``
for ``n`` orthogonal ones (dgm-eval's ``compute_vendi_score``, used by Multilevel Diffusion).  The
non-zero eigenvalues of ``K / n`` are those of ``X̂ᵀ X̂ / n``, whichever of the two is smaller is used.
"""

from __future__ import annotations

import torch


def vendi_score(features: torch.Tensor) -> float:
    """The order-1 Vendi score of ``features`` ``(n, d)`` with the cosine kernel."""
    x = features.flatten(1).to(torch.float64)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gram = (x @ x.T if len(x) <= x.shape[1] else x.T @ x) / len(x)
    values = torch.linalg.eigvalsh(gram).clamp_min(0)
    values = values[values > 0]
    return float(torch.exp(-(values * values.log()).sum()))
