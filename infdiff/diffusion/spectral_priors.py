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

Multilevel Diffusion also uses a fixed random spectral convolution on truncated Fourier modes as
``Q``, alone or added to a Laplacian-type one.  Here, in the same DCT basis so that they stay
resolution-consistent, :class:`RandomSpectralPrior` (``"fno"``) has a fixed random ``q(k_h, k_w)``
on the lowest ``modes × modes`` indices and 0 elsewhere (finite rank), and :class:`CombinedPrior`
(``"combined"``) is ``q̂_laplacian + weight · q̂_fno`` (``q̂``: each normalised as above), positive
on every mode.  These define ``q`` per mode index (:meth:`SpectralPrior.mode_multiplier`) rather
than as a function of ``λ``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from infdiff.diffusion.dct import dct2, idct2
from infdiff.diffusion.priors import PRIORS, NoisePrior, diagonal_gaussian_log_prob
from infdiff.ops.grid import Size, as_size


def laplacian_eigenvalues(size: Size) -> torch.Tensor:
    """``λ = π² (k_h² + k_w²)`` ``(H, W)`` (float64) of the Neumann Laplacian's modes on a grid of ``size``."""
    h, w = as_size(size)
    k_h, k_w = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    return math.pi**2 * (k_h[:, None] ** 2 + k_w[None, :] ** 2)


