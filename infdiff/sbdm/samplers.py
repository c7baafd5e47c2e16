"""Samplers of score-based SDEs as plain functions of ``denoise_fn(x_t, t) -> ŷ_0`` and a process.

With ``x_t = α x_0 + σ η``, ``η ~ N(0, C)``, the preconditioned score is
``S(x, t) = C ∇ log p_t(x) = -(x - α(t) ŷ_0) / σ(t)²``, and for the forward SDE
``dx = f dt + g Q dW`` (Song et al. 2021, eqs. 6 and 13, preconditioned by ``C``):

* reverse SDE ``dx = [f - g² S] dt + g Q dW̄`` — :func:`sample_euler_maruyama`;
* predictor-corrector: each reverse step followed by ``corrector_steps`` preconditioned Langevin
  steps ``x ← x + ε S + sqrt(2ε) Q z`` (which leave ``p_t`` invariant since ``C = Q Q*``), with
  ``ε = 2 (snr ‖Q z‖ / ‖S‖)²`` from the batch-mean norms (Song et al. 2021, Alg. 4–5 and their
  code: per-example norms make ``ε`` explode wherever ``S`` happens to be small) —
  :func:`sample_predictor_corrector`;
* probability-flow ODE ``dx/dt = f - g² S / 2``: Heun's method on the sampling times
  (:func:`sample_ode_heun`) or scipy's adaptive RK45 (:func:`sample_ode_adaptive`).

Fresh noise ``Q z`` comes from ``process.prior`` (scaled for the grid of ``x_T``), so these run at
any resolution.  Like the DDPM samplers they visit ``process.sampling_times(steps)`` and ``t = 0``
and return the last ``ŷ_0``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from infdiff.diffusion.process import DiffusionProcess
from infdiff.diffusion.samplers import SAMPLERS, _batch_time, _descending
from infdiff.diffusion.targets import DenoiseFn


def preconditioned_score(denoise_fn: DenoiseFn, process: DiffusionProcess, x: torch.Tensor, t: float):
    """``(S(x, t), ŷ_0)`` with ``S = C ∇ log p_t = -(x - α ŷ_0) / σ²`` (module docstring)."""
    y0 = denoise_fn(x, _batch_time(t, x))
    alpha, sigma = process.levels(t)
    return -(x - alpha * y0) / sigma**2, y0


def _reverse_drift(process, x, t, score):
    """``f(x, t) - g(t)² S``: the reverse SDE's drift (per unit of backward time: subtract it)."""
    g = float(process.diffusion(torch.tensor(t, dtype=torch.float64)))
    return process.drift(x, _batch_time(t, x).double()) - g * g * score, g


@torch.no_grad()
def sample_predictor_corrector(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    process: DiffusionProcess,
    steps: int = 200,
    snr: float = 0.16,
    corrector_steps: int = 1,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler–Maruyama predictor ``x_s = x_t - (f - g² S)(t - s) + g sqrt(t - s) Q z``, then
    ``corrector_steps`` preconditioned Langevin correctors at the new time (module docstring)."""
    if not snr > 0 or corrector_steps < 0:
        raise ValueError(f"snr={snr!r}, corrector_steps={corrector_steps!r}: expected snr > 0, corrector_steps >= 0")
    x = x_T
    for t, s in _descending(process, steps, progress, "predictor-corrector"):
        score, y0 = preconditioned_score(denoise_fn, process, x, t)
        drift, g = _reverse_drift(process, x, t, score)
        x = x - drift * (t - s)
        if s <= 0:
            break
        x = x + g * (t - s) ** 0.5 * process.prior.sample_like(x, generator)
        for _ in range(corrector_steps):
            score, y0 = preconditioned_score(denoise_fn, process, x, s)
            noise = process.prior.sample_like(x, generator)
            ratio = noise.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            step = 2 * (snr * ratio) ** 2
            x = x + step * score + (2 * step).sqrt() * noise
    return y0


def sample_euler_maruyama(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    process: DiffusionProcess,
    steps: int = 200,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler–Maruyama on the reverse SDE: :func:`sample_predictor_corrector` without correctors."""
    return sample_predictor_corrector(denoise_fn, x_T, process, steps, 1.0, 0, generator, progress)


def _flow(denoise_fn, process, x, t):
    """``dx/dt = f - g² S / 2`` of the probability-flow ODE, and ``ŷ_0``."""
    score, y0 = preconditioned_score(denoise_fn, process, x, t)
    g = float(process.diffusion(torch.tensor(t, dtype=torch.float64)))
    return process.drift(x, _batch_time(t, x).double()) - 0.5 * g * g * score, y0


@torch.no_grad()
def sample_ode_heun(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    process: DiffusionProcess,
    steps: int = 100,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """Heun's second-order method on the probability-flow ODE (Euler on the last step, into ``t = 0``)."""
    x = x_T
    for t, s in _descending(process, steps, progress, "probability-flow ODE"):
        velocity, y0 = _flow(denoise_fn, process, x, t)
        moved = x + (s - t) * velocity
        if s > 0:
            velocity_s, _ = _flow(denoise_fn, process, moved, s)
            moved = x + (s - t) * 0.5 * (velocity + velocity_s)
        x = moved
    return y0


@torch.no_grad()
def sample_ode_adaptive(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    process: DiffusionProcess,
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
) -> torch.Tensor:
    """scipy's RK45 on the probability-flow ODE from ``t = 1`` to ``process.t_min``, then ``ŷ_0`` there.

    ``steps`` is unused (the solver picks its own steps within ``rtol``/``atol``); it is accepted so
    the sampler is called like the others.
    """
    from scipy.integrate import solve_ivp

    shape, dtype, device = x_T.shape, x_T.dtype, x_T.device

    def rhs(t, flat):
        x = torch.as_tensor(flat, dtype=dtype, device=device).reshape(shape)
        return _flow(denoise_fn, process, x, float(t))[0].reshape(-1).cpu().double().numpy()

    start = x_T.reshape(-1).cpu().double().numpy()
    solution = solve_ivp(rhs, (1.0, process.t_min), start, rtol=rtol, atol=atol, method="RK45")
    if not solution.success:
        raise RuntimeError(f"the probability-flow ODE solver failed: {solution.message}")
    x = torch.as_tensor(np.ascontiguousarray(solution.y[:, -1]), dtype=dtype, device=device).reshape(shape)
    return denoise_fn(x, _batch_time(process.t_min, x))


SAMPLERS.register("euler_maruyama", sample_euler_maruyama)
SAMPLERS.register("predictor_corrector", sample_predictor_corrector)
SAMPLERS.register("ode_heun", sample_ode_heun)
SAMPLERS.register("ode_adaptive", sample_ode_adaptive)
