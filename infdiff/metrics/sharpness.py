"""Blur as a number: the fraction of an image's spectral energy in the top octave of its frequencies.

Each channel, minus its mean, is Fourier transformed; the share of the power ``|F(k)|²`` at radial
frequencies ``|k| ≥ 1/4`` cycles per pixel (the upper half of the band up to Nyquist's 1/2) among all
non-zero frequencies is averaged over images and channels.  It compares images of one size only: a
sample set and its reference at the same resolution (a blurred sample scores below its reference).
"""

from __future__ import annotations

import torch


def top_octave_energy(images: torch.Tensor) -> float:
    """Mean top-octave energy fraction of ``images`` ``(B, C, H, W)`` (module docstring)."""
    x = images.to(torch.float64)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square()
    fy = torch.fft.fftfreq(x.shape[-2], dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64).view(1, -1)
    radius = (fy.square() + fx.square()).sqrt()
    total = power.sum(dim=(-2, -1)).clamp_min(1e-30)
    return float((power * (radius >= 0.25)).sum(dim=(-2, -1)).div(total).mean())
