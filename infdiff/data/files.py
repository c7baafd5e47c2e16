"""Finding data on disk: checked paths and the deterministic recursive listing of image files."""

from __future__ import annotations

import os
from typing import List

from infdiff.data.errors import DataError
from infdiff.io import PathLike

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def require_path(path: PathLike, key: str, expected: str, directory: bool = True) -> str:
    """Absolute form of ``path`` after checking that it exists (and is a directory if ``directory``).

    ``key`` is the config key or CLI argument the path came from and ``expected`` describes what
    it should point to; both appear in the :class:`DataError` raised otherwise.
    """
    if path is None or os.fspath(path) == "":
        raise DataError(f"{key} is empty; expected {expected}")
    resolved = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(resolved):
        raise DataError(f"{key}={os.fspath(path)!r} does not exist ({resolved}); expected {expected}")
    if directory and not os.path.isdir(resolved):
        raise DataError(f"{key}={os.fspath(path)!r} is not a directory; expected {expected}")
    return resolved


def is_image_file(name: str) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive) and is not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(root: str) -> List[str]:
    """Paths, relative to ``root``, of every image file below it, sorted (POSIX separators).

    The search is recursive, follows symbolic links and skips hidden files and directories
    (names starting with ``.``, e.g. macOS ``._x.jpg`` resource forks).
    """
    found = []
    for folder, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        found.extend(
            name if rel == "." else f"{rel}/{name}".replace(os.sep, "/") for name in names if is_image_file(name)
        )
    return sorted(found)
