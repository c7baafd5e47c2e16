"""Trace-class Gaussian priors ``N(0, C)`` given by a function of the Laplacian, at any resolution.

Function-space score-based diffusion (Multilevel Diffusion, Hagemann et al. 2023; REFERENCE §2)
diffuses with coloured noise ``η = C^{1/2} ξ`` whose covariance is a negative power of an elliptic
operator, e.g. ``C = (-Δ)^{-s}`` or the Bessel (Matérn) ``C = (τ I - Δ)^{-s}``.  Here ``Δ`` is the
Laplacian of the unit square with Neumann boundaries, whose eigenfunctions are the products
``cos(π k_h u) cos(π k_w v)``, eigenvalues ``λ = π² (k_h² + k_w²)``: exactly the basis of the
orthonormal DCT-II, in which the ∞-Diff mollifier is diagonal too (:mod:`infdiff.diffusion.dct`).
``C^{1/2}`` multiplies the DCT coefficients by ``q(λ)``.

Because mode ``(k_h, k_w)`` is the same function on every grid, and the white noise is scaled per
grid (:func:`~infdiff.diffusion.priors.draw_white_noise`: per-pixel variance ``r²`` on a grid ``r``
times finer than ``train_size``), a sample's per-pixel variance is ``Σ_k q(λ_k)² / N_train`` over
the grid's modes: for a trace-class ``C`` (``Σ q² < ∞``, i.e. ``s > 1`` in two dimensions) it
converges as the grid is refined, and every resolution shows the same random field.  (The
published Multilevel Diffusion code draws unscaled per-pixel noise, so its fields' per-pixel
standard deviation falls ~1/n with the resolution.)  ``q`` is normalised so that the per-pixel
variance is 1 on the training grid.
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from infdiff.diffusion.dct import dct2, idct2
from infdiff.diffusion.priors import PRIORS, NoisePrior
from infdiff.ops.grid import Size, as_size


def laplacian_eigenvalues(size: Size) -> torch.Tensor:
    """``λ = π² (k_h² + k_w²)`` ``(H, W)`` (float64) of the Neumann Laplacian's modes on a grid of ``size``."""
    h, w = as_size(size)
    k_h, k_w = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    return math.pi**2 * (k_h[:, None] ** 2 + k_w[None, :] ** 2)


class SpectralPrior(NoisePrior):
    """A prior whose ``C^{1/2}`` is ``q(-Δ)``: subclasses define :meth:`multiplier` ``q(λ)`` (float64)."""

    @abc.abstractmethod
    def multiplier(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        """``q(λ) > 0`` for the Laplacian eigenvalues ``λ >= 0`` (float64)."""

    def _check_spectral(self) -> None:
        self._check_grids()
        if self.train_size is None:
            raise ValueError(
                f"{type(self).__name__} needs train_size, the grid on which its samples have unit variance"
            )

    @functools.cached_property
    def normaliser(self) -> float:
        """``1 / sqrt(Σ q² / N)`` over the training grid's modes: unit per-pixel variance there."""
        q = self.multiplier(laplacian_eigenvalues(self.train_size))
        return float(1.0 / q.square().mean().sqrt())

    def gain(self, size: Size, device=None, dtype=torch.float32) -> torch.Tensor:
        """The normalised ``q(λ)`` over the DCT indices of a grid of ``size``."""
        return _gain(self, as_size(size), torch.device(device or "cpu"), dtype)

    def apply_sqrt_cov(self, x: torch.Tensor) -> torch.Tensor:
        """``C^{1/2} x``: DCT, times ``q(λ)``, inverse DCT (in float32 or wider)."""
        return self._filter(x, lambda q: q)

    def apply_inverse_sqrt_cov(self, x: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        """``C^{-1/2} x`` (``q > 0``, so exact); with ``inv_snr`` the Wiener-regularised ``q / (q² + inv_snr²)``."""
        if inv_snr is None:
            return self._filter(x, lambda q: 1.0 / q)
        return self._filter(x, lambda q: q / (q * q + inv_snr**2))

    def _filter(self, x: torch.Tensor, response) -> torch.Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            coeffs = dct2(x.to(work))
            return idct2(coeffs * response(self.gain(x.shape[-2:], x.device, work))).to(x.dtype)


@functools.lru_cache(maxsize=64)
def _gain(prior: SpectralPrior, size: Tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    q = prior.multiplier(laplacian_eigenvalues(size)) * prior.normaliser
    return q.to(device=device, dtype=dtype)


def _check_power(s: float) -> None:
    if not s > 1:
        raise ValueError(f"s={s!r}: the covariance is trace class on the unit square only for s > 1")


@PRIORS.register("laplacian")
@dataclass(frozen=True)
class LaplacianPrior(SpectralPrior):
    """``C = (-Δ)^{-s}``: ``q(λ) = λ^{-s/2}``; the constant mode, where ``(-Δ)^{-s}`` is undefined, gets
    the multiplier of the lowest non-constant mode (``λ = π²``)."""

    s: float = 2.0
    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None

    def __post_init__(self):
        _check_power(self.s)
        self._check_spectral()

    def multiplier(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        return eigenvalues.clamp_min(math.pi**2) ** (-self.s / 2)


@PRIORS.register("bessel")
@dataclass(frozen=True)
class BesselPrior(SpectralPrior):
    """The Bessel (Matérn) prior ``C = (τ I - Δ)^{-s}``: ``q(λ) = (τ + λ)^{-s/2}``; ``τ > 0`` sets the
    correlation length (about ``1 / sqrt(τ)`` of the unit square)."""

    s: float = 2.0
    tau: float = 10.0
    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None

    def __post_init__(self):
        _check_power(self.s)
        if not self.tau > 0:
            raise ValueError(f"tau={self.tau!r}: expected a positive shift of the Laplacian")
        self._check_spectral()

    def multiplier(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        return (self.tau + eigenvalues) ** (-self.s / 2)
