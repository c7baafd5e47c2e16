"""One runner for every training stage: set-up, a start-up summary, the shared loop, logs.

A stage (∞-Diff's autoencoder, its latent DDPM, any future model family) supplies a function
that builds its :class:`Stage` (network, loss, batch source, hooks) for an accelerator;
:func:`run_stage` does everything else: settings from ``config.train`` / ``config.optimizer``,
seeding and optional determinism, the run directory, resuming, the summary printed before the
first progress bar, the saved config, and the loggers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from ml_collections import ConfigDict
from torch import nn
from tqdm.auto import tqdm

from infdiff.pipeline.runs import STAGE_KEY, check_trained_with, run_directory, trained_run, write_run_config
from infdiff.pipeline.schema import validate_config
from infdiff.train.config import ConfigError
from infdiff.train.loop import Hooks, Loss, Trainer, make_accelerator
from infdiff.train.run_logger import RunLogger
from infdiff.train.settings import OptimizerSettings, TrainSettings, from_section


@dataclass
class Stage:
    """What a stage brings to :func:`run_stage`: its network, loss, batches from a step on, hooks
    (only called on the main process), checkpoint ``metadata`` and summary lines (``data``, ...)."""

    model: nn.Module
    loss: Loss
    batches: Callable[[int], Iterable[torch.Tensor]]
    hooks: Hooks = Hooks()
    metadata: dict = field(default_factory=dict)
    summary: Dict[str, str] = field(default_factory=dict)


StageBuilder = Callable[[ConfigDict, Accelerator, TrainSettings, Path], Stage]


def make_deterministic() -> None:
    """Ask PyTorch for deterministic kernels (warning where an op has none) and cuBLAS for fixed workspaces.

    On the CPU the results of one machine and thread count repeat without it; it matters on GPUs,
    where atomics and autotuned kernels change the order of sums (README, Reproducibility).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def warm_start(trainer: Trainer, where: str, stage: str) -> str:
    """Start a fresh run from the EMA weights of the trained run ``where`` names (a run directory, checkpoint
    file or experiment: :func:`~infdiff.pipeline.runs.trained_run`), in its network and its EMA, with a
    fresh optimiser and schedule; returns the summary line.

    Multilevel Diffusion's coarse-to-fine training (Hagemann et al. 2023): a resolution-free network
    trained on a coarse grid (``data.img_size=32``) continues on a finer one (64) at a fraction of the
    cost.  The run must come from the same ``stage`` (builder); a run that resumes from its own checkpoint
    ignores it.
    """
    run = trained_run(where, flag="config.run.warm_start", stage=stage)
    weights = run.state["ema"]["model"]
    try:
        trainer.accelerator.unwrap_model(trainer.model).load_state_dict(weights)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].strip()
        raise ConfigError(
            f"--config.run.warm_start={where}: the weights of {run.checkpoint} do not fit this network "
            f"(model {run.config.model.get('arch')!r} there; {reason})"
        ) from None
    trainer.ema.load_state_dict({"model": weights})
    size = run.config.data.get("img_size")
    return f"{run.checkpoint} (step {run.state['step']}" + (f", trained at {size}²)" if size else ")")


def _summary(config: ConfigDict, stage: Stage, trainer: Trainer, accelerator: Accelerator, resumed: bool) -> List[str]:
    parameters = sum(p.numel() for p in stage.model.parameters())
    device = f"{accelerator.device}" + (
        f" ({torch.get_num_threads()} threads)"
        if accelerator.device.type == "cpu"
        else f" ×{accelerator.num_processes}"
    )
    settings = trainer.settings
    precision = "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision
    kernels = ", deterministic kernels" if config.run.deterministic else ""
    if settings.compile != "none":
        parts = ", ".join(name or "the whole network" for name in trainer.compiled)
        kernels += f", compiled ({settings.compile}): {parts or 'nothing (no part of this model has static shapes)'}"
    lines = [
        f"run {trainer.run_dir}: " + (f"resuming at step {trainer.step}" if resumed else "fresh"),
        *(f"  {name}: {text}" for name, text in stage.summary.items()),
        f"  model: {config.model.arch}, {parameters:,} parameters; loss {config.loss.name} "
        f"(target {config.loss.target}); process {config.process.name}, prior {config.prior.name}",
        f"  device: {device}, precision {precision}{kernels}; batch {settings.batch_size}, "
        f"{settings.max_steps} steps, seed {config.run.seed}",
    ]
    return lines


def run_stage(config: ConfigDict, build: StageBuilder) -> Path:
    """Train (or resume) the stage ``build`` makes from ``config``; returns the run directory."""
    validate_config(config)
    settings = from_section(TrainSettings, config.train, "train")
    optimizer = from_section(OptimizerSettings, config.optimizer, "optimizer")
    if config.run.deterministic:
        make_deterministic()
    accelerator = make_accelerator(settings.mixed_precision)
    set_seed(config.run.seed)
    run_dir = run_directory(config)
    stage = build(config, accelerator, settings, run_dir)
    main = accelerator.is_main_process
    trainer = Trainer(
        stage.model,
        stage.loss,
        settings,
        optimizer,
        run_dir,
        accelerator,
        hooks=stage.hooks if main else Hooks(),
        seed=config.run.seed,
        record=config.to_dict(),
        metadata={STAGE_KEY: build.__name__, **stage.metadata},
    )
    resumed = trainer.resume(lambda state, path: check_trained_with(config, state, path, use="resume"))
    if not resumed and config.run.get("warm_start"):
        stage.summary["warm start"] = warm_start(trainer, config.run.warm_start, build.__name__)
    if main:
        for line in _summary(config, stage, trainer, accelerator, resumed):
            tqdm.write(line)
        write_run_config(config, run_dir)
    with RunLogger(
        run_dir,
        is_main=main,
        tensorboard=config.run.tensorboard,
        wandb_project=config.run.wandb_project or None,
        config=config.to_dict(),
    ) as logger:
        trainer.fit(stage.batches, logger)
    return run_dir
