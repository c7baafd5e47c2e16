"""The training loop shared by every stage and model family: accelerate, AMP, EMA, clipping, checkpoints, resume.

:class:`Trainer` trains any module with any loss called as ``loss(model, batch, generator)``
returning per-example parts with a ``"loss"`` entry (:mod:`infdiff.diffusion.losses`): the loss
draws its own times, noise and subsets from the generator the loop owns (one per process, seeded
from the run's seed and the process index, saved in checkpoints).  The loop owns everything that
is not the model: the optimiser (Adam/AdamW with linear warm-up and an optional linear decay to
zero), mixed precision and devices through Hugging Face ``accelerate``, gradient clipping and
skipping of exploding steps, the EMA, periodic logs, images and evaluations, atomic checkpoints
every N steps keeping the last K, exact resumption (model, EMA, optimiser, scheduler, grad scaler,
loss state, step, every process's RNG states; batches are a pure function of the step) and a
clean stop with a checkpoint on Ctrl-C / SIGTERM (then :class:`TrainingStopped`).  Only the main
process writes files.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn
from tqdm.auto import tqdm

from infdiff.train.checkpoint import CheckpointManager
from infdiff.train.compile import begin_step, compile_parts
from infdiff.train.ema import EMA
from infdiff.train.rng import capture_rng_state, mixed_seed, restore_rng_state
from infdiff.train.run_logger import RunLogger
from infdiff.train.schedule import GradientGuard, lr_lambda
from infdiff.train.settings import MIXED_PRECISIONS, OptimizerSettings, TrainSettings
from infdiff.train.stop_signals import GracefulStop, TrainingStopped

BatchSource = Callable[[int], Iterable[torch.Tensor]]


Loss = Callable[..., Dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Hooks:
    """Stage-specific periodic work, run on the main process with the EMA model.

    ``visualize(step, ema_model)`` writes pictures (and may return numbers to log) every
    ``train.plot_samples_steps``; ``evaluate(step, ema_model) -> metrics`` adds numbers to the log
    (e.g. a held-out loss) every ``train.eval_steps``.
    """

    visualize: Optional[Callable[[int, nn.Module], Optional[Dict[str, float]]]] = None
    evaluate: Optional[Callable[[int, nn.Module], Dict[str, float]]] = None


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An ``Accelerator`` on the GPUs when present (with ``mixed_precision``), else fp32 on the CPU."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"train.mixed_precision={mixed_precision!r}; expected one of {list(MIXED_PRECISIONS)}")
    cuda = torch.cuda.is_available()
    return Accelerator(mixed_precision=mixed_precision if cuda else "no", cpu=not cuda)


def make_optimizer(model: nn.Module, opt: OptimizerSettings) -> torch.optim.Optimizer:
    """Adam (AdamW when ``weight_decay > 0``) with ``optimizer.*`` hyper-parameters.

    ``optimizer.fused`` selects PyTorch's fused kernel (CPU and CUDA since torch 2.4): the same update in
    one pass over all parameters rather than a Python loop of small ops, which dominates for small models
    (``benchmarks/results/fused_adam_cpu.json``).
    """
    cls = torch.optim.AdamW if opt.weight_decay > 0 else torch.optim.Adam
    return cls(
        model.parameters(),
        lr=opt.learning_rate,
        betas=(opt.adam_beta1, opt.adam_beta2),
        weight_decay=opt.weight_decay,
        fused=bool(opt.fused),
    )


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
    """The training state of one run directory; :meth:`fit` runs it to ``settings.max_steps``.

    ``record`` (plain data, e.g. the run's config as a dict) and ``metadata`` (e.g. latent
    statistics) are stored in every checkpoint; a resumed run whose ``record`` differs warns.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss,
        settings: TrainSettings,
        optimizer: OptimizerSettings,
        run_dir: Path,
        accelerator: Accelerator,
        hooks: Hooks = Hooks(),
        seed: int = 0,
        record: Optional[dict] = None,
        metadata: Optional[dict] = None,
    ):
        self.settings, self.run_dir, self.accelerator = settings, Path(run_dir), accelerator
        self.loss, self.hooks = loss, hooks
        self.record, self.metadata = record or {}, metadata or {}
        optimiser = make_optimizer(model, optimizer)
        decay_steps = round(optimizer.decay_fraction * settings.max_steps)
        schedule = lr_lambda(optimizer.warmup_steps, settings.max_steps, decay_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
        self.model, self.optimizer = accelerator.prepare(model, optimiser)
        self.ema = EMA(accelerator.unwrap_model(self.model), settings.ema_decay, settings.ema_update_every)
        # after the EMA's copy, which stays eager; inside any DDP wrapper, which then calls the compiled network
        unwrapped = accelerator.unwrap_model(self.model)
        self.compiled = compile_parts(unwrapped, settings.compile, settings.compile_scope)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", keep=settings.keep_checkpoints)
        self.guard = GradientGuard(
            settings.grad_clip or None, optimizer.skip_threshold, skip_nonfinite=accelerator.mixed_precision != "fp16"
        )
        self.generator = torch.Generator(device=accelerator.device)
        self.generator.manual_seed(mixed_seed(seed, accelerator.process_index))
        self.step = 0

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        own = capture_rng_state([self.generator])
        rng = gather_object([own]) if self.accelerator.num_processes > 1 else [own]
        scaler = self.accelerator.scaler
        return {
            "step": self.step,
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "loss": self.loss.state_dict() if hasattr(self.loss, "state_dict") else {},
            "gradient_guard": self.guard.state_dict(),
            "rng": rng,
            "config": self.record,
            **self.metadata,
        }

    def load_state_dict(self, state: dict) -> None:
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        if hasattr(self.loss, "load_state_dict"):
            self.loss.load_state_dict(state["loss"])
        self.guard.load_state_dict(state["gradient_guard"])
        rng = state["rng"]
        if len(rng) != self.accelerator.num_processes:
            warnings.warn(
                f"checkpoint was written by {len(rng)} processes and is resumed by "
                f"{self.accelerator.num_processes}: training continues, but not bit-exactly"
            )
        restore_rng_state(rng[self.accelerator.process_index % len(rng)], [self.generator])
        changed = config_differences(state["config"], self.record)
        if changed:
            warnings.warn("resuming with a config that differs from the checkpoint's: " + "; ".join(changed))
        self.step = state["step"]

    def resume(self, check: Optional[Callable[[dict, Path], None]] = None) -> bool:
        """Load the newest loadable checkpoint of the run directory, if any, after the main process has
        removed what writes cut short by a kill left behind; ``check(state, path)`` may refuse it first
        (raising), e.g. when the config says the weights mean something else."""
        if self.accelerator.is_main_process:
            partial = self.checkpoints.remove_partial_writes()
            if partial:
                tqdm.write(f"removed {len(partial)} partial checkpoint file(s) left by an interrupted write")
        with warnings.catch_warnings():
            if not self.accelerator.is_main_process:  # every process reads the same files: one says it
                warnings.simplefilter("ignore")
            found = self.checkpoints.newest_loadable("cpu")
            if found is not None:
                if check is not None:
                    check(found[1], found[0])
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
        begin_step(self.settings.compile)
        with self.accelerator.autocast():
            out = self.loss(self.model, batch, self.generator)
        loss = out["loss"].mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        grad_norm, skip = self.guard.clip_and_check(self.model.parameters(), self.accelerator.clip_grad_norm_)
        if not skip:
            self.optimizer.step()
            self.scheduler.step()
        metrics = {name: float(value.detach().float().mean()) for name, value in out.items()}
        metrics["grad_norm"] = grad_norm
        return metrics

    def fit(self, batches: BatchSource, logger: RunLogger) -> int:
        """Train from the current step to ``settings.max_steps``; returns the step.

        On a stop request (Ctrl-C / SIGTERM in any process) every process writes the
        checkpoint of the same step and raises :class:`TrainingStopped`.
        """
        train = self.settings
        window: Dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        progress = tqdm(
            total=train.max_steps,
            initial=self.step,
            desc="train",
            dynamic_ncols=True,
            disable=None if self.accelerator.is_main_process else True,
        )
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
                    logged.update(
                        lr=self.scheduler.get_last_lr()[0],
                        step_time=elapsed / window_steps,
                        skipped_steps=self.guard.skipped,
                    )
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
        train = self.settings
        if not self.accelerator.is_main_process:
            return
        if self.hooks.evaluate is not None and (step % train.eval_steps == 0 or step == train.max_steps):
            logger.log(step, self.hooks.evaluate(step, self.ema.model))
        if self.hooks.visualize is not None and (step % train.plot_samples_steps == 0 or step == train.max_steps):
            metrics = self.hooks.visualize(step, self.ema.model)
            if metrics:
                logger.log(step, metrics)
