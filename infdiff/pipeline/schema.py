"""The one schema of the two ∞-Diff stages' configs: every key's type and allowed range.

:func:`validate_config` runs before anything is built (by the scripts right after parsing, and by
:func:`~infdiff.pipeline.stage.run_stage` and the loaders for library callers), so a bad value
fails at once with ``--config.key=value: expected ...`` instead of a traceback after some steps.
Names resolved through a registry (``model.arch``, ``loss.name``, ...) are checked against it;
what depends on several keys (pixel counts against the grid, a schedule's spelling, a U-Net
grid that the image size must divide) is checked where it is built, with the key named there
too.  A model family with keys of its own declares them with ``CONFIG_SCHEMA.declare``.
"""

from __future__ import annotations

from typing import Mapping

from infdiff.data import DATASETS
from infdiff.data.registry import SPLITS
import infdiff.sbdm  # noqa: F401  (registers the score SDEs and samplers the schema's choices name)
from infdiff.diffusion import LOSSES, PRIORS, PROCESSES, SAMPLERS, TARGETS, TIME_DISTRIBUTIONS
from infdiff.diffusion.losses import POINTWISE_LOSSES
from infdiff.diffusion.posterior import VARIANCES
from infdiff.nn import ARCHS
from infdiff.nn.uno_plan import GRID_OPS, WIDTH_LAYOUTS
from infdiff.ops import NEIGHBOURS, SUBSETS, backend_names
from infdiff.train.fields import (
    AnyOf,
    Choice,
    Flag,
    Integer,
    Maybe,
    Name,
    Number,
    OneOf,
    Schema,
    Several,
    Text,
    validate,
)
from infdiff.train.compile import COMPILE_MODES, COMPILE_SCOPES
from infdiff.train.settings import MIXED_PRECISIONS

COUNT = Integer(minimum=1)  # sizes, widths, steps, periods
OPTIONAL_COUNT = Integer(minimum=0)
FRACTION = Number(minimum=0, maximum=1)
RATE = Number(minimum=0, below=1)  # dropout, fractions that must leave something
POSITIVE = Number(above=0)
NON_NEGATIVE = Number(minimum=0)
FIELD = Text(nonempty=True)  # a PDE variable's name, or comma-separated names

