"""Sampling and inversion loops over a (possibly respaced) schedule, as plain functions.

Every sampler takes ``denoise_fn(y_t, t) -> ŷ_0`` (see
:func:`infdiff.diffusion.parameterization.make_denoiser`), calls it with original timestep ids
``schedule.timesteps[i]`` and returns the final ``ŷ_0``, a *mollified* sample; apply
``mollifier.wiener_inverse`` to display it.  Fresh noise is always ``process.noise_like``
(mollified and scaled for the grid of ``x_T``), so sampling at another resolution needs
nothing but an ``x_T`` of that size from ``process.sample_noise``.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from tqdm.auto import tqdm

from infdiff.diffusion.parameterization import DenoiseFn, noise_from_y0
from infdiff.diffusion.posterior import posterior_mean_variance
from infdiff.diffusion.process import MollifiedDiffusion
from infdiff.diffusion.schedules import Schedule


def _descending(schedule: Schedule, progress: bool, desc: str) -> Iterable[int]:
    """Positions ``S-1 .. 0``, with an optional progress bar."""
    return tqdm(range(schedule.num_steps - 1, -1, -1), desc=desc, disable=not progress)


def _timestep(schedule: Schedule, i: int, x: torch.Tensor) -> torch.Tensor:
    """The original id of position ``i``, repeated for the batch of ``x``."""
    return torch.full((x.shape[0],), int(schedule.timesteps[i]), dtype=torch.long, device=x.device)


def _ddim_move(
    x: torch.Tensor,
    y0: torch.Tensor,
    alpha_bar: float,
    alpha_bar_to: float,
    sigma: float = 0.0,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``sqrt(ᾱ') ŷ_0 + sqrt(1 - ᾱ' - σ^2) ε̂ + σ z`` with ``ε̂`` implied by ``x`` at level ``ᾱ`` (Song et al. 2021, eq. 12)."""
    eps = noise_from_y0(x, y0, alpha_bar)
    moved = alpha_bar_to**0.5 * y0 + (1 - alpha_bar_to - sigma**2) ** 0.5 * eps
    return moved if noise is None else moved + sigma * noise


@torch.no_grad()
def sample_ddpm(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    schedule: Schedule,
    process: MollifiedDiffusion,
    variance: str = "fixed_small",
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling ``y_{i-1} = μ̃_i(y_i, ŷ_0) + sqrt(σ_i^2) T ξ`` (Ho et al. 2020, Alg. 2).

    ``μ̃`` and ``σ^2`` are the posterior of :func:`~infdiff.diffusion.posterior.posterior_mean_variance`
    over the kept steps of ``schedule``; returns ``ŷ_0`` of the last step.
    """
    x = x_T
    for i in _descending(schedule, progress, "DDPM"):
        y0 = denoise_fn(x, _timestep(schedule, i, x))
        if i > 0:
            mean, var = posterior_mean_variance(schedule, i, y0, x, variance)
            x = mean + var**0.5 * process.noise_like(x, generator)
    return y0


@torch.no_grad()
def sample_ddim(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    schedule: Schedule,
    process: MollifiedDiffusion,
    eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) with ``σ_i = η sqrt((1 - ᾱ_{i-1}) / (1 - ᾱ_i)) sqrt(1 - ᾱ_i / ᾱ_{i-1})``.

    ``eta = 0`` is the deterministic probability-flow sampler; for ``eta > 0`` the fresh noise is
    mollified noise ``T ξ``.  Returns ``ŷ_0`` of the last step.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    alphas_cumprod = schedule.alphas_cumprod.tolist()
    alphas_cumprod_prev = schedule.alphas_cumprod_prev.tolist()
    x = x_T
    for i in _descending(schedule, progress, "DDIM"):
        y0 = denoise_fn(x, _timestep(schedule, i, x))
        ab, ab_prev = alphas_cumprod[i], alphas_cumprod_prev[i]
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
        noise = process.noise_like(x, generator) if sigma > 0 else None
        x = _ddim_move(x, y0, ab, ab_prev, sigma, noise)
    return y0


@torch.no_grad()
def ddim_invert(denoise_fn: DenoiseFn, y0: torch.Tensor, schedule: Schedule, progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM encoding of a mollified image ``y0`` into ``x_T`` at the last kept level.

    The DDIM ODE run forwards (Song et al. 2021, §4.3; the stochastic encoder of DiffAE,
    Preechakul et al. 2022): ``y0`` is taken as the state at position 0 and for ``i = 0 .. S-2``
    ``y_{i+1} = sqrt(ᾱ_{i+1}) ŷ_0 + sqrt(1 - ᾱ_{i+1}) ε̂`` with ``ŷ_0 = denoise_fn(y_i, t_i)``.
    :func:`sample_ddim` with ``eta = 0`` on the same schedule maps the result back to ``y0``.
    """
    alphas_cumprod = schedule.alphas_cumprod.tolist()
    x = y0
    for i in tqdm(range(schedule.num_steps - 1), desc="DDIM inversion", disable=not progress):
        x = _ddim_move(x, denoise_fn(x, _timestep(schedule, i, x)), alphas_cumprod[i], alphas_cumprod[i + 1])
    return x
