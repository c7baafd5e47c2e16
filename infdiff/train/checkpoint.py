"""A rotating set of training checkpoints, each written atomically (:mod:`infdiff.io`)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple

from infdiff.io import PathLike, UnsafeFileError, atomic_torch_save, torch_load

_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)\.pt")
_PARTIAL_NAME = re.compile(r"\.checkpoint-\d+\.pt\.(\d+)\.[0-9a-f]+\.tmp")  # infdiff.io's temporary names


def checkpoint_step(path: PathLike) -> Optional[int]:
    """The step encoded in a ``checkpoint-{step:08d}.pt`` file name, or ``None`` for other names."""
    match = _CHECKPOINT_NAME.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


class CheckpointManager:
    """Keeps the newest ``keep`` checkpoints ``checkpoint-{step:08d}.pt`` in ``directory``.

    Only the main process should call :meth:`save`; any process may load.
    """

    def __init__(self, directory: PathLike, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def path_for(self, step: int) -> Path:
        """Where the checkpoint of ``step`` lives."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.directory / f"checkpoint-{step:08d}.pt"

    def checkpoints(self) -> List[Path]:
        """Existing checkpoint files, oldest step first."""
        if not self.directory.is_dir():
            return []
        paths = [p for p in self.directory.iterdir() if checkpoint_step(p) is not None and p.is_file()]
        return sorted(paths, key=checkpoint_step)

    def remove_partial_writes(self) -> List[Path]:
        """Delete the temporary files of checkpoint writes whose process is gone (killed mid-write); returns them.

        A write in progress in a live process (its pid is in the name) is left alone.
        """
        if not self.directory.is_dir():
            return []
        removed = []
        for path in self.directory.iterdir():
            match = _PARTIAL_NAME.fullmatch(path.name)
            if match and not _process_alive(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def save(self, step: int, state: dict) -> Path:
        """Write ``state`` as the checkpoint of ``step`` atomically, then delete all but the newest ``keep``."""
        path = atomic_torch_save(state, self.path_for(step))
        for old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def newest_loadable(self, map_location: Any = "cpu") -> Optional[Tuple[Path, Any]]:
        """``(path, state)`` of the newest checkpoint that loads, warning about each one that does not."""
        for path in reversed(self.checkpoints()):
            try:
                return path, torch_load(path, map_location)
            except UnsafeFileError as error:
                warnings.warn(
                    f"refusing {error}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=3
                )
            except Exception as error:  # a truncated or corrupt file raises many different types
                warnings.warn(
                    f"skipping unreadable checkpoint {path} ({type(error).__name__}: {error}); "
                    "falling back to the previous one",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return None


def _process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (signal 0 probes without sending anything)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    return True
