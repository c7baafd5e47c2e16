"""Run directories: where an experiment's checkpoints, logs and pictures live, and its saved config.

An experiment named ``E`` lives in ``<run.output_dir>/E/``: ``checkpoints/``, ``metrics.jsonl``,
``config.json`` and ``samples/``.  Later stages and generation find a trained run by experiment
name, and **the run's saved config is the source of truth**: :func:`saved_run_config` reads it
and applies command-line overrides on top, refusing those that contradict what the weights were
trained with (:data:`FIXED_KEYS`), so nothing has to be repeated from the training command.
:func:`trained_run` finds a run by its directory, a checkpoint file or an experiment name instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

from ml_collections import ConfigDict
from tqdm.auto import tqdm

from infdiff.io import PathLike, atomic_write_text, torch_load
from infdiff.pipeline.legacy_keys import LEGACY_KEYS
from infdiff.train.checkpoint import CheckpointManager
from infdiff.train.config import ConfigError, Override, config_to_json, override, resolve_key

CONFIG_FILE = "config.json"
DEFAULT_OUTPUT_DIR = "runs"  # run.output_dir of the default configs
STAGE_KEY = "stage"  # the checkpoint entry naming the stage builder that trained it (older checkpoints: none)
# Keys whose value is part of what a checkpoint's weights mean; prefixes end with ".".
FIXED_KEYS = ("model.", "process.", "prior.", "loss.target", "data.img_size", "data.channels", "data.fields")
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


def saved_config(run_dir: PathLike) -> Optional[ConfigDict]:
    """The config saved in ``run_dir`` (:data:`CONFIG_FILE`), its ``run`` keys naming that directory, or ``None``."""
    run_dir = Path(run_dir).absolute()
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    saved = ConfigDict(json.loads(path.read_text()))
    saved.run.output_dir, saved.run.experiment = str(run_dir.parent), run_dir.name
    return saved


class TrainedRun(NamedTuple):
    """A trained run's config, one of its checkpoints, where that checkpoint is and the run directory holding it
    (``None`` for a checkpoint outside one)."""

    config: ConfigDict
    state: dict
    checkpoint: Path
    run_dir: Optional[Path]


def _checkpoint_state(path: Path, flag: str) -> dict:
    try:
        state = torch_load(path)
    except Exception as error:  # not a checkpoint: many different types
        raise ConfigError(f"--{flag} {path}: not a loadable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or not {"ema", "config", "step"} <= state.keys():
        raise ConfigError(f"--{flag} {path}: not a training checkpoint (expected the keys ema, config and step)")
    return state


def trained_run(
    where: PathLike, flag: str = "checkpoint", script: str = "train_sbdm.py", stage: Optional[str] = None
) -> TrainedRun:
    """The trained run that ``where`` names: a checkpoint file (that checkpoint), a run directory (its newest
    loadable checkpoint) or an experiment's name (the run ``<DEFAULT_OUTPUT_DIR>/<name>``).

    Its config is the one saved in the run directory, or, for a checkpoint outside one (or a run without
    :data:`CONFIG_FILE`), the one the checkpoint records; the two must agree on :data:`FIXED_KEYS`.  With
    ``stage``, a checkpoint that records another stage (:data:`STAGE_KEY`, written by
    :func:`~infdiff.pipeline.stage.run_stage`) is refused: its network is called differently.
    """
    path = Path(where)
    if not path.exists() and len(path.parts) == 1:
        path = Path(DEFAULT_OUTPUT_DIR) / path
    if path.is_dir():
        found = CheckpointManager(path / "checkpoints").newest_loadable()
        if found is None:
            raise FileNotFoundError(
                f"--{flag} {where}: no loadable checkpoint in {path / 'checkpoints'}; train the run first "
                f"(`python experiments/{script} ...`) or name a run directory or checkpoint file"
            )
        checkpoint, state = found
        run_dir = path
    elif path.is_file():
        checkpoint, state = path, _checkpoint_state(path, flag)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    else:
        looked = "" if path == Path(where) else f" (nor {path})"
        raise FileNotFoundError(f"--{flag} {where}: no such checkpoint file, run directory or experiment{looked}")
    trained_by = state.get(STAGE_KEY, stage)
    if stage is not None and trained_by != stage:
        raise ConfigError(
            f"--{flag} {where}: {checkpoint} was trained by the {trained_by} stage, not the {stage} this needs "
            f"(train one with `python experiments/{script} ...`)"
        )
    config = (saved_config(run_dir) if run_dir is not None else None) or ConfigDict(state["config"])
    check_trained_with(config, state, checkpoint, flag)
    return TrainedRun(config, state, checkpoint, run_dir)


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
    saved = saved_config(run_dir)
    if saved is None:
        load_latest_checkpoint(config, flag, script)  # the clearer error when the run does not exist
        raise ConfigError(
            f"{path} is missing, so the config of experiment {config.run.experiment!r} is unknown; "
            f"re-run `python {script} --{flag} ...` once to record it"
        )
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
