"""Sampling the two stages: images from the decoder at any size, latents from the latent DDPM."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from infdiff.diffusion import DiffusionProcess, make_denoiser
from infdiff.pipeline.build import SamplerSpec

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def decode_latents(
    model_fn: ModelFn,
    process: DiffusionProcess,
    target: str,
    sampler: SamplerSpec,
    shape,
    generator: Optional[torch.Generator] = None,
    device=None,
    progress: bool = False,
    noise_size: Optional[int] = None,
    inv_snr: Optional[float] = None,
) -> torch.Tensor:
    """Images ``shape = (B, C, H, W)`` in [-1, 1] from the decoder ``model_fn`` (closed over ``z``) at any size.

    The initial state is the prior's noise scaled for the grid (the same noise function at every
    size), the decoder runs its dense path, and ``process.data_estimate`` (for ∞-Diff the Wiener
    inverse of the mollifier) is applied to the final clean state (∞-Diff, §3).  With
    ``noise_size`` (a multiple of ``H`` and ``W``) every noise draw is made on that grid and
    averaged down (:meth:`~infdiff.diffusion.NoisePrior.with_noise_grid`), so calls at several
    sizes with one seed decode the same noise function.  ``inv_snr`` replaces the prior's Wiener regulariser.
    """
    if noise_size is not None:
        process = process.with_prior(process.prior.with_noise_grid(noise_size))
    x_T = process.terminal_state(shape, generator=generator, device=device)
    y0 = sampler(make_denoiser(model_fn, process, target), x_T, process, generator, progress)
    return process.data_estimate(y0, inv_snr).clamp(-1, 1)


@torch.no_grad()
def sample_latents(
    model: ModelFn,
    process: DiffusionProcess,
    target: str,
    sampler: SamplerSpec,
    count: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """``count`` latents from the latent DDPM, de-normalised with the data statistics ``mean``/``std``."""
    x_T = process.terminal_state((count, mean.shape[-1]), generator=generator, device=mean.device)
    z = sampler(make_denoiser(model, process, target, clip=False), x_T, process, generator, progress)
    return z * std + mean
