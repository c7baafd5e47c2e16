"""Gaussian noise priors ``N(0, C)`` over functions on the unit square, at any resolution.

A prior is a covariance operator ``C = C^{1/2} C^{1/2}`` acting on white noise.  Every prior
draws through one discretisation of spatial white noise ``ξ``: on a grid ``r`` times finer than
``train_size`` a pixel averages ``1 / r²`` of the cell area, so its standard deviation is ``r``
(:func:`infdiff.ops.grid.white_noise_scale`), and the same random *function* is represented at
every resolution (∞-Diff, Bond-Taylor & Willcocks 2024, sampling at other resolutions; the
discretisation the Multilevel Diffusion code lacks, REFERENCE §2).  A sample is ``C^{1/2} ξ``.

Implementations: :class:`WhiteNoise` (``C = I``) here and the ∞-Diff mollifier
(:class:`~infdiff.diffusion.mollifier.GaussianMollifier`, ``C^{1/2} = T``); they are registered in
:data:`PRIORS` by the names a config's ``prior.name`` uses.

On a grid a draw is the discrete Gaussian ``N(0, C_h)``, ``C_h = r² C^{1/2} C^{1/2}`` with ``r`` the
grid's white-noise standard deviation; priors diagonal in an orthonormal basis give its exact
log-density (:meth:`NoisePrior.log_prob`) through :func:`diagonal_gaussian_log_prob`, with
``log det C_h = 2 Σ_k log(r q_k)`` over the per-mode standard deviations ``r q_k``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from infdiff.ops.grid import Size, as_size, white_noise_scale
from infdiff.ops.sparse_image import SparseImage, gather_pixels
from infdiff.registry import Registry

PRIORS = Registry("prior")
Device = Union[str, torch.device, None]
Gen = Optional[torch.Generator]
DType = Optional[torch.dtype]
Shape = Sequence[int]


def white_noise_std(shape: Sequence[int], train_size: Optional[Size]) -> float:
    """Per-pixel standard deviation of white noise on the grid ``shape[-2:]`` (1 at ``train_size``;
    1 everywhere without one, for vector data such as latents)."""
    if train_size is None:
        return 1.0
    if len(shape) < 2:
        raise ValueError(f"expected a grid shape (..., H, W), got {tuple(shape)}")
    return white_noise_scale(tuple(shape[-2:]), train_size)


def draw_white_noise(
    shape: Shape,
    train_size: Optional[Size],
    noise_grid: Optional[Size],
    generator: Gen = None,
    device: Device = None,
    dtype: DType = None,
) -> torch.Tensor:
    """White noise ``ξ`` of ``shape`` with the per-pixel standard deviation :func:`white_noise_std`.

    With ``noise_grid = (rH, rW)`` for integers ``r`` the noise is drawn on that grid and each
    ``r × r`` block is averaged: the mean of ``r²`` independent draws of standard deviation
    ``r · s`` has standard deviation ``s``, so the result has the distribution of a direct draw
    and is the cell average of the finer draw (one noise function at every resolution).
    """
    shape = tuple(shape)
    draw_shape = shape
    if noise_grid is not None:
        if len(shape) < 2 or any(fine % n for fine, n in zip(noise_grid, shape[-2:])):
            raise ValueError(
                f"noise_grid {noise_grid} must be an integer multiple of the sampled grid "
                f"{shape[-2:]} (shape {shape}); choose a common multiple of every sampling size"
            )
        draw_shape = (*shape[:-2], *noise_grid)
    noise = torch.randn(draw_shape, generator=generator, device=device, dtype=dtype)
    noise = noise * white_noise_std(draw_shape, train_size)
    if draw_shape == shape:
        return noise
    factors = [fine // n for fine, n in zip(noise_grid, shape[-2:])]
    return F.avg_pool2d(noise.reshape(-1, 1, *noise_grid), kernel_size=factors).reshape(shape)


def diagonal_gaussian_log_prob(values: torch.Tensor, log_std) -> torch.Tensor:
    """``Σ log N(v; 0, exp(log_std)²)`` over all but the first dimension of ``values``, as ``(B,)`` float64.

    ``log_std`` (a number or a tensor broadcasting against ``values``) is the log standard deviation of
    each coordinate: ``-½ Σ [(v / std)² + 2 log std + log 2π]``.
    """
    values = values.double()
    log_std = torch.as_tensor(log_std, dtype=torch.float64, device=values.device)
    terms = (values * torch.exp(-log_std)).square() + 2 * log_std + math.log(2 * math.pi)
    return -0.5 * terms.flatten(1).sum(1)


class NoisePrior(abc.ABC):
    """``N(0, C)`` over functions: white noise, ``C^{1/2}``, ``C`` and (where defined) inverses.

    Implementations are frozen dataclasses with the fields ``train_size`` (the grid on which
    white noise has unit per-pixel variance; ``None`` for vector data) and ``noise_grid``
    (optional: draw every white noise on this finer grid and average it down, see
    :func:`draw_white_noise`), and define :meth:`apply_sqrt_cov`.
    """

    train_size: Optional[Size]
    noise_grid: Optional[Size]

    def _check_grids(self) -> None:
        """Normalise ``train_size`` and ``noise_grid`` to ``(H, W)`` (for ``__post_init__``)."""
        if self.train_size is not None:
            object.__setattr__(self, "train_size", as_size(self.train_size))
        if self.noise_grid is not None:
            if self.train_size is None:
                raise ValueError("noise_grid needs a training grid (train_size)")
            object.__setattr__(self, "noise_grid", as_size(self.noise_grid))

    @abc.abstractmethod
    def apply_sqrt_cov(self, x: torch.Tensor) -> torch.Tensor:
        """``C^{1/2} x`` for a field ``x`` ``(..., H, W)`` (or a vector batch ``(B, D)``)."""

    def apply_cov(self, x: torch.Tensor) -> torch.Tensor:
        """``C x = C^{1/2} C^{1/2} x`` (every prior here has a self-adjoint ``C^{1/2}``)."""
        return self.apply_sqrt_cov(self.apply_sqrt_cov(x))

    def apply_inverse_sqrt_cov(self, x: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        """``C^{-1/2} x``, regularised by ``inv_snr`` where the prior defines it; else an error."""
        raise NotImplementedError(f"{type(self).__name__} defines no inverse of C^(1/2)")

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, C_h)`` ``(B,)`` (float64), the exact density of a draw of :meth:`sample` on the grid of
        ``x`` (module docstring), where the prior defines one; else an error."""
        raise NotImplementedError(f"{type(self).__name__} defines no log-density")

    def noise_scale(self, shape: Sequence[int]) -> float:
        """Per-pixel standard deviation of white noise on a grid of ``shape[-2:]``."""
        return white_noise_std(shape, self.train_size)

    def with_noise_grid(self, noise_grid: Optional[Union[int, Size]]) -> "NoisePrior":
        """This prior with every white noise drawn on ``noise_grid`` and averaged down."""
        return dataclasses.replace(self, noise_grid=noise_grid)

    def white_noise(
        self, shape: Shape, generator: Gen = None, device: Device = None, dtype: DType = None
    ) -> torch.Tensor:
        """White noise ``ξ`` of ``shape``, scaled for its grid (:func:`draw_white_noise`)."""
        return draw_white_noise(shape, self.train_size, self.noise_grid, generator, device, dtype)

    def sample(self, shape: Shape, generator: Gen = None, device: Device = None, dtype: DType = None) -> torch.Tensor:
        """A draw ``η = C^{1/2} ξ`` of ``shape``."""
        return self.apply_sqrt_cov(self.white_noise(shape, generator, device, dtype))

    def sample_like(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A draw with the shape, device and dtype of ``x``."""
        return self.sample(x.shape, generator, x.device, x.dtype)

    def sample_at(
        self,
        points: SparseImage,
        channels: int,
        generator: Optional[torch.Generator] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> SparseImage:
        """The field of a draw at the pixels of ``points`` (``channels`` values each).

        The field is drawn on the whole grid of ``points`` and read at its pixels, which is exact
        for any ``C``; priors with a local ``C^{1/2}`` may draw at the pixels directly.
        """
        shape = (points.batch, channels, *points.size)
        dense = self.sample(shape, generator, points.index.device, dtype or points.values.dtype)
        return points.with_values(gather_pixels(dense, points.index))


@PRIORS.register("white")
@dataclass(frozen=True)
class WhiteNoise(NoisePrior):
    """``C = I``: white noise, scaled per grid so that it is one random function at every resolution."""

    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None

    def __post_init__(self):
        self._check_grids()

    def apply_sqrt_cov(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def apply_inverse_sqrt_cov(self, x: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, r² I)``: independent pixels of the grid's standard deviation ``r``."""
        return diagonal_gaussian_log_prob(x, math.log(self.noise_scale(x.shape)))

    def sample_at(
        self,
        points: SparseImage,
        channels: int,
        generator: Optional[torch.Generator] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> SparseImage:
        """Independent values at the pixels, with the grid's per-pixel scale (drawn on the whole grid
        only with a ``noise_grid``, whose cell averages couple the pixels of a block)."""
        if self.noise_grid is not None:
            return super().sample_at(points, channels, generator, dtype)
        shape = (points.batch, points.num_points, channels)
        values = torch.randn(shape, generator=generator, device=points.index.device, dtype=dtype or points.values.dtype)
        return points.with_values(values * self.noise_scale(points.size))
