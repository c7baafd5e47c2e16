"""What the network predicts, and how its output becomes an estimate of the clean state.

Each target defines the training target computed from ``(x_0, ξ, t)`` and the conversion of the
network output ``out`` into ``ŷ_0 = A x̂_0``, using ``x_t = α y_0 + σ η`` with ``y_0 = A x_0`` and
``η = C^{1/2} ξ`` (:mod:`infdiff.diffusion.process`; for ∞-Diff ``A = C^{1/2} = T``, Bond-Taylor &
Willcocks 2024, §3):

- ``mollified_epsilon``: ``out ≈ η = C^{1/2} ξ``; ``ŷ_0 = (x_t - σ out) / α``.  ∞-Diff's default
  (``T ξ``); with a coloured prior it is the preconditioned score target ``η`` of Multilevel
  Diffusion (Hagemann et al. 2023), and with white noise it equals ``epsilon``.
- ``epsilon``: ``out ≈ ξ``; ``ŷ_0 = (x_t - σ C^{1/2} out) / α`` (Ho et al. 2020, eq. 11).
- ``x0``: ``out ≈ x_0``; ``ŷ_0 = A out``.
- ``v``: ``out ≈ α η - σ y_0``; ``ŷ_0 = (α x_t - σ out) / (α² + σ²)`` (Salimans & Ho 2022, §4,
  for any ``α, σ``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from infdiff.diffusion.process import DiffusionProcess
from infdiff.registry import Registry

Tensor = torch.Tensor
ModelFn = Callable[[Tensor, Tensor], Tensor]
DenoiseFn = Callable[[Tensor, Tensor], Tensor]
TARGETS = Registry("network target")


@dataclass(frozen=True)
class Target:
    """A network parameterisation: its training target and its conversion to ``ŷ_0``.

    ``training_target(process, x0, white, t)`` and ``predict_clean(process, out, x_t, t)``;
    ``white`` is the white noise ``ξ`` and ``t`` the process times ``(B,)``.
    """

    name: str
    training_target: Callable[[DiffusionProcess, Tensor, Tensor, Tensor], Tensor]
    predict_clean: Callable[[DiffusionProcess, Tensor, Tensor, Tensor], Tensor]


def clean_from_noise(process: DiffusionProcess, eta: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """``ŷ_0 = (x_t - σ η) / α``: the clean state implied by the noise ``η``."""
    alpha, sigma = process.coefficients(t, x_t)
    return (x_t - sigma * eta) / alpha


def noise_from_clean(process: DiffusionProcess, y0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """``η̂ = (x_t - α ŷ_0) / σ``: the noise implied by a clean-state estimate."""
    alpha, sigma = process.coefficients(t, x_t)
    return (x_t - alpha * y0) / sigma


def _v_target(process: DiffusionProcess, x0: Tensor, white: Tensor, t: Tensor) -> Tensor:
    alpha, sigma = process.coefficients(t, x0)
    return alpha * process.prior.apply_sqrt_cov(white) - sigma * process.clean_state(x0)


def _clean_from_v(process: DiffusionProcess, v: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    alpha, sigma = process.coefficients(t, x_t)
    return (alpha * x_t - sigma * v) / (alpha * alpha + sigma * sigma)


for _target in (
    Target("mollified_epsilon", lambda process, x0, white, t: process.prior.apply_sqrt_cov(white), clean_from_noise),
    Target(
        "epsilon",
        lambda process, x0, white, t: white,
        lambda process, out, x_t, t: clean_from_noise(process, process.prior.apply_sqrt_cov(out), x_t, t),
    ),
    Target("x0", lambda process, x0, white, t: x0, lambda process, out, x_t, t: process.clean_state(out)),
    Target("v", _v_target, _clean_from_v),
):
    TARGETS.register(_target.name, _target)


def get_target(target: Union[str, Target]) -> Target:
    """The :class:`Target` called ``target`` (a :class:`Target` is returned unchanged)."""
    return target if isinstance(target, Target) else TARGETS[target]


def make_denoiser(
    model_fn: ModelFn, process: DiffusionProcess, target: Union[str, Target] = "mollified_epsilon", clip: bool = True
) -> DenoiseFn:
    """``denoise(x_t, t) -> ŷ_0``: the network's estimate of the clean state at process times ``t``.

    ``model_fn(x_t, s)`` is the network closed over any conditioning (latent, coordinates), called
    with ``s = process.model_time(t)`` (step ids for a discrete DDPM).  With ``clip`` the estimate
    is clamped to ``[-1, 1]``, valid for data in ``[-1, 1]`` because a Gaussian blur averages its
    input.
    """
    predict_clean = get_target(target).predict_clean

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        y0 = predict_clean(process, model_fn(x_t, process.model_time(t)), x_t, t)
        return y0.clamp(-1, 1) if clip else y0

    return denoise
