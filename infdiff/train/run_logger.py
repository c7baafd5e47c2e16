"""Metric logging for a training run: a JSON-lines file, the console, and optionally TensorBoard and wandb.

``metrics.jsonl`` in the run directory is the record of truth: one JSON object per
:meth:`RunLogger.log` call, flushed as it is written and appended to (never truncated)
when a run resumes. TensorBoard and wandb are optional extras that are skipped with a
warning when not installed.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from tqdm import tqdm

from infdiff.io import PathLike, atomic_write_text

METRICS_FILE = "metrics.jsonl"
WANDB_RUN_ID_FILE = "wandb_run_id.txt"


def _to_number(name: str, value: Any) -> Union[int, float]:
    """A metric value as a Python ``int`` or ``float``; tensors and numpy values must hold one element."""
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as error:
            raise ValueError(
                f"metric {name!r} must be a single number, got an array of shape {tuple(value.shape)}"
            ) from error
    if not isinstance(value, numbers.Real):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}: {value!r}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _format_metric(name: str, value: Union[int, float]) -> str:
    """``name value`` with a short number, for the console line."""
    return f"{name} {value}" if isinstance(value, int) else f"{name} {value:.4g}"


def _ends_mid_line(path: Path) -> bool:
    """Whether ``path`` exists, is not empty and does not end with a newline."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def _warn_missing(feature: str, package: str) -> None:
    """Warn that an optional logging backend was asked for but is not importable."""
    warnings.warn(
        f"{feature} logging was requested but `{package}` is not installed (pip install {package}); "
        "continuing without it, metrics still go to metrics.jsonl",
        RuntimeWarning,
        stacklevel=3,
    )


class RunLogger:
    """Logs scalar metrics of a run to ``directory/metrics.jsonl``, the console, TensorBoard and wandb.

    Only the main process (``is_main=True``) writes or prints anything. ``config`` (a dict
    or dataclass) is sent to wandb as the run config. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        directory: PathLike,
        is_main: bool = True,
        tensorboard: bool = False,
        wandb_project: Optional[str] = None,
        config: Any = None,
    ):
        self.directory = Path(directory)
        self.is_main = is_main
        self._file = None
        self._tensorboard = None
        self._wandb_run = None
        if not is_main:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = self._open_metrics_file()
        if tensorboard:
            self._tensorboard = self._open_tensorboard()
        if wandb_project is not None:
            self._wandb_run = self._open_wandb(wandb_project, config)

    def _open_metrics_file(self):
        """Open ``metrics.jsonl`` for appending, first ending any line a crash left unfinished."""
        path = self.directory / METRICS_FILE
        unfinished = _ends_mid_line(path)
        file = open(path, "a", encoding="utf-8")
        if unfinished:
            file.write("\n")
        return file

    def _open_tensorboard(self):
        """A ``SummaryWriter`` in ``directory/tensorboard``, or ``None`` (with a warning) if unavailable."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            _warn_missing("TensorBoard", "tensorboard")
            return None
        return SummaryWriter(log_dir=str(self.directory / "tensorboard"))

    def _open_wandb(self, project: str, config: Any):
        """A wandb run, resumed if this directory already has one, or ``None`` (with a warning) if unavailable."""
        try:
            import wandb
        except ImportError:
            _warn_missing("wandb", "wandb")
            return None
        id_file = self.directory / WANDB_RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else None
        if dataclasses.is_dataclass(config):
            config = dataclasses.asdict(config)
        run = wandb.init(project=project, config=config, dir=str(self.directory), id=run_id, resume="allow")
        atomic_write_text(run.id, id_file)
        return run

    def log(self, step: int, metrics: Mapping[str, Any]) -> Dict[str, Any]:
        """Record ``metrics`` (name -> number or one-element tensor) at ``step``; returns the JSON record.

        Non-finite values are kept (as ``NaN`` / ``Infinity``, which :func:`read_metrics` reads back).
        """
        values = {name: _to_number(name, value) for name, value in metrics.items()}
        reserved = {"step", "time"} & values.keys()
        if reserved:
            raise ValueError(f"metric names {sorted(reserved)} are reserved by RunLogger; rename them")
        record = {"step": int(step), "time": round(time.time(), 3), **values}
        if not self.is_main:
            return record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        tqdm.write(" | ".join([f"step {int(step)}"] + [_format_metric(k, v) for k, v in values.items()]))
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, value, int(step))
        if self._wandb_run is not None:
            self._wandb_run.log(values, step=int(step))
        return record

    def close(self) -> None:
        """Flush and close every backend; safe to call more than once."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_metrics(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (or of the one inside a run directory), in file order.

    Lines that do not parse (a write cut short by a crash) are skipped with a warning
    naming the file and line. A resumed run appends again the steps logged after its
    checkpoint, so a step can appear more than once; the later record is the resumed one.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                warnings.warn(f"skipping unreadable line {number} of {path}: {error}", RuntimeWarning, stacklevel=2)
    return records
