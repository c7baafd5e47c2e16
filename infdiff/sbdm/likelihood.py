"""Exact likelihoods of score-based SDEs through the probability-flow ODE, in nats and bits per dimension.

The probability-flow ODE of the forward SDE ``dx = f dt + g Q dW`` (Song et al. 2021, "Score-based
generative modeling through SDEs", eq. 13, with ``G = g Q`` and ``C = Q Q*``) is

    dx/dt = f̃(x, t) = f(x, t) - g(t)² S(x, t) / 2,      S = C ∇ log p_t = -(x - α ŷ_0) / σ²,

(:func:`~infdiff.sbdm.samplers.preconditioned_score`), and its solutions carry ``p_t`` forward.  By the
instantaneous change of variables (Chen et al. 2018, "Neural ordinary differential equations", thm. 1)
``d log p_t(x_t) / dt = -∇·f̃(x_t, t)``, so integrating ``x`` and ``∫ ∇·f̃`` jointly from ``x_0`` gives

    log p_0(x_0) = log p_1(x_1) + ∫_0^1 ∇·f̃(x_t, t) dt           (Song et al. 2021, app. D.2).

Here both are solved together by scipy's RK45 from ``t = process.t_min`` (the small-time cut-off of
training, so the result is ``log p_{t_min}`` of the ODE model, which tends to ``log p_0`` as
``t_min → 0``) to ``t = 1``.  The divergence is exact (``D`` vector-Jacobian products, for tiny tests) or
Hutchinson's estimate ``∇·f̃ = E[εᵀ (∂f̃/∂x) ε]`` for probes with ``E[ε εᵀ] = I`` (Rademacher or
Gaussian; Hutchinson 1989; FFJORD, Grathwohl et al. 2019, eq. 7), one vector-Jacobian product per
evaluation with one probe ``ε`` fixed for the whole solve, which keeps the ODE deterministic for the
solver and the estimate of ``log p_0`` unbiased.

``log p_1`` is the density of the distribution :meth:`~infdiff.diffusion.process.DiffusionProcess.terminal_state`
draws from, ``N(0, (α(1)² + σ(1)²) C)``, through the prior's :meth:`~infdiff.diffusion.priors.NoisePrior.log_prob`.
The true marginal at ``t = 1`` is ``p_0`` scaled by ``α(1)`` plus ``N(0, σ(1)² C)``; the two agree for
data ``N(0, C)`` and otherwise up to terms of order ``α(1)`` (``e^{-5}`` for the default VP SDE; the VE
SDE's ``σ_max`` must dwarf the data), the approximation Song et al. make with ``N(0, I)`` and
``N(0, σ_max² I)``.

Bits per dimension for images in ``[-1, 1]`` that came from 8-bit values ``u ∈ [0, 256)`` by
``x = u / 128 - 1``: the map has Jacobian ``128^{-D}``, so ``log p_u = log p_x - D log 128`` and
``bpd = -log p_x / (D ln 2) + log2 128`` (:func:`bits_per_dim_from_log_likelihood`).  For this to bound
the discrete model's likelihood, ``x_0`` should be uniformly dequantised first, ``u + U[0, 1)``
(Theis et al. 2016; Song et al. 2021, app. D.2); the caller does that.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from infdiff.diffusion.process import DiffusionProcess
from infdiff.diffusion.targets import DenoiseFn
from infdiff.sbdm.samplers import _flow

PIXEL_LEVELS = 256  # 8-bit data scaled to [-1, 1): the Jacobian 2 / 256 per dimension


def _rademacher(shape, generator, device, dtype) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1


def _gaussian(shape, generator, device, dtype) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


PROBES: Dict[str, Callable[..., torch.Tensor]] = {"rademacher": _rademacher, "gaussian": _gaussian}
"""Hutchinson probe distributions (``E[ε εᵀ] = I``) by the names ``estimator`` takes."""


def _velocity_and_divergence(
    denoise_fn: DenoiseFn, process: DiffusionProcess, x: torch.Tensor, t: float, probe: Optional[torch.Tensor]
):
    """``f̃(x, t)`` and ``∇·f̃`` per example ``(B,)``: exact without a probe, else ``εᵀ (∂f̃/∂x) ε``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        velocity = _flow(denoise_fn, process, x, t)[0]
        if probe is not None:
            (vjp,) = torch.autograd.grad(velocity, x, probe)
            return velocity.detach(), (vjp * probe).flatten(1).sum(1)
        flat = velocity.flatten(1)
        divergence = torch.zeros(len(x), dtype=velocity.dtype, device=x.device)
        for i in range(flat.shape[1]):
            (row,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
            divergence = divergence + row.flatten(1)[:, i]
        return velocity.detach(), divergence


def terminal_log_prob(process: DiffusionProcess, x1: torch.Tensor) -> torch.Tensor:
    """``log N(x_1; 0, (α(1)² + σ(1)²) C)`` ``(B,)`` (float64): the density of ``process.terminal_state``."""
    alpha, sigma = process.levels(1.0)
    scale = math.sqrt(alpha * alpha + sigma * sigma)
    return process.prior.log_prob(x1 / scale) - x1[0].numel() * math.log(scale)


def log_likelihood(
    denoise_fn: DenoiseFn,
    process: DiffusionProcess,
    x0: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    estimator: str = "rademacher",
    exact: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """``log p_0(x_0)`` ``(B,)`` in nats (float64) by the probability-flow ODE (module docstring).

    ``denoise_fn(x_t, t) -> ŷ_0`` as for the samplers; ``x0`` ``(B, ...)`` on a grid (or vectors) the prior
    has a density on.  ``estimator`` names the Hutchinson probe (:data:`PROBES`, one per example drawn
    from ``generator`` for the whole solve); ``exact=True`` takes the exact divergence instead (``D``
    backward passes per evaluation).  ``rtol``/``atol`` are RK45's, on ``x`` and ``∫ ∇·f̃`` alike.
    """
    from scipy.integrate import solve_ivp

    if estimator not in PROBES:
        raise ValueError(f"estimator={estimator!r}: expected one of {sorted(PROBES)}")
    if process.mollified_states:
        raise ValueError("the likelihood is of the data x_0 itself: use a process without mollified_states")
    terminal_log_prob(process, x0[:1])  # fails now, not after the solve, for a prior without a density
    shape, dtype, device, batch = x0.shape, x0.dtype, x0.device, len(x0)
    probe = None if exact else PROBES[estimator](shape, generator, device, dtype)
    t_min = float(process.t_min)

    with tqdm(total=1.0 - t_min, desc="likelihood ODE", disable=None if progress else True) as bar:

        def rhs(t, state):
            x = torch.as_tensor(state[:-batch], dtype=dtype, device=device).reshape(shape)
            velocity, divergence = _velocity_and_divergence(denoise_fn, process, x, float(t), probe)
            bar.update(max(0.0, t - t_min - bar.n))
            return np.concatenate([velocity.reshape(-1).cpu().double().numpy(), divergence.cpu().double().numpy()])

        start = np.concatenate([x0.detach().reshape(-1).cpu().double().numpy(), np.zeros(batch)])
        solution = solve_ivp(rhs, (t_min, 1.0), start, rtol=rtol, atol=atol, method="RK45")
    if not solution.success:
        raise RuntimeError(f"the probability-flow ODE solver failed: {solution.message}")
    end = torch.as_tensor(np.ascontiguousarray(solution.y[:, -1]), dtype=torch.float64, device=device)
    x1 = end[:-batch].to(dtype).reshape(shape)
    return terminal_log_prob(process, x1) + end[-batch:]


def bits_per_dim_from_log_likelihood(log_p: torch.Tensor, dims: int) -> torch.Tensor:
    """``-log p / (D ln 2) + log2 128``: bits per dimension of 8-bit data scaled to ``[-1, 1]`` (module docstring)."""
    return -log_p / (dims * math.log(2)) + math.log2(PIXEL_LEVELS / 2)


def bits_per_dim(
    denoise_fn: DenoiseFn,
    process: DiffusionProcess,
    x0: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    estimator: str = "rademacher",
    exact: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Bits per dimension ``(B,)`` of images ``x0`` in ``[-1, 1]`` from 8-bit data: :func:`log_likelihood`
    (its arguments) through :func:`bits_per_dim_from_log_likelihood` with ``D = x0[0].numel()``."""
    log_p = log_likelihood(denoise_fn, process, x0, generator, rtol, atol, estimator, exact, progress)
    return bits_per_dim_from_log_likelihood(log_p, x0[0].numel())
