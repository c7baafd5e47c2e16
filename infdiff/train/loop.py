"""The training loop shared by both stages: accelerate, AMP, EMA, clipping, checkpoints, resume.

``fit`` trains any module whose ``forward(batch, t)`` returns per-example tensors with a
``"loss"`` entry (and a ``"diffusion"`` entry fed back to loss-aware timestep samplers).  It owns
everything that is not the model: the optimiser (Adam/AdamW with linear warm-up and an optional
linear decay to zero), mixed precision and devices through Hugging Face ``accelerate``, gradient
clipping and skipping of exploding steps, the EMA, periodic logs, images and evaluations,
atomic checkpoints every N steps keeping the last K, exact resumption (model, EMA, optimiser,
scheduler, grad scaler, step, every process's RNG state; batches are a pure function of the
step) and a clean stop with a checkpoint on Ctrl-C / SIGTERM (then :class:`TrainingStopped`).
Only the main process writes files.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from ml_collections import ConfigDict
from torch import nn
from tqdm.auto import tqdm

from infdiff.train.checkpoint import CheckpointManager
from infdiff.train.ema import EMA
from infdiff.train.rng import capture_rng_state, restore_rng_state
from infdiff.train.run_logger import RunLogger
from infdiff.train.schedule import GradientGuard, lr_lambda
from infdiff.train.stop_signals import GracefulStop, TrainingStopped

BatchSource = Callable[[int], Iterable[torch.Tensor]]


@dataclass
class Hooks:
    """Stage-specific periodic work, run on the main process with the EMA model.

    ``visualize(step, ema_model)`` writes pictures (and may return numbers to log);
    ``evaluate(step, ema_model) -> metrics`` adds numbers to the log (e.g. a held-out loss).
    """

    visualize: Optional[Callable[[int, nn.Module], Optional[Dict[str, float]]]] = None
    evaluate: Optional[Callable[[int, nn.Module], Dict[str, float]]] = None
    extra_state: Dict[str, object] = field(default_factory=dict)


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An ``Accelerator`` on the GPUs when present (with ``mixed_precision``), else fp32 on the CPU."""
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"train.mixed_precision={mixed_precision!r}; expected 'no', 'fp16' or 'bf16'")
    cuda = torch.cuda.is_available()
    return Accelerator(mixed_precision=mixed_precision if cuda else "no", cpu=not cuda)


def make_optimizer(model: nn.Module, opt: ConfigDict) -> torch.optim.Optimizer:
    """Adam (AdamW when ``weight_decay > 0``) with ``optimizer.*`` hyper-parameters.

    ``optimizer.fused`` selects PyTorch's fused kernel (CPU and CUDA since torch 2.4): the same update in
    one pass over all parameters rather than a Python loop of small ops, which dominates for small models
    (``benchmarks/results/fused_adam_cpu.json``).
    """
    cls = torch.optim.AdamW if opt.weight_decay > 0 else torch.optim.Adam
    return cls(model.parameters(), lr=opt.learning_rate, betas=(opt.adam_beta1, opt.adam_beta2),
               weight_decay=opt.weight_decay, fused=bool(opt.fused))


def config_differences(old: dict, new: dict, prefix: str = "") -> List[str]:
    """``key: old -> new`` for every leaf that differs between two nested config dicts."""
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


