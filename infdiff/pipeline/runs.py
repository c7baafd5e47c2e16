"""Run directories: where an experiment's checkpoints, logs and pictures live, and its saved config.

An experiment named ``E`` lives in ``<run.output_dir>/E/``: ``checkpoints/``, ``metrics.jsonl``,
``config.json`` and ``samples/``.  Later stages and generation find a trained run by experiment
name, and **the run's saved config is the source of truth**: :func:`saved_run_config` reads it
and applies command-line overrides on top, refusing those that contradict what the weights were
trained with (:data:`FIXED_KEYS`), so nothing has to be repeated from the training command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence, Tuple

from ml_collections import ConfigDict
from tqdm.auto import tqdm

from infdiff.io import atomic_write_text
from infdiff.pipeline.legacy_keys import LEGACY_KEYS
from infdiff.train.checkpoint import CheckpointManager
from infdiff.train.config import ConfigError, Override, config_to_json, override, resolve_key

CONFIG_FILE = "config.json"
# Keys whose value is part of what a checkpoint's weights mean; prefixes end with ".".
FIXED_KEYS = ("model.", "process.", "prior.", "loss.target", "data.img_size", "data.channels")
FREE_KEYS = ("prior.inv_snr",)  # display settings inside fixed sections


def run_directory(config: ConfigDict) -> Path:
    return Path(config.run.output_dir) / config.run.experiment


def write_run_config(config: ConfigDict, run_dir: Path, name: str = CONFIG_FILE) -> Path:
    """Record the config a run was (re)started with, atomically."""
    return atomic_write_text(config_to_json(config) + "\n", run_dir / name)


def load_latest_checkpoint(
    config: ConfigDict, flag: str = "config", script: str = "train_inf_ae_diffusion.py"
) -> Tuple[dict, Path]:
    """The newest checkpoint of ``config``'s experiment and its path; a clear error when there is none."""
    run_dir = run_directory(config)
    found = CheckpointManager(run_dir / "checkpoints").newest_loadable()
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint for experiment {config.run.experiment!r} (--{flag}.run.experiment) in "
            f"{run_dir / 'checkpoints'}; train it first with `python {script} --{flag} ...` or point "
            f"--{flag}.run.output_dir / --{flag}.run.experiment at an existing run"
        )
    path, state = found
    return state, path


def _is_fixed(key: str) -> bool:
    return key not in FREE_KEYS and any(key == k or (k.endswith(".") and key.startswith(k)) for k in FIXED_KEYS)


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"a.b": leaf}`` of a nested dict, sequences as lists (as JSON stores them)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.loads(json.dumps(value, default=str))
    return out


def fixed_differences(given: dict, trained: dict) -> List[str]:
    """``key (given X, trained Y)`` for every fixed key on which two config dicts differ."""
    a, b = _flat(given), _flat(trained)
    return [
        f"{key} (given {a.get(key)!r}, trained {b.get(key)!r})"
        for key in sorted(a.keys() | b.keys())
        if _is_fixed(key) and a.get(key) != b.get(key)
    ]


def saved_run_config(
    config: ConfigDict,
    overrides: Sequence[Override] = (),
    flag: str = "config",
    script: str = "train_inf_ae_diffusion.py",
) -> ConfigDict:
    """The config saved in the run that ``config`` names, with ``overrides`` ``(key, text)`` applied.

    ``config`` (a config file with its overrides) only locates the run (``run.output_dir``,
    ``run.experiment``); an override of a :data:`FIXED_KEYS` key that differs from the saved value
    is an error naming it, and the file's own fixed values that differ are reported, not used.
    """
    run_dir = run_directory(config)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        load_latest_checkpoint(config, flag, script)  # the clearer error when the run does not exist
        raise ConfigError(
            f"{path} is missing, so the config of experiment {config.run.experiment!r} is unknown; "
            f"re-run `python {script} --{flag} ...` once to record it"
        )
    saved = ConfigDict(json.loads(path.read_text()))
    saved.run.output_dir, saved.run.experiment = config.run.output_dir, config.run.experiment
    saved.lock()
    contradicting = []
    for key, text in overrides:
        resolved = resolve_key(saved, key, LEGACY_KEYS)
        before = _flat(saved.to_dict()).get(resolved)
        override(saved, key, text, flag=flag, aliases=LEGACY_KEYS)
        after = _flat(saved.to_dict()).get(resolved)
        if _is_fixed(resolved) and after != before:
            contradicting.append(f"--{flag}.{key}={text} (the run was trained with {resolved}={before!r})")
    if contradicting:
        raise ConfigError(
            f"overrides contradict the trained run {run_dir} ({path}): "
            + "; ".join(contradicting)
            + "; drop them, or train a new experiment with them"
        )
    ignored = [d for d in fixed_differences(config.to_dict(), saved.to_dict()) if not d.startswith("run.")]
    if ignored:
        tqdm.write(f"using the config saved with {run_dir}; the --{flag} file differs in " + ", ".join(ignored))
    return saved


REMEDIES = {
    "load": "build it from the run's saved config (infdiff.pipeline.runs.saved_run_config)",
    "resume": "these keys fix what the weights mean: resume with the run's values, or start a new run "
    "with another --config.run.experiment",
}


def check_trained_with(config: ConfigDict, state: dict, path: Path, flag: str = "config", use: str = "load") -> None:
    """Raise a :class:`ConfigError` naming the fixed keys on which ``config`` and the checkpoint's differ
    (``use``: ``"load"`` for a trained run loaded, ``"resume"`` for one whose training continues)."""
    differences = fixed_differences(config.to_dict(), state["config"])
    if differences:
        raise ConfigError(
            f"--{flag} does not match the checkpoint {path} in " + ", ".join(differences) + "; " + REMEDIES[use]
        )
