"""Sampling and inversion loops over a process's times, as plain functions.

Every sampler takes ``denoise_fn(x_t, t) -> ŷ_0`` (see
:func:`infdiff.diffusion.targets.make_denoiser`) and a :class:`~infdiff.diffusion.process.DiffusionProcess`,
visits ``process.sampling_times(steps)`` (the respaced steps of a discrete DDPM) and then
``t = 0``, and returns the final ``ŷ_0``, a *clean state* (mollified for ∞-Diff: apply
``process.data_estimate`` to display it).  Fresh noise is always drawn from ``process.prior``
(mollified and scaled for the grid of ``x_T``), so sampling at another resolution needs nothing
but an ``x_T`` of that size from ``process.terminal_state``.  Samplers are registered in
:data:`SAMPLERS` by the names a config's ``sampler.name`` and the ``--sampler`` flags use.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from infdiff.diffusion.posterior import posterior_mean_variance, posterior_variance
from infdiff.diffusion.process import DiffusionProcess
from infdiff.diffusion.schedules import RespaceSpec
from infdiff.diffusion.targets import DenoiseFn
from infdiff.registry import Registry

SAMPLERS = Registry("sampler")


def _batch_time(t: float, x: torch.Tensor) -> torch.Tensor:
    """Time ``t`` for every example of ``x`` ``(B,)``."""
    return torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)


def _descending(
    process: DiffusionProcess, steps: RespaceSpec, progress: bool, desc: str
) -> Iterator[Tuple[float, float]]:
    """Consecutive pairs ``(t, s)`` of the sampling times followed by 0, with an optional progress bar."""
    times: List[float] = [*process.sampling_times(steps), 0.0]
    pairs = list(zip(times[:-1], times[1:]))
    return iter(tqdm(pairs, desc=desc, disable=None if progress else True))


def _ddim_move(
    process: DiffusionProcess,
    x: torch.Tensor,
    y0: torch.Tensor,
    t: float,
    s: float,
    stochastic: float = 0.0,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``α_s ŷ_0 + sqrt(σ_s² - ς²) η̂ + ς z`` with ``η̂ = (x - α_t ŷ_0) / σ_t`` (Song et al. 2021, eq. 12)."""
    alpha_t, sigma_t = process.levels(t)
    alpha_s, sigma_s = process.levels(s)
    eta_hat = (x - alpha_t * y0) / sigma_t
    moved = alpha_s * y0 + max(sigma_s**2 - stochastic**2, 0.0) ** 0.5 * eta_hat
    return moved if noise is None else moved + stochastic * noise


@torch.no_grad()
def sample_ddpm(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    process: DiffusionProcess,
    steps: RespaceSpec = 1000,
    variance: str = "fixed_small",
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling ``x_s = μ̃(x_t, ŷ_0) + σ̃ η`` (Ho et al. 2020, Alg. 2) with ``η`` from the prior.

    ``μ̃`` and ``σ̃²`` are the posterior of :func:`~infdiff.diffusion.posterior.posterior_mean_variance`
    between consecutive sampling times; returns ``ŷ_0`` of the last step.
    """
    x = x_T
    for t, s in _descending(process, steps, progress, "DDPM"):
        y0 = denoise_fn(x, _batch_time(t, x))
        if s > 0:
            mean, var = posterior_mean_variance(process, t, s, y0, x, variance)
            x = mean + var**0.5 * process.prior.sample_like(x, generator)
    return y0


@torch.no_grad()
def sample_ddim(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    process: DiffusionProcess,
    steps: RespaceSpec = 100,
    eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) with ``ς = eta · σ̃`` (the posterior's standard deviation).

    ``eta = 0`` is the deterministic probability-flow sampler; ``eta = 1`` matches DDPM's
    ``fixed_small`` variance.  Returns ``ŷ_0`` of the last step.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = x_T
    for t, s in _descending(process, steps, progress, "DDIM"):
        y0 = denoise_fn(x, _batch_time(t, x))
        stochastic = eta * posterior_variance(process, t, s) ** 0.5 if s > 0 else 0.0
        noise = process.prior.sample_like(x, generator) if stochastic > 0 else None
        x = _ddim_move(process, x, y0, t, s, stochastic, noise)
    return y0


@torch.no_grad()
def ddim_invert(
    denoise_fn: DenoiseFn, y0: torch.Tensor, process: DiffusionProcess, steps: RespaceSpec = 100, progress: bool = False
) -> torch.Tensor:
    """Deterministic DDIM encoding of a clean state ``y0`` into ``x`` at the largest sampling time.

    The DDIM ODE run forwards (Song et al. 2021, §4.3; the stochastic encoder of DiffAE,
    Preechakul et al. 2022): ``y0`` is taken as the state at the smallest sampling time and each
    move to the next larger time uses ``ŷ_0 = denoise_fn(x, t)``.  :func:`sample_ddim` with
    ``eta = 0`` and the same ``steps`` maps the result back to ``y0``.
    """
    ascending = process.sampling_times(steps)[::-1]
    x = y0
    pairs = list(zip(ascending[:-1], ascending[1:]))
    for t, nxt in tqdm(pairs, desc="DDIM inversion", disable=None if progress else True):
        x = _ddim_move(process, x, denoise_fn(x, _batch_time(t, x)), t, nxt)
    return x


SAMPLERS.register("ddpm", sample_ddpm)
SAMPLERS.register("ddim", sample_ddim)
