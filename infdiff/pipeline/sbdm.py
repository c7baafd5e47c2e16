"""Function-space score diffusion (:mod:`infdiff.sbdm`) as a stage of the shared runner.

A score network (``model.arch``: ``fno``, ...) on whole images, the shared denoising loss in
continuous time (target ``epsilon``: the preconditioned score matching of ``η = Q z``), a score SDE
(``process.name``: ``vp_sde``, ...) with any prior (``prior.name``: ``laplacian``, ``bessel``,
``white``), the shared batches (:func:`~infdiff.pipeline.autoencoder.image_batches`: exact resume),
and pictures of samples drawn natively at the training size and at twice it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from accelerate import Accelerator
from ml_collections import ConfigDict

from infdiff.data import build_dataset, data_channels, random_flip
from infdiff.diffusion import make_denoiser
from infdiff.pipeline.autoencoder import image_batches
from infdiff.pipeline.build import SamplerSpec, build_loss, build_model, build_process, train_size
from infdiff.pipeline.stage import Stage, run_stage
from infdiff.train.batches import check_batches
from infdiff.train.images import save_step_comparison
from infdiff.train.loop import Hooks
from infdiff.train.settings import TrainSettings


def build_score_network(config: ConfigDict) -> torch.nn.Module:
    return build_model(config, channels=data_channels(config.data), train_size=train_size(config))


def sample_images(
    model,
    config: ConfigDict,
    count: int,
    size: int,
    generator: torch.Generator,
    device,
    sampler: Optional[SamplerSpec] = None,
) -> torch.Tensor:
    """``count`` samples drawn natively on a ``size²`` grid with the config's process and target, and its sampler
    unless ``sampler`` replaces it."""
    process = build_process(config)
    x_T = process.terminal_state((count, data_channels(config.data), size, size), generator, device)
    denoise = make_denoiser(model, process, config.loss.target)
    return (sampler or SamplerSpec.from_section(config.sampler))(denoise, x_T, process, generator, False)


def pictured(images: torch.Tensor) -> torch.Tensor:
    """``images`` as pictures can show them: unchanged with 1 or 3 channels, else each channel as its own grey
    image (``(B·C, 1, H, W)``, a sample's channels side by side: PDE fields of any count)."""
    return images if images.shape[1] in (1, 3) else images.flatten(0, 1)[:, None]


def sample_hook(config: ConfigDict, settings: TrainSettings, run_dir: Path, device) -> Callable:
    """EMA samples at 1× and 2× the training size (rows of ``samples/samples_<step>.png``, see :func:`pictured`),
    with their mean and standard deviation in the JSON beside it."""
    size, count = config.data.img_size, settings.sample_size

    def visualize(step: int, ema_model) -> Dict[str, float]:
        rows, metrics = [], {}
        for factor in (1, 2):
            generator = torch.Generator(device=device).manual_seed(config.run.seed)
            images = sample_images(ema_model, config, count, factor * size, generator, device)
            rows.append((f"{factor}x", pictured(images)))
            metrics[f"sample_mean_{factor}x"], metrics[f"sample_std_{factor}x"] = (
                float(images.mean()),
                float(images.std()),
            )
        save_step_comparison(rows, metrics, run_dir / "samples", "samples", step)
        return metrics

    return visualize


def score_stage(config: ConfigDict, accelerator: Accelerator, settings: TrainSettings, run_dir: Path) -> Stage:
    """The score network, loss, batches and sample pictures (for :func:`run_stage`)."""
    dataset = build_dataset(config.data)
    check_batches(len(dataset), settings.batch_size, accelerator.num_processes, "images")
    process = build_process(config)
    hooks = Hooks(
        visualize=sample_hook(config, settings, run_dir, accelerator.device) if accelerator.is_main_process else None
    )
    flips = random_flip(config.data)
    data = f"{config.data.name}, {len(dataset)} images of {data_channels(config.data)}×{config.data.img_size}²"
    batches = image_batches(dataset, flips, config, settings, accelerator)
    return Stage(build_score_network(config), build_loss(config, process), batches, hooks, summary={"data": data})


def train_score_model(config: ConfigDict) -> Path:
    """Train (or resume) ``config``'s score model; returns the run directory."""
    return run_stage(config, score_stage)
