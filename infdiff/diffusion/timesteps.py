"""Distributions over training times, with importance weights that keep the loss unbiased.

Processes use continuous time ``t ∈ [0, 1]`` (``t = 0`` is the data).  A discrete process with
``T`` steps puts step ``k = 0 .. T-1`` at ``t_k = (k + 1) / T`` (:func:`step_times`,
:func:`time_steps`), so its training times are the ``T`` points ``1/T .. 1`` and ``ᾱ(0) = 1``.

A distribution draws ``t ~ p`` and returns weights ``w = 1 / (T p_t)`` (discrete) so that
``E[w L_t] = mean_t L_t``; :meth:`TimeDistribution.update` feeds back per-example losses.  They
are registered in :data:`TIME_DISTRIBUTIONS`, each entry built from the process it draws for.
"""

from __future__ import annotations

import abc
from typing import Optional, Tuple

import torch

from infdiff.registry import Registry

TIME_DISTRIBUTIONS = Registry("training-time distribution")


def step_times(steps: torch.Tensor, num_steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Times ``(k + 1) / T`` of discrete steps ``k`` (computed in float64, returned in ``dtype``)."""
    return (steps.to(torch.float64) + 1).div(num_steps).to(dtype)


def time_steps(t: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Step ids ``round(t T) - 1`` (long) of times on the grid of :func:`step_times`."""
    return torch.round(t.to(torch.float64) * num_steps).long() - 1


class TimeDistribution(abc.ABC):
    """``sample(batch) -> (t, weights)``; ``update`` records losses; state for exact resumption."""

    @abc.abstractmethod
    def sample(
        self, batch: int, generator: Optional[torch.Generator] = None, device=None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Times ``(batch,)`` (float32) and importance weights ``(batch,)`` (float32) on ``device``.

        ``generator``, if given, must live on ``device``.
        """

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example ``losses`` ``(B,)`` at times ``t`` ``(B,)``; nothing by default."""

    def state_dict(self) -> dict:
        """What a checkpoint must keep to resume drawing exactly (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class DiscreteTimesteps(TimeDistribution):
    """``p_t`` over the ``num_steps`` steps of a discrete process (:meth:`probabilities`)."""

    def __init__(self, num_steps: int):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps

    @abc.abstractmethod
    def probabilities(self) -> torch.Tensor:
        """``p_k`` ``(T,)`` (float64, sums to 1)."""

    def sample(self, batch, generator=None, device=None):
        p = self.probabilities().to(device)
        steps = torch.multinomial(p, batch, replacement=True, generator=generator)
        weights = 1.0 / (self.num_steps * p[steps])
        return step_times(steps, self.num_steps), weights.to(torch.float32)


class UniformTimesteps(DiscreteTimesteps):
    """``p_k = 1 / T`` (Ho et al. 2020, Alg. 1); all weights are 1."""

    def probabilities(self) -> torch.Tensor:
        return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)


class LossAwareTimesteps(DiscreteTimesteps):
    """``p_k ∝ sqrt(E[L_k^2])`` over the last ``history`` losses per step, mixed with ``uniform_prob`` uniform.

    Importance sampling of the loss (Nichol & Dhariwal 2021, §3.3); uniform until every
    step has ``history`` recorded losses.
    """

    def __init__(self, num_steps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_steps)
        if history < 1 or not 0 < uniform_prob <= 1:
            raise ValueError(
                f"expected history >= 1 and 0 < uniform_prob <= 1, got history={history}, uniform_prob={uniform_prob}"
            )
        self.uniform_prob = uniform_prob
        self._losses = torch.zeros(num_steps, history, dtype=torch.float64)
        self._counts = torch.zeros(num_steps, dtype=torch.long)

    @property
    def warmed_up(self) -> bool:
        return bool((self._counts >= self._losses.shape[1]).all())

    def probabilities(self) -> torch.Tensor:
        uniform = torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        if not self.warmed_up:
            return uniform
        rms = self._losses.pow(2).mean(1).sqrt()
        p = rms / rms.sum() if rms.sum() > 0 else uniform
        return (1 - self.uniform_prob) * p + self.uniform_prob * uniform

    def state_dict(self) -> dict:
        return {"losses": self._losses.clone(), "counts": self._counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self._losses.copy_(state["losses"])
        self._counts.copy_(state["counts"])

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Store each loss in the ring buffer of its step (the oldest is overwritten)."""
        if t.shape != losses.shape or t.dim() != 1:
            raise ValueError(f"t and losses must both be (B,), got {tuple(t.shape)} and {tuple(losses.shape)}")
        history = self._losses.shape[1]
        steps = time_steps(t.detach().cpu(), self.num_steps).tolist()
        for step, loss in zip(steps, losses.detach().double().cpu().tolist()):
            self._losses[step, self._counts[step] % history] = loss
            self._counts[step] += 1


class UniformTimes(TimeDistribution):
    """``t ~ U(t_min, 1)`` for continuous-time processes (Song et al. 2021, score SDEs); weights 1."""

    def __init__(self, t_min: float = 1e-3):
        if not 0 <= t_min < 1:
            raise ValueError(f"t_min must be in [0, 1), got {t_min}")
        self.t_min = t_min

    def sample(self, batch, generator=None, device=None):
        u = torch.rand(batch, generator=generator, device=device)
        return self.t_min + (1 - self.t_min) * u, torch.ones(batch, device=device)


def _discrete_steps(process, name: str) -> int:
    if process.num_steps is None:
        raise ValueError(
            f"the {name!r} training-time distribution needs a discrete process; "
            f"{type(process).__name__} has continuous time (use 'uniform')"
        )
    return process.num_steps


@TIME_DISTRIBUTIONS.register("uniform")
def uniform(process) -> TimeDistribution:
    """Every training time alike: the process's steps, or ``U(t_min, 1)`` in continuous time."""
    if process.num_steps is None:
        return UniformTimes(process.t_min)
    return UniformTimesteps(process.num_steps)


@TIME_DISTRIBUTIONS.register("loss-second-moment")
def loss_second_moment(process) -> TimeDistribution:
    """:class:`LossAwareTimesteps` over a discrete process's steps (improved-diffusion's name)."""
    return LossAwareTimesteps(_discrete_steps(process, "loss-second-moment"))
