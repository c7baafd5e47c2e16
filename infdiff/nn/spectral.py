"""Fourier-space convolutions of the Fourier neural operator (FNO; Li et al., ICLR 2021).

A signal on an ``H x W`` grid is read as samples ``x[n, m] = f(n / H, m / W)`` of a 1-periodic function
on the unit square.  With the "forward"-normalised transform

    F[k, l] = 1 / (H W) * sum_{n, m} x[n, m] exp(-2 pi i (k n / H + l m / W))

``F[k, l]`` approximates the Fourier-series coefficient ``f_hat(k, l)`` whatever the grid, and the
(unnormalised) inverse ``y[n, m] = sum_{k, l} G[k, l] exp(2 pi i (k n / H' + l m / W'))`` evaluates the
function with coefficients ``G`` on any ``H' x W'`` grid.  The spectral convolution

    G[k, l] = sum_i W_io[k, l] F_i[k, l]   for |k| < modes_h, 0 <= l < modes_w,   G = 0 otherwise,

(both signs of the row frequency ``k``; real outputs make negative ``l`` redundant) is therefore an
operator on functions: a band-limited input sampled at 32^2 or 64^2 gives the same output function,
sampled on whichever grid is asked for.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn


class SpectralConv2d(nn.Module):
    """FNO spectral convolution ``x -> IFFT(W * FFT(x))`` on the lowest Fourier modes.

    Args:
        in_channels, out_channels: channel counts.
        modes_h: number of row frequencies kept on each side, ``|k| < modes_h``.
        modes_w: number of column frequencies kept, ``0 <= l < modes_w``.

    The complex weights ``W`` (``in x out x 2 modes_h x modes_w``; rows ``:modes_h`` hold ``k >= 0``,
    rows ``modes_h:`` hold ``k < 0``) are stored as a real tensor with a trailing (real, imag) axis and
    initialised with ``E|W|^2 = 1 / in_channels``.  Transforms run in float32 and the result is cast
    back to the input dtype.  Input and output grids must be at least ``2 modes_h x 2 modes_w`` so
    every kept mode is representable without aliasing.
    """

    def __init__(self, in_channels: int, out_channels: int, modes_h: int, modes_w: int):
        super().__init__()
        if min(in_channels, out_channels) < 1:
            raise ValueError(f"channels must be positive, got {in_channels} -> {out_channels}")
        if min(modes_h, modes_w) < 1:
            raise ValueError(f"modes must be positive, got ({modes_h}, {modes_w})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes = (modes_h, modes_w)
        std = math.sqrt(1.0 / (2 * in_channels))
        self.weight = nn.Parameter(std * torch.randn(in_channels, out_channels, 2 * modes_h, modes_w, 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"

    def _check_grid(self, size: Tuple[int, int], role: str) -> None:
        mh, mw = self.modes
        if size[0] < 2 * mh or size[1] < 2 * mw:
            raise ValueError(
                f"SpectralConv2d with modes ({mh}, {mw}) needs grids of at least "
                f"{2 * mh}x{2 * mw}, got {role} grid {size[0]}x{size[1]}"
            )

    def forward(self, x: torch.Tensor, out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Apply to ``x`` ``(B, in, H, W)``; the output ``(B, out, H', W')`` is sampled on ``out_size``
        (default ``(H, W)``), i.e. the convolution doubles as band-limited resampling."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SpectralConv2d expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        out_h, out_w = (x.shape[-2], x.shape[-1]) if out_size is None else out_size
        self._check_grid((x.shape[-2], x.shape[-1]), "input")
        self._check_grid((out_h, out_w), "output")
        mh, mw = self.modes
        spectrum = torch.fft.rfft2(x.float(), norm="forward")
        low = torch.cat((spectrum[:, :, :mh, :mw], spectrum[:, :, -mh:, :mw]), dim=2)
        mixed = torch.einsum("bikl,iokl->bokl", low, torch.view_as_complex(self.weight))
        out_spectrum = mixed.new_zeros(x.shape[0], self.out_channels, out_h, out_w // 2 + 1)
        out_spectrum[:, :, :mh, :mw] = mixed[:, :, :mh]
        out_spectrum[:, :, -mh:, :mw] = mixed[:, :, mh:]
        return torch.fft.irfft2(out_spectrum, s=(out_h, out_w), norm="forward").to(x.dtype)


class FourierConv2d(nn.Module):
    """Linear part of an FNO layer: ``K x + W x`` with ``K`` a :class:`SpectralConv2d` (global,
    low-frequency) and ``W`` a pointwise ``1 x 1`` convolution with bias (local, all frequencies)."""

    def __init__(self, in_channels: int, out_channels: int, modes_h: int, modes_w: int):
        super().__init__()
        self.spectral = SpectralConv2d(in_channels, out_channels, modes_h, modes_w)
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral(x) + self.pointwise(x)


class SpectralResample2d(nn.Module):
    """Spectral convolution whose output grid is ``scale`` times the input grid (``H' = scale H``).

    Used as the down- (``scale = 1/2``) and up-sampling (``scale = 2``) layers of a spectral U-Net, as
    in ∞-Diff's reference operator U-Net: evaluating the band-limited output function on a coarser or
    finer grid is alias-free resampling.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int, scale: float):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = scale
        self.conv = SpectralConv2d(in_channels, out_channels, modes, modes)

    def _scaled(self, n: int) -> int:
        scaled = n * self.scale
        if abs(scaled - round(scaled)) > 1e-9:
            raise ValueError(f"grid side {n} times scale {self.scale} is not an integer")
        return int(round(scaled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, out_size=(self._scaled(x.shape[-2]), self._scaled(x.shape[-1])))