class Trainer:
    """Holds the training state of one run directory; :meth:`fit` runs it to ``train.max_steps``."""

    def __init__(self, model: nn.Module, config: ConfigDict, run_dir: Path, accelerator: Accelerator,
                 timestep_sampler, hooks: Optional[Hooks] = None):
        self.config, self.run_dir, self.accelerator = config, Path(run_dir), accelerator
        self.timestep_sampler, self.hooks = timestep_sampler, hooks or Hooks()
        opt = config.optimizer
        optimizer = make_optimizer(model, opt)
        if not 0 <= opt.decay_fraction <= 1:
            raise ValueError(f"optimizer.decay_fraction={opt.decay_fraction}: expected a fraction of train.max_steps "
                             "from 0 (constant rate) to 1 (linear decay from the first step)")
        decay_steps = round(opt.decay_fraction * config.train.max_steps)
        schedule = lr_lambda(opt.warmup_steps, config.train.max_steps, decay_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.ema = EMA(accelerator.unwrap_model(self.model), config.train.ema_decay, config.train.ema_update_every)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", keep=config.train.keep_checkpoints)
        threshold = config.optimizer.gradient_skip_threshold if config.optimizer.gradient_skip else None
        self.guard = GradientGuard(config.train.grad_clip or None, threshold,
                                   skip_nonfinite=accelerator.mixed_precision != "fp16")
        self.step = 0

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = gather_object([capture_rng_state()]) if self.accelerator.num_processes > 1 else [capture_rng_state()]
        scaler = self.accelerator.scaler
        return {
            "step": self.step,
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "timestep_sampler": self.timestep_sampler.state_dict(),
            "gradient_guard": self.guard.state_dict(),
            "rng": rng,
            "config": self.config.to_dict(),
            **self.hooks.extra_state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.timestep_sampler.load_state_dict(state["timestep_sampler"])
        self.guard.load_state_dict(state["gradient_guard"])
        rng = state["rng"]
        if len(rng) != self.accelerator.num_processes:
            warnings.warn(f"checkpoint was written by {len(rng)} processes and is resumed by "
                          f"{self.accelerator.num_processes}: training continues, but not bit-exactly")
        restore_rng_state(rng[self.accelerator.process_index % len(rng)])
        changed = config_differences(state["config"], self.config.to_dict())
        if changed:
            warnings.warn("resuming with a config that differs from the checkpoint's: " + "; ".join(changed))
        self.step = state["step"]

    def resume(self) -> bool:
        """Load the newest loadable checkpoint of the run directory, if any."""
        found = self.checkpoints.newest_loadable("cpu")
        if found is not None:
            self.load_state_dict(found[1])
        return found is not None

    def save(self) -> None:
        state = self.state_dict()
        if self.accelerator.is_main_process:
            path = self.checkpoints.save(self.step, state)
            tqdm.write(f"checkpoint written: {path}")
        self.accelerator.wait_for_everyone()

    # -- loop ----------------------------------------------------------------------------------
    def _stop_everywhere(self, requested: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return requested
        flag = torch.tensor([float(requested)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def train_step(self, batch: torch.Tensor) -> Dict[str, float]:
        t, weights = self.timestep_sampler.sample(batch.shape[0], device=batch.device)
        with self.accelerator.autocast():
            out = self.model(batch, t)
        loss = (out["loss"] * weights.to(out["loss"].dtype)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        grad_norm, skip = self.guard.clip_and_check(self.model.parameters(), self.accelerator.clip_grad_norm_)
        if not skip:
            self.optimizer.step()
            self.scheduler.step()
        self.timestep_sampler.update(t, out["diffusion"].detach())
        metrics = {name: float(value.detach().float().mean()) for name, value in out.items()}
        metrics["grad_norm"] = grad_norm
        return metrics

    def fit(self, batches: BatchSource, logger: RunLogger) -> int:
        """Train from the current step to ``train.max_steps``; returns the step.

        On a stop request (Ctrl-C / SIGTERM in any process) every process writes the
        checkpoint of the same step and raises :class:`TrainingStopped`.
        """
        train = self.config.train
        window: Dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        progress = tqdm(total=train.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                        disable=not self.accelerator.is_main_process)
        with GracefulStop() as stop, progress:
            for batch in batches(self.step):
                if self.step >= train.max_steps:
                    break
                metrics = self.train_step(batch)
                self.step += 1
                self.ema.update(self.accelerator.unwrap_model(self.model), self.step)
                for name, value in metrics.items():
                    window[name] = window.get(name, 0.0) + value
                window_steps += 1
                progress.update(1)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}")
                if self.step % train.log_steps == 0 or self.step == train.max_steps:
                    elapsed = time.perf_counter() - window_start
                    logged = {name: value / window_steps for name, value in window.items()}
                    logged.update(lr=self.scheduler.get_last_lr()[0], step_time=elapsed / window_steps,
                                  skipped_steps=self.guard.skipped)
                    logger.log(self.step, logged)
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                self._periodic(self.step, logger)
                stopping = self._stop_everywhere(stop.requested)
                if stopping or self.step % train.checkpoint_steps == 0 or self.step >= train.max_steps:
                    self.save()
                if stopping:
                    tqdm.write(f"stopped at step {self.step}; resume with the same command")
                    raise TrainingStopped(self.step)
        return self.step

    def _periodic(self, step: int, logger: RunLogger) -> None:
        train = self.config.train
        if not self.accelerator.is_main_process:
            return
        if self.hooks.evaluate is not None and (step % train.eval_steps == 0 or step == train.max_steps):
            logger.log(step, self.hooks.evaluate(step, self.ema.model))
        if self.hooks.visualize is not None and (step % train.plot_samples_steps == 0 or step == train.max_steps):
            metrics = self.hooks.visualize(step, self.ema.model)
            if metrics:
                logger.log(step, metrics)