class SpectralPrior(NoisePrior):
    """A prior whose ``C^{1/2}`` multiplies DCT mode ``(k_h, k_w)`` by ``q``: subclasses define either
    :meth:`multiplier` ``q(λ)``, making ``C^{1/2} = q(-Δ)``, or :meth:`mode_multiplier` directly (float64)."""

    def multiplier(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        """``q(λ) > 0`` for the Laplacian eigenvalues ``λ >= 0`` (float64), for priors that are functions of ``-Δ``."""
        raise NotImplementedError(f"{type(self).__name__} defines q per mode (mode_multiplier), not as a function of λ")

    def mode_multiplier(self, size: Size) -> torch.Tensor:
        """Unnormalised ``q(k_h, k_w) >= 0`` ``(H, W)`` (float64) over the DCT indices of a grid of ``size``;
        by default ``q(λ_k)`` of :meth:`multiplier`."""
        return self.multiplier(laplacian_eigenvalues(size))

    def _check_spectral(self) -> None:
        self._check_grids()
        if self.train_size is None:
            raise ValueError(
                f"{type(self).__name__} needs train_size, the grid on which its samples have unit variance"
            )

    @functools.cached_property
    def normaliser(self) -> float:
        """``1 / sqrt(Σ q² / N)`` over the training grid's modes: unit per-pixel variance there."""
        q = self.mode_multiplier(self.train_size)
        return float(1.0 / q.square().mean().sqrt())

    def gain(self, size: Size, device=None, dtype=torch.float32) -> torch.Tensor:
        """The normalised ``q`` over the DCT indices of a grid of ``size``."""
        return _gain(self, as_size(size), torch.device(device or "cpu"), dtype)

    def apply_sqrt_cov(self, x: torch.Tensor) -> torch.Tensor:
        """``C^{1/2} x``: DCT, times ``q``, inverse DCT (in float32 or wider)."""
        return self._filter(x, lambda q: q)

    def apply_inverse_sqrt_cov(self, x: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        """``C^{-1/2} x`` (``q > 0``, so exact); with ``inv_snr`` the Wiener-regularised ``q / (q² + inv_snr²)``."""
        if inv_snr is None:
            return self._filter(x, lambda q: 1.0 / q)
        return self._filter(x, lambda q: q / (q * q + inv_snr**2))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, r² C)``: on every grid the orthonormal DCT coefficients of a draw are independent
        ``N(0, (r q_k)²)``, ``r`` the grid's white-noise standard deviation (module docstring of
        :mod:`~infdiff.diffusion.priors`)."""
        log_std = self.gain(x.shape[-2:], x.device, torch.float64).log() + math.log(self.noise_scale(x.shape))
        return diagonal_gaussian_log_prob(dct2(x.double()), log_std)

    def _filter(self, x: torch.Tensor, response) -> torch.Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            coeffs = dct2(x.to(work))
            return idct2(coeffs * response(self.gain(x.shape[-2:], x.device, work))).to(x.dtype)


@functools.lru_cache(maxsize=64)
def _gain(prior: SpectralPrior, size: Tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    q = prior.mode_multiplier(size) * prior.normaliser
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


@PRIORS.register("fno")
@dataclass(frozen=True)
class RandomSpectralPrior(SpectralPrior):
    """Multilevel Diffusion's random spectral ``Q`` in the DCT basis: ``q(k_h, k_w)`` uniform in ``(0, 1]``, fixed
    by ``seed``, for ``k_h, k_w < modes`` and 0 for the other modes.

    Mode ``(k_h, k_w)`` gets the same number at every resolution, so every grid with at least ``modes``
    indices per axis shows the same random field with the same per-pixel variance (1 on the training grid,
    which must hold all the modes).  A coarser grid keeps the modes it has (``k < H``, ``k < W``): the
    field's lower modes only, with a smaller variance.  ``C`` has finite rank ``modes²`` (trace class):
    ``C^{-1/2}`` exists only Wiener-regularised and there is no density.
    """

    modes: int = 8
    seed: int = 0
    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None

    def __post_init__(self):
        if isinstance(self.modes, bool) or not isinstance(self.modes, int) or self.modes < 1:
            raise ValueError(f"modes={self.modes!r}: expected a positive int (modes kept per axis)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r}: expected an int >= 0")
        self._check_spectral()
        if self.modes > min(self.train_size):
            raise ValueError(
                f"modes={self.modes} exceeds the training grid {self.train_size}: its DCT has only "
                f"{min(self.train_size)} modes per axis, and the unit variance is set there"
            )

    @functools.cached_property
    def mode_values(self) -> torch.Tensor:
        """The fixed ``q(k_h, k_w)``, ``k_h, k_w < modes`` (float64): ``1 - U[0, 1)`` from a generator seeded ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        return 1.0 - torch.rand((self.modes, self.modes), generator=generator, dtype=torch.float64)

    def mode_multiplier(self, size: Size) -> torch.Tensor:
        h, w = as_size(size)
        q = torch.zeros(h, w, dtype=torch.float64)
        kept_h, kept_w = min(h, self.modes), min(w, self.modes)
        q[:kept_h, :kept_w] = self.mode_values[:kept_h, :kept_w]
        return q

    def apply_inverse_sqrt_cov(self, x: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        """The Wiener-regularised ``q / (q² + inv_snr²)`` (0 off the kept modes); ``C^{-1/2}`` itself does not exist."""
        if inv_snr is None:
            raise self._singular("C^(-1/2) needs inv_snr (the Wiener-regularised inverse)")
        return super().apply_inverse_sqrt_cov(x, inv_snr)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise self._singular("N(0, C) has no density")

    def _singular(self, what: str) -> ValueError:
        return ValueError(
            f"RandomSpectralPrior (prior 'fno', modes={self.modes}) has finite rank {self.modes}²: {what}; "
            "the 'combined' prior adds a Laplacian-type part that makes it invertible"
        )


@PRIORS.register("combined")
@dataclass(frozen=True)
class CombinedPrior(SpectralPrior):
    """Multilevel Diffusion's combined ``Q`` (Laplacian-type plus a scaled random spectral part) in the DCT basis:
    ``q = q̂_laplacian(s) + weight · q̂_fno(modes, seed)``, each part normalised to unit per-pixel variance on
    the training grid (so ``weight`` is their amplitude ratio) and the sum normalised again.

    ``q > 0`` on every mode (``weight >= 0``), so ``C^{-1/2}`` and the density exist; trace class for ``s > 1``.
    """

    s: float = 2.0
    modes: int = 8
    seed: int = 0
    weight: float = 1.0
    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None
    parts: Tuple[LaplacianPrior, RandomSpectralPrior] = field(init=False, repr=False, compare=False)
    """The Laplacian-type and the random spectral part on this training grid (built and checked at construction)."""

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"weight={self.weight!r}: expected a weight >= 0 of the random spectral part")
        self._check_spectral()
        parts = LaplacianPrior(self.s, self.train_size), RandomSpectralPrior(self.modes, self.seed, self.train_size)
        object.__setattr__(self, "parts", parts)

    def mode_multiplier(self, size: Size) -> torch.Tensor:
        laplacian, random = self.parts
        return laplacian.gain(size, dtype=torch.float64) + self.weight * random.gain(size, dtype=torch.float64)
