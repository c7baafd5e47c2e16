"""Run directories: where an experiment's checkpoints, logs and pictures live, and loading them.

An experiment named ``E`` lives in ``<run.output_dir>/E/``: ``checkpoints/``, ``metrics.jsonl``,
``config.json`` and ``samples/``.  Generation scripts find trained weights by experiment name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from ml_collections import ConfigDict

from infdiff.train.checkpoint import CheckpointManager, atomic_write_text
from infdiff.train.config import config_to_json


def run_directory(config: ConfigDict) -> Path:
    return Path(config.run.output_dir) / config.run.experiment


def write_run_config(config: ConfigDict, run_dir: Path, name: str = "config.json") -> Path:
    """Record the config a run was (re)started with, atomically."""
    return atomic_write_text(config_to_json(config) + "\n", run_dir / name)


def load_latest_checkpoint(config: ConfigDict, flag: str = "config", script: str = "train_inf_ae_diffusion.py"
                           ) -> Tuple[dict, Path]:
    """The newest checkpoint of ``config``'s experiment and its path; a clear error when there is none."""
    run_dir = run_directory(config)
    found = CheckpointManager(run_dir / "checkpoints").newest_loadable("cpu")
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint for experiment {config.run.experiment!r} (--{flag}.run.experiment) in "
            f"{run_dir / 'checkpoints'}; train it first with `python {script} --{flag} ...` or point "
            f"--{flag}.run.output_dir / --{flag}.run.experiment at an existing run")
    path, state = found
    return state, path
