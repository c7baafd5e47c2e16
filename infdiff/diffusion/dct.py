"""Orthonormal two-dimensional DCT-II over the last two dimensions of a tensor.

The DCT-II diagonalises convolution with symmetric kernels under half-sample symmetric
boundary conditions, which is what makes the Gaussian mollifier of ∞-Diff a diagonal
operator (Bond-Taylor & Willcocks 2024, §3; Martucci 1994, "Symmetric convolution and the
discrete sine and cosine transforms").
"""

from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=64)
def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``C`` of shape ``(n, n)``.

    ``C[k, m] = sqrt(2 / n) * c_k * cos(pi * (m + 1/2) * k / n)`` with ``c_0 = 1 / sqrt(2)`` and
    ``c_k = 1`` otherwise (Ahmed, Natarajan & Rao 1974), so ``C @ C.T = I`` and the inverse
    transform (DCT-III) is ``C.T``.  Built in float64 and cast, cached per ``(n, device, dtype)``;
    callers must not modify the returned tensor in place.
    """
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    m = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    c = torch.cos(math.pi * (m + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(device=device, dtype=dtype)


def _matrices(x: torch.Tensor):
    if x.dim() < 2:
        raise ValueError(f"expected a tensor (..., H, W) with at least 2 dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}")
    h, w = x.shape[-2:]
    return dct_matrix(h, x.device, x.dtype), dct_matrix(w, x.device, x.dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of ``x`` ``(..., H, W)``: ``X = C_H x C_W^T``."""
    c_h, c_w = _matrices(x)
    return c_h @ x @ c_w.transpose(0, 1)


def idct2(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (2-D DCT-III): ``x = C_H^T X C_W``."""
    c_h, c_w = _matrices(coeffs)
    return c_h.transpose(0, 1) @ coeffs @ c_w
