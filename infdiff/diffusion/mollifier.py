"""The Gaussian mollifier ``T`` of ∞-Diff, applied in the DCT domain at any resolution.

∞-Diff (Bond-Taylor & Willcocks 2024, §3) diffuses mollified states ``x_t = T(sqrt(ᾱ_t) x_0 +
sqrt(1 - ᾱ_t) ξ)`` where ``T`` is convolution with a Gaussian.  Under half-sample symmetric
boundary conditions that convolution is diagonal in the DCT-II basis, with gain

    g(k_h, k_w) = exp(-(π σ_h k_h)^2 / 2 - (π σ_w k_w)^2 / 2),

``σ_h = std / H_train`` and ``σ_w = std / W_train`` being the standard deviation in unit-square
units (``std`` is given in pixels of the training grid).  Because ``g`` depends only on the
DCT index ``k``, the same operator applied to a grid ``r`` times finer blurs with ``r * std``
pixels: the same physical width, which is what lets a model trained at one resolution be
sampled at another.  As a noise prior (:class:`~infdiff.diffusion.priors.NoisePrior`, registered as
``"mollifier"``) it is ``C^{1/2} = T``: ∞-Diff's noise ``η = T ξ`` has covariance ``T T*``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from infdiff.diffusion.dct import dct2, idct2
from infdiff.diffusion.priors import PRIORS, NoisePrior, diagonal_gaussian_log_prob
from infdiff.ops.grid import Size, as_size

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _axis_log_gains(size: Size, sigma: Tuple[float, float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``-(π σ k)^2 / 2`` over the DCT indices of each axis (float64)."""
    return tuple(-0.5 * (math.pi * s * torch.arange(n, dtype=torch.float64)) ** 2 for n, s in zip(size, sigma))


@functools.lru_cache(maxsize=64)
def _gaussian_gain(size: Size, sigma: Tuple[float, float], device, dtype: torch.dtype) -> torch.Tensor:
    """``exp(-(π σ_h k_h)^2 / 2 - (π σ_w k_w)^2 / 2)`` over DCT indices, built in float64 on the CPU and cast.

    Cached per arguments; callers must not modify the result in place.
    """
    g_h, g_w = (torch.exp(log_gain) for log_gain in _axis_log_gains(size, sigma))
    return (g_h.unsqueeze(1) * g_w.unsqueeze(0)).to(device=device, dtype=dtype)


@PRIORS.register("mollifier")
@dataclass(frozen=True)
class GaussianMollifier(NoisePrior):
    """Gaussian blur ``T`` of ``std`` training-grid pixels; linear and self-adjoint; ``std == 0`` is the identity.

    ``train_size`` is the training grid ``(H, W)`` (or an int for square grids); it converts
    ``std`` to unit-square units and may be omitted only for the identity.  ``noise_grid`` is
    that of every prior (:func:`~infdiff.diffusion.priors.draw_white_noise`); ``inv_snr`` is the
    Wiener regulariser of the inverse (:meth:`wiener_inverse`; ∞-Diff uses 0.05).
    """

    std: float = 1.0
    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None
    inv_snr: float = 0.05

    def __post_init__(self):
        if not self.std >= 0:
            raise ValueError(f"mollifier std must be >= 0 (in training-grid pixels), got {self.std!r}")
        if not self.inv_snr >= 0:
            raise ValueError(f"inv_snr must be >= 0, got {self.inv_snr!r}")
        self._check_grids()
        if self.train_size is None and self.std > 0:
            raise ValueError(
                f"GaussianMollifier(std={self.std}) needs train_size, the training grid (H, W), to "
                "express std in unit-square units; pass train_size=... or use std=0 for the identity"
            )

    @property
    def is_identity(self) -> bool:
        return self.std == 0

    def gain(self, size: Size, device=None, dtype=torch.float32) -> torch.Tensor:
        """DCT-domain gain ``g(k_h, k_w)`` ``(H, W)`` for a grid of ``size`` (module docstring)."""
        size = as_size(size)
        if self.is_identity:
            return torch.ones(size, device=device, dtype=dtype)
        h0, w0 = self.train_size
        return _gaussian_gain(size, (self.std / h0, self.std / w0), device, dtype)

    def log_gain(self, size: Size) -> torch.Tensor:
        """``log g(k_h, k_w)`` ``(H, W)`` (float64), exact where ``g`` itself underflows."""
        size = as_size(size)
        if self.is_identity:
            return torch.zeros(size, dtype=torch.float64)
        h0, w0 = self.train_size
        log_h, log_w = _axis_log_gains(size, (self.std / h0, self.std / w0))
        return log_h.unsqueeze(1) + log_w.unsqueeze(0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, r² T T)``: ``T`` has the DCT gains ``g > 0``, so on every grid the DCT coefficients are
        independent ``N(0, (r g)²)`` (the density is steep: high modes are damped by ``exp(-(π σ k)²/2)``)."""
        log_std = math.log(self.noise_scale(x.shape))
        if self.is_identity:
            return diagonal_gaussian_log_prob(x, log_std)
        return diagonal_gaussian_log_prob(dct2(x.double()), self.log_gain(x.shape[-2:]).to(x.device) + log_std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``T x = IDCT(DCT(x) · g)`` over the last two dims of ``x`` ``(..., H, W)``, any ``H, W``."""
        return self._filter(x, lambda g: g)

    def apply_sqrt_cov(self, x: torch.Tensor) -> torch.Tensor:
        """``C^{1/2} x = T x``."""
        return self(x)

    def apply_inverse_sqrt_cov(self, x: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        """:meth:`wiener_inverse` with ``inv_snr`` (default: this prior's)."""
        return self.wiener_inverse(x, self.inv_snr if inv_snr is None else inv_snr)

    def wiener_inverse(self, x: torch.Tensor, inv_snr: float = 0.05) -> torch.Tensor:
        """Regularised inverse ``IDCT(DCT(x) · g / (g^2 + inv_snr^2))`` for displaying samples.

        Wiener deconvolution (Wiener 1949) with a flat noise-to-signal ratio ``inv_snr``: samplers
        return the mollified ``T x_0``, and this recovers ``x_0`` stably where ``g`` is small.
        Identity when ``std == 0``.
        """
        if not inv_snr >= 0:
            raise ValueError(f"inv_snr must be >= 0, got {inv_snr!r}")
        return self._filter(x, lambda g: g / (g * g + inv_snr**2))

    def _filter(self, x: torch.Tensor, response: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Multiply the DCT coefficients of ``x`` by ``response(g)``, in float32 or better."""
        if self.is_identity:
            return x
        compute_dtype = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            coeffs = dct2(x.to(compute_dtype))
            gain = response(self.gain(x.shape[-2:], x.device, compute_dtype))
            return idct2(coeffs * gain).to(x.dtype)
