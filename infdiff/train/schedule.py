"""Learning-rate warm-up and decay, and gradient clipping that skips exploding steps."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch


def warmup_factor(step: int, warmup_steps: int) -> float:
    """``min(1, (step + 1) / warmup_steps)``: linear from ``1 / warmup_steps`` at step 0 to 1, then 1; always 1 if 0."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)


def decay_factor(step: int, max_steps: int, decay_steps: int) -> float:
    """``min(1, (max_steps − step) / decay_steps)``: 1, then linear to ``1 / decay_steps`` at the last step.

    The "warm-up, stable, decay" schedule's linear decay to zero over the last ``decay_steps``
    updates (Hu et al. 2024, MiniCPM; Bergsma et al. 2025 on decaying linearly to zero):
    a run's weights settle in its final steps, where constant-rate Adam keeps them jittering.
    Always 1 if ``decay_steps`` is 0.
    """
    if not 0 <= decay_steps <= max_steps:
        raise ValueError(f"decay_steps must be between 0 and max_steps={max_steps}, got {decay_steps}")
    return 1.0 if decay_steps == 0 else min(1.0, (max_steps - step) / decay_steps)


def lr_factor(step: int, warmup_steps: int, max_steps: int, decay_steps: int) -> float:
    """The learning-rate multiplier of update ``step``: :func:`warmup_factor` × :func:`decay_factor`."""
    return warmup_factor(step, warmup_steps) * decay_factor(step, max_steps, decay_steps)


def lr_lambda(warmup_steps: int, max_steps: int, decay_steps: int = 0) -> Callable[[int], float]:
    """The ``lr_lambda`` of :class:`torch.optim.lr_scheduler.LambdaLR` for :func:`lr_factor` (picklable)."""
    decay_factor(0, max_steps, decay_steps)
    return functools.partial(lr_factor, warmup_steps=warmup_steps, max_steps=max_steps, decay_steps=decay_steps)


def should_skip_step(grad_norm: float, skip_threshold: Optional[float] = None, skip_nonfinite: bool = True) -> bool:
    """Whether an update with gradient norm ``grad_norm`` should be skipped as exploding.

    Skipped when the norm is NaN or infinite (if ``skip_nonfinite``) or above
    ``skip_threshold`` (if given).
    """
    if not math.isfinite(grad_norm):
        return skip_nonfinite
    return skip_threshold is not None and grad_norm > skip_threshold


ClipFn = Callable[[Iterable[torch.Tensor], float], Any]


@dataclass
class GradientGuard:
    """Clips the gradient norm to ``clip_norm`` (``None``: no clipping) and counts the steps it tells to skip.

    Typical use, after ``accelerator.backward(loss)``::

        grad_norm, skip = guard.clip_and_check(model.parameters(), accelerator.clip_grad_norm_)
        if skip:
            optimizer.zero_grad()
        else:
            optimizer.step()

    With accelerate, pass ``accelerator.clip_grad_norm_``: it unscales mixed-precision
    gradients first and returns the same (all-reduced) norm on every process, so all of
    them skip together. With fp16 loss scaling set ``skip_nonfinite=False``: the gradient
    scaler must see non-finite steps in ``optimizer.step()`` to lower its scale, otherwise
    every later step overflows and is skipped too.
    """

    clip_norm: Optional[float] = None
    skip_threshold: Optional[float] = None
    skip_nonfinite: bool = True
    skipped: int = field(default=0, init=False)

    def __post_init__(self):
        for name in ("clip_norm", "skip_threshold"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be None or > 0, got {value}")

    def clip_and_check(
        self, parameters: Iterable[torch.Tensor], clip_fn: ClipFn = torch.nn.utils.clip_grad_norm_
    ) -> Tuple[float, bool]:
        """Clip with ``clip_fn(parameters, max_norm)`` and return ``(norm before clipping, whether to skip)``."""
        max_norm = math.inf if self.clip_norm is None else self.clip_norm
        grad_norm = float(clip_fn(parameters, max_norm))
        return grad_norm, self.record(grad_norm)

    def record(self, grad_norm: float) -> bool:
        """Decide with :func:`should_skip_step` for a norm computed elsewhere, count a skip, return the decision."""
        skip = should_skip_step(grad_norm, self.skip_threshold, self.skip_nonfinite)
        self.skipped += skip
        return skip

    def state_dict(self) -> Dict[str, int]:
        """The skip counter (the thresholds come from the constructor)."""
        return {"skipped": self.skipped}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Restore the counter saved by :meth:`state_dict`."""
        self.skipped = int(state["skipped"])