RUN = {
    "run.experiment": Name(),
    "run.output_dir": Text(nonempty=True),
    "run.seed": OPTIONAL_COUNT,
    "run.deterministic": Flag(),
    "run.tensorboard": Flag(),
    "run.wandb_project": Text(),
    "run.warm_start": Text(),  # a run directory, checkpoint file or experiment name ("": none)
}
DATA = {
    "data.name": Choice(DATASETS),
    "data.img_size": Integer(minimum=2),
    "data.root_dir": Text(),
    "data.channels": Maybe(OneOf(1, 3)),
    "data.split": Maybe(Text(SPLITS)),
    "data.random_flip": Maybe(Flag()),
    "data.num_workers": OPTIONAL_COUNT,
    "data.num_samples": OPTIONAL_COUNT,
    "data.seed": OPTIONAL_COUNT,
    "data.max_shapes": COUNT,
    "data.radius_range": Several(Number(above=0, maximum=0.5), length=2),
    "data.encode_batch_size": COUNT,
    "data.test_fraction": RATE,
    "data.fields": Maybe(AnyOf(FIELD, OPTIONAL_COUNT, Several(AnyOf(FIELD, OPTIONAL_COUNT)))),  # pdebench
    "data.time_index": Maybe(Integer()),
    "data.time_stride": Maybe(COUNT),
    "data.flip_latents": Flag(),
}
TRAIN = {
    "train.batch_size": COUNT,
    "train.max_steps": COUNT,
    "train.mixed_precision": Text(MIXED_PRECISIONS),
    "train.grad_clip": NON_NEGATIVE,
    "train.ema_decay": FRACTION,
    "train.ema_update_every": COUNT,
    "train.log_steps": COUNT,
    "train.checkpoint_steps": COUNT,
    "train.keep_checkpoints": COUNT,
    "train.eval_steps": COUNT,
    "train.plot_samples_steps": COUNT,
    "train.sample_size": COUNT,
    "train.compile": Text(COMPILE_MODES),
    "train.compile_scope": Text(COMPILE_SCOPES.names),
}
OPTIMIZER = {
    "optimizer.learning_rate": POSITIVE,
    "optimizer.adam_beta1": RATE,
    "optimizer.adam_beta2": RATE,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.warmup_steps": OPTIONAL_COUNT,
    "optimizer.decay_fraction": FRACTION,
    "optimizer.gradient_skip": Flag(),
    "optimizer.gradient_skip_threshold": POSITIVE,
    "optimizer.fused": Flag(),
}
MODEL = {
    "model.arch": Choice(ARCHS),
    "model.nf": COUNT,
    "model.time_dim": COUNT,
    "model.num_conv_blocks": OPTIONAL_COUNT,
    "model.kernel_size": COUNT,
    "model.mlp_mult": COUNT,
    "model.knn_neighbours": COUNT,
    "model.backend": Text(backend_names),
    "model.neighbours": Text(NEIGHBOURS.names),
    "model.uno_res": COUNT,
    "model.z_dim": COUNT,
    "model.stochastic": Flag(),
    "model.encoder_pool_size": COUNT,
    "model.decoder_z_grid": OPTIONAL_COUNT,
    "model.hidden": COUNT,
    "model.width": COUNT,  # the FNO score network
    "model.modes": COUNT,
    "model.fourier_layers": COUNT,
    "model.levels": COUNT,  # the CNO score network
    "model.res_blocks": OPTIONAL_COUNT,
    "model.neck_blocks": OPTIONAL_COUNT,
    "model.num_groups": COUNT,
    "model.num_layers": Integer(minimum=2),
    "model.dropout": RATE,
    "model.skip": Flag(),
    "model.uno.base_channels": COUNT,
    "model.uno.channel_mults": Several(COUNT),
    "model.uno.blocks_per_level": AnyOf(OPTIONAL_COUNT, Several(OPTIONAL_COUNT)),
    "model.uno.attn_resolutions": Several(COUNT, nonempty=False),
    "model.uno.dropout": RATE,
    "model.uno.dropout_from_resolution": COUNT,
    "model.uno.num_groups": COUNT,
    "model.uno.attn_head_dim": COUNT,
    "model.uno.conv_type": Text(GRID_OPS),
    "model.uno.spectral_modes": Maybe(COUNT),
    "model.uno.append_coordinates": Maybe(Flag()),
    "model.uno.width_layout": Text(lambda: sorted(WIDTH_LAYOUTS)),
}
DIFFUSION = {
    "loss.name": Choice(LOSSES),
    "loss.target": Choice(TARGETS),
    "loss.timesteps": Choice(TIME_DISTRIBUTIONS),
    "loss.pointwise": Text(lambda: sorted(POINTWISE_LOSSES)),
    "loss.subset": Choice(SUBSETS),
    "loss.points": COUNT,
    "loss.encoder_points": COUNT,
    "loss.kl_weight": NON_NEGATIVE,
    "process.name": Choice(PROCESSES),
    "process.schedule": Text(nonempty=True),
    "process.steps": COUNT,
    "process.mollified_states": Flag(),
    "process.beta_min": NON_NEGATIVE,  # the score SDEs (infdiff.sbdm)
    "process.beta_max": POSITIVE,
    "process.sigma_min": POSITIVE,
    "process.sigma_max": POSITIVE,
    "prior.name": Choice(PRIORS),
    "prior.std": POSITIVE,
    "prior.inv_snr": NON_NEGATIVE,
    "prior.s": Number(above=1),  # trace class on the unit square
    "prior.tau": POSITIVE,
    "prior.modes": COUNT,  # the random spectral (fno) and combined priors
    "prior.seed": OPTIONAL_COUNT,
    "prior.weight": NON_NEGATIVE,
    "sampler.name": Choice(SAMPLERS),
    "sampler.steps": AnyOf(COUNT, Text(nonempty=True)),
    "sampler.eta": NON_NEGATIVE,
    "sampler.variance": Text(VARIANCES),
    "sampler.snr": POSITIVE,
    "sampler.corrector_steps": OPTIONAL_COUNT,
    "sampler.rtol": POSITIVE,
    "sampler.atol": POSITIVE,
}

CONFIG_SCHEMA = Schema(
    {**RUN, **DATA, **TRAIN, **OPTIMIZER, **MODEL, **DIFFUSION},
    sections=("run", "data", "train", "optimizer", "model", "loss", "process", "prior", "sampler"),
)


# The options of sampling a trained model (generate_samples.py, calculate_fid.py, generate_recons.py, test_sbdm.py
# and the functions behind them), as argparse types and as checks of library calls alike.
SAMPLING_OPTIONS = {
    "num_samples": COUNT,
    "num_images": COUNT,
    "batch_size": COUNT,
    "sample_img_size": Maybe(Integer(minimum=2)),
    "sizes": Several(Integer(minimum=2)),
    "sampling_steps": COUNT,
    "latent_sampling_steps": Maybe(COUNT),
    "noise_size": Maybe(Integer(minimum=2)),
    "seed": OPTIONAL_COUNT,
    "inv_snr": Maybe(NON_NEGATIVE),
    "upscale": COUNT,  # test_sbdm.py: the second sampling size as a multiple of the first
    "input_height": Maybe(Integer(minimum=2)),
    "steps": Maybe(COUNT),
    "reference_count": Maybe(COUNT),
    "bits_per_dim": OPTIONAL_COUNT,
}


def check_sampling_options(**values) -> None:
    """Raise a :class:`~infdiff.train.config.ConfigError` ``--name=value: expected ...`` for the first of
    ``values`` (keyword: one of :data:`SAMPLING_OPTIONS`) that is not allowed."""
    for name, value in values.items():
        SAMPLING_OPTIONS[name].check(value, f"--{name}")


def validate_config(config: Mapping, flag: str = "config", source: str = "") -> None:
    """Check ``config`` against :data:`CONFIG_SCHEMA` (see :func:`infdiff.train.fields.validate`)."""
    validate(config, CONFIG_SCHEMA, flag, source)
