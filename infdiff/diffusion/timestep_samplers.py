"""Distributions over training timesteps, with importance weights that keep the loss unbiased."""

from __future__ import annotations

import abc
from typing import Optional, Tuple

import torch


class TimestepSampler(abc.ABC):
    """Draws ``t ~ p`` and returns weights ``1 / (T p_t)`` so that ``E[w L_t] = mean_t L_t``.

    Subclasses define :meth:`probabilities`; :meth:`update` feeds back per-example losses.
    """

    def __init__(self, num_steps: int):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps

    @abc.abstractmethod
    def probabilities(self) -> torch.Tensor:
        """``p_t`` ``(T,)`` (float64, sums to 1)."""

    def sample(
        self, batch: int, device=None, generator: Optional[torch.Generator] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Timesteps ``(batch,)`` (long) and importance weights ``(batch,)`` (float32) on ``device``.

        ``generator``, if given, must be a CPU generator: the draw happens on the CPU.
        """
        p = self.probabilities()
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        weights = 1.0 / (self.num_steps * p[t])
        return t.to(device), weights.to(device=device, dtype=torch.float32)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example ``losses`` ``(B,)`` at timesteps ``t`` ``(B,)``; nothing by default."""

    def state_dict(self) -> dict:
        """What a checkpoint must keep to resume sampling exactly (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class UniformTimestepSampler(TimestepSampler):
    """``p_t = 1 / T`` (Ho et al. 2020, Alg. 1); all weights are 1."""

    def probabilities(self) -> torch.Tensor:
        return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)


class LossAwareTimestepSampler(TimestepSampler):
    """``p_t ∝ sqrt(E[L_t^2])`` over the last ``history`` losses per step, mixed with ``uniform_prob`` uniform.

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
        """Store each loss in the ring buffer of its timestep (the oldest is overwritten)."""
        if t.shape != losses.shape or t.dim() != 1:
            raise ValueError(f"t and losses must both be (B,), got {tuple(t.shape)} and {tuple(losses.shape)}")
        history = self._losses.shape[1]
        for step, loss in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            self._losses[step, self._counts[step] % history] = loss
            self._counts[step] += 1
