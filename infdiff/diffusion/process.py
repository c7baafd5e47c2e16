"""The forward (noising) process of ∞-Diff on mollified states."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from infdiff.diffusion.mollifier import GaussianMollifier
from infdiff.diffusion.schedules import Schedule
from infdiff.ops.grid import Size, as_size, white_noise_scale


def expand_like(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example ``values`` ``(B,)`` (or a scalar) as ``(B, 1, ..., 1)`` in ``like``'s dtype and device."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.dim() == 0:
        return values
    return values.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True, eq=False)
class MollifiedDiffusion:
    """DDPM on mollified states ``y = T x`` with coloured noise ``η = T ξ``.

    ∞-Diff (Bond-Taylor & Willcocks 2024, §3):
    ``x_t = T(sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ξ) = sqrt(ᾱ_t) y_0 + sqrt(1 - ᾱ_t) η``.
    On a grid ``r`` times finer than ``train_size`` the white noise ``ξ`` is drawn with standard
    deviation ``sqrt(r_h r_w)`` (:func:`infdiff.ops.grid.white_noise_scale`), so it is the same
    noise *function*; every noise draw goes through :meth:`white_noise`.  ``train_size``
    defaults to the mollifier's; with neither (vector data such as latents) noise is unscaled.
    With the identity mollifier this is a plain DDPM.

    ``noise_grid`` (for sampling) draws every ``ξ`` on that grid and averages it over the cells
    of the requested one (see :meth:`white_noise`): runs at several resolutions with the same
    generator seed then see discretisations of one noise function rather than independent draws.
    """

    schedule: Schedule
    mollifier: GaussianMollifier = field(default_factory=lambda: GaussianMollifier(0.0))
    train_size: Optional[Size] = None
    noise_grid: Optional[Size] = None

    def __post_init__(self):
        train_size = self.mollifier.train_size if self.train_size is None else as_size(self.train_size)
        if self.mollifier.train_size not in (None, train_size):
            raise ValueError(
                f"train_size {train_size} differs from the mollifier's {self.mollifier.train_size}; "
                "pass the same training grid to both (or omit it here)"
            )
        object.__setattr__(self, "train_size", train_size)
        if self.noise_grid is not None:
            if train_size is None:
                raise ValueError("noise_grid needs a training grid (train_size or a mollifier with one)")
            object.__setattr__(self, "noise_grid", as_size(self.noise_grid))

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``ᾱ_t`` at original timestep ids ``t`` ``(B,)``, broadcastable against ``like``."""
        return expand_like(self.schedule.alphas_cumprod_at(t), like)

    def mollify(self, x: torch.Tensor) -> torch.Tensor:
        """``T x``."""
        return self.mollifier(x)

    def noise_scale(self, shape: Sequence[int]) -> float:
        """Standard deviation of per-pixel white noise on a grid of ``shape[-2:]`` (1 at ``train_size``)."""
        if self.train_size is None:
            return 1.0
        if len(shape) < 2:
            raise ValueError(f"expected a grid shape (..., H, W), got {tuple(shape)}")
        return white_noise_scale(tuple(shape[-2:]), self.train_size)

    def white_noise(
        self,
        shape: Sequence[int],
        generator: Optional[torch.Generator] = None,
        device: Union[str, torch.device, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> torch.Tensor:
        """White noise ``ξ`` of ``shape``, already scaled by :meth:`noise_scale`.

        With ``noise_grid = (rH, rW)`` for integers ``r`` the noise is drawn on that grid and
        each ``r × r`` block is averaged: the mean of ``r²`` independent draws of standard
        deviation ``r · s`` has standard deviation ``s`` (:meth:`noise_scale`), so the result has
        the distribution of a direct draw and is the cell average of the finer draw.
        """
        shape = tuple(shape)
        draw_shape = shape
        if self.noise_grid is not None:
            if len(shape) < 2 or any(fine % n for fine, n in zip(self.noise_grid, shape[-2:])):
                raise ValueError(f"noise_grid {self.noise_grid} must be an integer multiple of the sampled grid "
                                 f"{shape[-2:]} (shape {shape}); choose a common multiple of every sampling size")
            draw_shape = (*shape[:-2], *self.noise_grid)
        noise = torch.randn(draw_shape, generator=generator, device=device, dtype=dtype) * self.noise_scale(draw_shape)
        if draw_shape == shape:
            return noise
        factors = [fine // n for fine, n in zip(self.noise_grid, shape[-2:])]
        return F.avg_pool2d(noise.reshape(-1, 1, *self.noise_grid), kernel_size=factors).reshape(shape)

    def sample_noise(
        self,
        shape: Sequence[int],
        generator: Optional[torch.Generator] = None,
        device: Union[str, torch.device, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> torch.Tensor:
        """Mollified noise ``η = T ξ`` of ``shape``; also the initial state ``x_T`` of samplers."""
        return self.mollify(self.white_noise(shape, generator, device, dtype))

    def noise_like(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Mollified noise with the shape, device and dtype of ``x``."""
        return self.sample_noise(x.shape, generator, x.device, x.dtype)

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """``x_t = T(sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ξ)`` on the full grid (∞-Diff §3; Ho et al. 2020, eq. 4).

        ``x0`` is ``(B, C, H, W)`` (or ``(B, D)`` for vector data), ``t`` ``(B,)`` original
        timestep ids, ``noise`` the white noise ``ξ`` (drawn with :meth:`white_noise` if omitted).
        """
        if noise is None:
            noise = self.white_noise(x0.shape, generator, x0.device, x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
        alpha_bar = self.alpha_bar(t, x0)
        return self.mollify(alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise)
