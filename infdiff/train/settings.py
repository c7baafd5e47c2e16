"""The settings of the training loop and its optimiser: the ``train`` and ``optimizer`` config sections.

Each config section is exactly the keyword arguments of one of these dataclasses
(``TrainSettings(**config.train)``), so the loop reads typed fields, never a config schema.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from infdiff.train.compile import check_compile_mode, check_compile_scope

MIXED_PRECISIONS = ("no", "fp16", "bf16")


def from_section(cls, section: Mapping[str, Any], name: str):
    """``cls(**section)``, with an error naming the section's keys ``cls`` does not take."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(
            f"config section {name!r} has keys {unknown} that {cls.__name__} does not take; "
            f"its keys are {sorted(known)}"
        )
    return cls(**dict(section))


@dataclass(frozen=True)
class TrainSettings:
    """What the loop does and when (steps count optimiser updates).

    ``batch_size`` is the global batch (split over processes); ``mixed_precision`` applies on
    GPUs (``"no"``, ``"fp16"`` or ``"bf16"``; fp32 on the CPU); ``grad_clip`` clips the global
    gradient norm (0: no clipping); the EMA folds the weights in with ``ema_decay`` every
    ``ema_update_every`` steps; metrics are logged every ``log_steps``, checkpoints written every
    ``checkpoint_steps`` (the last ``keep_checkpoints`` kept), the stage's evaluation hook runs
    every ``eval_steps`` and its picture hook every ``plot_samples_steps`` on ``sample_size``
    examples.  ``compile`` names the ``torch.compile`` mode (``"none"``: all eager) of the parts of the
    network ``compile_scope`` names (:mod:`infdiff.train.compile`: ``"grid"``, the coarse-grid U-Nets, or
    ``"network"``, all of it).
    """

    batch_size: int = 32
    max_steps: int = 1_000_000
    mixed_precision: str = "no"
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    ema_update_every: int = 10
    log_steps: int = 100
    checkpoint_steps: int = 10_000
    keep_checkpoints: int = 3
    eval_steps: int = 1000
    plot_samples_steps: int = 5000
    sample_size: int = 8
    compile: str = "none"
    compile_scope: str = "grid"

    def __post_init__(self):
        check_compile_mode(self.compile)
        check_compile_scope(self.compile_scope)
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(
                f"train.mixed_precision={self.mixed_precision!r}; expected one of {list(MIXED_PRECISIONS)}"
            )


@dataclass(frozen=True)
class OptimizerSettings:
    """Adam(``adam_beta1``, ``adam_beta2``) at ``learning_rate`` (AdamW when ``weight_decay > 0``).

    The rate warms up linearly over ``warmup_steps``, stays constant, and with ``decay_fraction``
    > 0 falls linearly to zero over that fraction of ``train.max_steps`` at the end.  With
    ``gradient_skip``, updates whose gradient norm exceeds ``gradient_skip_threshold`` are
    skipped; ``fused`` runs PyTorch's one-kernel update over all parameters (the same update).
    """

    learning_rate: float = 5e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay_fraction: float = 0.0
    gradient_skip: bool = False
    gradient_skip_threshold: float = 500.0
    fused: bool = True

    def __post_init__(self):
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(
                f"optimizer.decay_fraction={self.decay_fraction}: expected a fraction of train.max_steps "
                "from 0 (constant rate) to 1 (linear decay from the first step)"
            )

    @property
    def skip_threshold(self) -> Optional[float]:
        """The norm above which updates are skipped, or ``None`` when skipping is off."""
        return self.gradient_skip_threshold if self.gradient_skip else None
