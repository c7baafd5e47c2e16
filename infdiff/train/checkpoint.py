"""Crash-safe file writes and a rotating set of training checkpoints.

Every write goes to a temporary file next to its destination, is flushed and
``fsync``-ed, then renamed over the destination with :func:`os.replace` (atomic on
POSIX and Windows). A crash, ``Ctrl-C`` or full disk therefore leaves either the
previous file or the complete new one at ``path``, never a partial file.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, List, Optional, Tuple, Union

import torch

PathLike = Union[str, os.PathLike]

_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)\.pt")


def _fsync_directory(directory: Path) -> None:
    """Persist a rename inside ``directory`` (POSIX only; best effort where the filesystem refuses)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: PathLike, write: Callable[[BinaryIO], Any], fsync: bool = True) -> Path:
    """Call ``write(file)`` on a temporary sibling of ``path``, then atomically move it onto ``path``.

    With ``fsync=False`` the data and the rename are not forced to disk: a process crash
    still never exposes a partial file, but a power loss may lose the newest write.
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_directory(path.parent)
    return path


def atomic_write_bytes(data: bytes, path: PathLike, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    return _atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(text: str, path: PathLike, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(text.encode(encoding), path, fsync=fsync)


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` that never leaves a truncated file at ``path``; returns ``path``."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def torch_load(path: PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by :func:`atomic_torch_save`.

    ``weights_only=False`` is passed explicitly because torch >= 2.6 defaults to
    ``True``, whose restricted unpickler rejects what training checkpoints hold besides
    tensors (RNG states as numpy arrays and tuples, optimizer and scheduler states,
    config dicts). It unpickles arbitrary objects, so only load checkpoints you trust.
    """
    return torch.load(path, map_location=map_location, weights_only=False)


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

    def save(self, step: int, state: dict) -> Path:
        """Write ``state`` as the checkpoint of ``step`` atomically, then delete all but the newest ``keep``."""
        path = atomic_torch_save(state, self.path_for(step))
        for old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> Optional[Path]:
        """The newest checkpoint that loads, skipping (with a warning) unreadable newer ones; ``None`` if none."""
        found = self.newest_loadable("cpu")
        return found[0] if found else None

    def load(self, path: Optional[PathLike] = None, map_location: Any = "cpu") -> Any:
        """Load ``path``, or by default the newest loadable checkpoint (see :meth:`latest`).

        Raises :class:`FileNotFoundError` naming the directory when it holds no loadable checkpoint.
        """
        if path is not None:
            return torch_load(path, map_location)
        found = self.newest_loadable(map_location)
        if found is None:
            raise FileNotFoundError(
                f"no loadable checkpoint (checkpoint-<step>.pt) in {self.directory.resolve()}; "
                "start a fresh run or point to the directory of the run to resume"
            )
        return found[1]

    def newest_loadable(self, map_location: Any) -> Optional[Tuple[Path, Any]]:
        """``(path, state)`` of the newest checkpoint that loads, warning about each one that does not."""
        for path in reversed(self.checkpoints()):
            try:
                return path, torch_load(path, map_location)
            except Exception as error:  # a truncated or corrupt file raises many different types
                warnings.warn(
                    f"skipping unreadable checkpoint {path} ({type(error).__name__}: {error}); "
                    "falling back to the previous one",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return None
