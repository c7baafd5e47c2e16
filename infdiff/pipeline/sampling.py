"""Sampling the two stages: latents from the latent DDPM, images from the decoder at any size."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn

from infdiff.diffusion import MollifiedDiffusion, make_denoiser, respace, sample_ddim, sample_ddpm


def run_sampler(denoise, x_T: torch.Tensor, process: MollifiedDiffusion, steps: int, sampler: str = "ddim",
                eta: float = 0.0, generator: Optional[torch.Generator] = None, progress: bool = False):
    """DDIM (``eta``) or ancestral DDPM over ``steps`` respaced steps of ``process``'s schedule."""
    schedule = respace(process.schedule, steps)
    if sampler == "ddim":
        return sample_ddim(denoise, x_T, schedule, process, eta=eta, generator=generator, progress=progress)
    if sampler == "ddpm":
        return sample_ddpm(denoise, x_T, schedule, process, generator=generator, progress=progress)
    raise ValueError(f"unknown sampler {sampler!r}; expected 'ddim' or 'ddpm'")


@torch.no_grad()
def decode_latents(decoder: nn.Module, process: MollifiedDiffusion, z: torch.Tensor, size: int, channels: int,
                   target: str, steps: int, sampler: str = "ddim", eta: float = 0.0, inv_snr: float = 0.05,
                   generator: Optional[torch.Generator] = None, progress: bool = False,
                   noise_size: Optional[int] = None) -> torch.Tensor:
    """Images ``(B, C, size, size)`` in [-1, 1] decoded from ``z`` at any ``size``.

    The initial state is mollified noise scaled for the grid (same noise function at every
    size), the decoder runs its dense path, and the Wiener inverse of the mollifier is applied
    to the final mollified sample (∞-Diff, §3).  With ``noise_size`` (a multiple of ``size``)
    every noise draw is made on that grid and averaged down
    (:attr:`~infdiff.diffusion.MollifiedDiffusion.noise_grid`), so calls at several sizes with
    one seed decode the same noise function.
    """
    if noise_size is not None:
        process = dataclasses.replace(process, noise_grid=noise_size)
    x_T = process.sample_noise((z.shape[0], channels, size, size), generator=generator, device=z.device)
    denoise = make_denoiser(lambda x, t: decoder(x, t, z), process, target)
    y0 = run_sampler(denoise, x_T, process, steps, sampler, eta, generator, progress)
    return process.mollifier.wiener_inverse(y0, inv_snr).clamp(-1, 1)


@torch.no_grad()
def sample_latents(model: nn.Module, process: MollifiedDiffusion, count: int, z_dim: int, mean: torch.Tensor,
                   std: torch.Tensor, target: str, steps: int, sampler: str = "ddim",
                   generator: Optional[torch.Generator] = None, progress: bool = False) -> torch.Tensor:
    """``count`` latents from the latent DDPM, de-normalised with the data statistics ``mean``/``std``."""
    x_T = torch.randn((count, z_dim), generator=generator, device=mean.device)
    denoise = make_denoiser(model, process, target, clip=False)
    z = run_sampler(denoise, x_T, process, steps, sampler, generator=generator, progress=progress)
    return z * std + mean
