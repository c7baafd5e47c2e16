"""What the network predicts, and how its output becomes an estimate of the mollified clean image.

Each target defines the training target computed from ``(x_0, ξ, t)`` and the conversion of the
network output ``out`` into ``ŷ_0 = T x̂_0``, using ``y_t = sqrt(ᾱ) y_0 + sqrt(1 - ᾱ) T ξ``
(∞-Diff, Bond-Taylor & Willcocks 2024, §3):

- ``mollified_epsilon``: ``out ≈ T ξ``; ``ŷ_0 = (y_t - sqrt(1 - ᾱ) out) / sqrt(ᾱ)``
- ``epsilon``: ``out ≈ ξ``; ``ŷ_0 = (y_t - sqrt(1 - ᾱ) T out) / sqrt(ᾱ)`` (Ho et al. 2020, eq. 11)
- ``x0``: ``out ≈ x_0``; ``ŷ_0 = T out``
- ``v``: ``out ≈ sqrt(ᾱ) T ξ - sqrt(1 - ᾱ) T x_0``; ``ŷ_0 = sqrt(ᾱ) y_t - sqrt(1 - ᾱ) out``
  (Salimans & Ho 2022, §4, on mollified states).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from infdiff.diffusion.process import MollifiedDiffusion

Tensor = torch.Tensor
ModelFn = Callable[[Tensor, Tensor], Tensor]
DenoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Target:
    """A network parameterisation: its training target and its conversion to ``ŷ_0``.

    ``training_target(process, x0, noise, t)`` and ``predict_y0(process, out, y_t, t)``;
    ``noise`` is the white noise ``ξ`` and ``t`` original timestep ids ``(B,)``.
    """

    name: str
    training_target: Callable[[MollifiedDiffusion, Tensor, Tensor, Tensor], Tensor]
    predict_y0: Callable[[MollifiedDiffusion, Tensor, Tensor, Tensor], Tensor]


def _y0_from_mollified_noise(process: MollifiedDiffusion, eta: Tensor, y_t: Tensor, t: Tensor) -> Tensor:
    alpha_bar = process.alpha_bar(t, y_t)
    return (y_t - (1 - alpha_bar).sqrt() * eta) / alpha_bar.sqrt()


def _v_target(process: MollifiedDiffusion, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    alpha_bar = process.alpha_bar(t, x0)
    return process.mollify(alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0)


def _y0_from_v(process: MollifiedDiffusion, v: Tensor, y_t: Tensor, t: Tensor) -> Tensor:
    alpha_bar = process.alpha_bar(t, y_t)
    return alpha_bar.sqrt() * y_t - (1 - alpha_bar).sqrt() * v


TARGETS = {
    target.name: target
    for target in (
        Target(
            "mollified_epsilon",
            lambda process, x0, noise, t: process.mollify(noise),
            _y0_from_mollified_noise,
        ),
        Target(
            "epsilon",
            lambda process, x0, noise, t: noise,
            lambda process, out, y_t, t: _y0_from_mollified_noise(process, process.mollify(out), y_t, t),
        ),
        Target(
            "x0",
            lambda process, x0, noise, t: x0,
            lambda process, out, y_t, t: process.mollify(out),
        ),
        Target("v", _v_target, _y0_from_v),
    )
}


def get_target(target: Union[str, Target]) -> Target:
    """The :class:`Target` called ``target`` (a :class:`Target` is returned unchanged)."""
    if isinstance(target, Target):
        return target
    if target not in TARGETS:
        raise ValueError(f"unknown network target {target!r}; expected one of {sorted(TARGETS)}")
    return TARGETS[target]


def noise_from_y0(y_t: Tensor, y0: Tensor, alpha_bar: Union[float, Tensor]) -> Tensor:
    """Mollified-noise estimate ``ε̂ = (y_t - sqrt(ᾱ) ŷ_0) / sqrt(1 - ᾱ)`` implied by ``ŷ_0``."""
    return (y_t - alpha_bar**0.5 * y0) / (1 - alpha_bar) ** 0.5


def make_denoiser(
    model_fn: ModelFn, process: MollifiedDiffusion, target: Union[str, Target] = "mollified_epsilon", clip: bool = True
) -> DenoiseFn:
    """``denoise(y_t, t) -> ŷ_0``: the network's estimate of the mollified clean image.

    ``model_fn(y_t, t)`` is the network closed over any conditioning (latent, coordinates);
    ``t`` holds original timestep ids ``(B,)``.  With ``clip`` the estimate is clamped to
    ``[-1, 1]``, valid for data in ``[-1, 1]`` because a Gaussian blur averages its input.
    """
    predict_y0 = get_target(target).predict_y0

    def denoise(y_t: Tensor, t: Tensor) -> Tensor:
        y0 = predict_y0(process, model_fn(y_t, t), y_t, t)
        return y0.clamp(-1, 1) if clip else y0

    return denoise
