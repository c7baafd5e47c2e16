"""Reading PDEBench-style HDF5 files of 2-D fields: the optional h5py import, the two layouts, per-field extrema.

Two layouts are recognised (by :func:`file_layout`):

* **grouped** (``2D_diff-react_NA_NA.h5``, ``2D_rdb_NA_NA.h5``): top-level groups ``"0000"``,
  ``"0001"``, ... (one per trajectory, in numeric order), each holding a dataset ``data`` of shape
  ``(T, X, Y, C)``, or ``(T, X, Y)`` for one channel.  The fields are the channels, named ``"0"``,
  ``"1"``, ...; a group's ``grid`` (``x``, ``y``, ``t``) is not read, except that a ``grid`` without
  ``y`` marks a 1-D file and is refused.
* **flat** (``2D_CFD_*.hdf5``): top-level datasets of shape ``(N, T, X, Y)``, one per variable
  (``density``, ``pressure``, ``Vx``, ``Vy``), all of one shape; the fields are their names, sorted
  ignoring case (PDEBench's order: density, pressure, Vx, Vy).  Datasets of another rank (``x-coordinate``, ``t-coordinate``, Darcy's ``nu``) and
  names ending in ``-coordinate`` are not fields.

Anything else (1-D or 3-D PDEBench files among them) is a :class:`~infdiff.data.errors.DataError`
naming the file and what was found.  h5py is optional (``pip install infdiff[pde]``): it is imported
only when a file is opened.  Layouts and extrema are cached in memory per file (its path, size and
modification time), so the train and test data sets of one file, and the channel count of the
config, read its metadata and values once per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from infdiff.data.errors import DataError

HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf")
COORDINATE_SUFFIX = "-coordinate"
CHUNK_VALUES = 1 << 24  # values read at once while computing extrema (128 MiB as float64)
MIN_SIDE = 2  # points a 2-D field needs along each axis

Bounds = Tuple[float, float]
_LAYOUTS: Dict[tuple, "Layout"] = {}
_EXTREMA: Dict[tuple, Bounds] = {}


def require_h5py():
    """The ``h5py`` module, or a one-line :class:`DataError` saying how to install it."""
    try:
        import h5py
    except ImportError:
        raise DataError(
            "the 'pdebench' data set reads HDF5 files with h5py, which is not installed: pip install infdiff[pde]"
        ) from None
    return h5py


def open_hdf5(path: str):
    """``path`` opened read-only with h5py; a file that is not HDF5 is a :class:`DataError` naming it."""
    h5py = require_h5py()
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: cannot be opened as HDF5 ({err}); expected a PDEBench-style .h5 file") from err


def file_signature(path: str) -> tuple:
    """What identifies one version of a file for the caches: its path, size and modification time."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class Layout:
    """Where a file's fields are: ``members`` (the trajectory groups, or the field datasets), the ``fields``
    (channel names), the number of ``trajectories``, the ``steps`` of each and the ``grid`` (X, Y) of a snapshot."""

    members: Tuple[str, ...]
    fields: Tuple[str, ...]
    trajectories: int
    steps: int
    grid: Tuple[int, int]

    kind = ""

    def read(self, handle, trajectory: int, step: int, channels: Sequence[int]) -> np.ndarray:
        """Snapshot ``step`` of ``trajectory`` as a ``(len(channels), X, Y)`` array of the file's dtype."""
        raise NotImplementedError

    def extrema(self, handle, channels: Sequence[int]) -> Dict[int, Bounds]:
        """``{channel: (min, max)}`` over every trajectory and step, for ``channels`` at least."""
        raise NotImplementedError


def _blocks(dataset) -> Iterator[np.ndarray]:
    """``dataset`` read in slices along its first axis of about :data:`CHUNK_VALUES` values (one row at least)."""
    rows = max(1, CHUNK_VALUES // max(1, int(np.prod(dataset.shape[1:]))))
    for start in range(0, dataset.shape[0], rows):
        yield dataset[start : start + rows]


class GroupedLayout(Layout):
    """One group per trajectory, its channels in ``<group>/data`` ``(T, X, Y[, C])``."""

    kind = "grouped"

    def read(self, handle, trajectory: int, step: int, channels: Sequence[int]) -> np.ndarray:
        snapshot = handle[self.members[trajectory]]["data"][step]
        snapshot = snapshot[None] if snapshot.ndim == 2 else np.moveaxis(snapshot, -1, 0)
        return snapshot[list(channels)]

    def extrema(self, handle, channels: Sequence[int]) -> Dict[int, Bounds]:
        count = len(self.fields)
        low, high = np.full(count, np.inf), np.full(count, -np.inf)
        for member in self.members:
            for block in _blocks(handle[member]["data"]):
                values = block.reshape(-1, count)
                low, high = np.minimum(low, values.min(axis=0)), np.maximum(high, values.max(axis=0))
        return {c: (float(low[c]), float(high[c])) for c in range(count)}


class FlatLayout(Layout):
    """One dataset ``(N, T, X, Y)`` per field."""

    kind = "flat"

    def read(self, handle, trajectory: int, step: int, channels: Sequence[int]) -> np.ndarray:
        return np.stack([handle[self.members[c]][trajectory, step] for c in channels])

    def extrema(self, handle, channels: Sequence[int]) -> Dict[int, Bounds]:
        bounds = {}
        for c in channels:
            lows, highs = zip(*((block.min(), block.max()) for block in _blocks(handle[self.members[c]])))
            bounds[c] = (float(np.min(lows)), float(np.max(highs)))  # NaN propagates, unlike min()
        return bounds


def _natural(name: str) -> tuple:
    """Sort key putting numeric names in numeric order (``"2"`` before ``"10"``), then the others."""
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def _describe(handle) -> str:
    """The top-level members of a file with their kinds and shapes (the first eight)."""
    h5py = require_h5py()
    names = list(handle.keys())
    if not names:
        return "an empty file"
    parts = []
    for name in names[:8]:
        item = handle[name]
        parts.append(f"{name!r} (dataset {item.shape})" if isinstance(item, h5py.Dataset) else f"{name!r} (group)")
    return "top-level " + ", ".join(parts) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _check_values(path: str, name: str, dataset) -> None:
    if not np.issubdtype(dataset.dtype, np.number):
        raise DataError(f"{path}: {name!r} holds {dataset.dtype} values; expected numbers")


def _check_grid(path: str, name: str, grid: Tuple[int, int]) -> None:
    if min(grid) < MIN_SIDE:
        raise DataError(
            f"{path}: {name!r} has a {grid[0]}x{grid[1]} grid; expected 2-D fields with at least {MIN_SIDE} "
            "points along each axis (is this a 1-D file?)"
        )


def _grouped(path: str, handle, groups: List[str]) -> GroupedLayout:
    h5py = require_h5py()
    first = None
    for name in groups:
        group = handle[name]
        data = group.get("data")
        if not isinstance(data, h5py.Dataset):
            raise DataError(
                f"{path}: group {name!r} has no dataset 'data'; expected every top-level group to hold one "
                "(PDEBench's grouped layout: '0000/data' of shape (T, X, Y[, C]))"
            )
        if data.ndim not in (3, 4):
            raise DataError(f"{path}: '{name}/data' has shape {data.shape}; expected (T, X, Y) or (T, X, Y, C)")
        if "grid" in group and isinstance(group["grid"], h5py.Group) and "y" not in group["grid"]:
            raise DataError(f"{path}: '{name}/grid' has no 'y'; expected a file of 2-D fields, not a 1-D one")
        if first is None:
            first = (name, data.shape)
            _check_values(path, f"{name}/data", data)
        elif data.shape != first[1]:
            raise DataError(
                f"{path}: '{name}/data' has shape {data.shape} but '{first[0]}/data' {first[1]}; "
                "expected every trajectory to have the same shape"
            )
    shape = first[1]
    _check_grid(path, f"{first[0]}/data", shape[1:3])
    channels = 1 if len(shape) == 3 else shape[3]
    fields = tuple(str(c) for c in range(channels))
    return GroupedLayout(tuple(groups), fields, len(groups), shape[0], tuple(shape[1:3]))


def _flat(path: str, handle, names: List[str]) -> FlatLayout:
    shapes = {name: handle[name].shape for name in names}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name!r} {shape}" for name, shape in shapes.items())
        raise DataError(f"{path}: the field datasets have different shapes ({listed}); expected one (N, T, X, Y)")
    for name in names:
        _check_values(path, name, handle[name])
    count, steps, *grid = shapes[names[0]]
    _check_grid(path, names[0], tuple(grid))
    return FlatLayout(tuple(names), tuple(names), count, steps, tuple(grid))


def detect_layout(path: str, handle) -> Layout:
    """The :class:`Layout` of the open file ``handle`` (read from ``path``); a :class:`DataError` if it has none."""
    h5py = require_h5py()
    groups = sorted((name for name, item in handle.items() if isinstance(item, h5py.Group)), key=_natural)
    if groups:
        return _grouped(path, handle, groups)
    fields = sorted(
        (
            name
            for name, item in handle.items()
            if isinstance(item, h5py.Dataset) and item.ndim == 4 and not name.endswith(COORDINATE_SUFFIX)
        ),
        key=lambda name: (name.lower(), name),
    )
    if fields:
        return _flat(path, handle, fields)
    raise DataError(
        f"{path}: not a PDEBench-style file of 2-D fields; expected top-level groups ('0000', '0001', ...) each "
        f"holding a dataset 'data' of shape (T, X, Y[, C]), or top-level datasets of shape (N, T, X, Y), one per "
        f"variable; found {_describe(handle)}"
    )


def file_layout(path: str, handle) -> Layout:
    """:func:`detect_layout`, cached per file version."""
    signature = file_signature(path)
    if signature not in _LAYOUTS:
        _LAYOUTS[signature] = detect_layout(path, handle)
    return _LAYOUTS[signature]


def field_extrema(path: str, handle, layout: Layout, channels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The ``(low, high)`` float64 arrays of ``channels`` over the whole file, streamed and cached per file version.

    A field with NaN or infinite values is a :class:`DataError` naming it.
    """
    signature = file_signature(path)
    missing = [c for c in channels if (signature, c) not in _EXTREMA]
    if missing:
        for c, bounds in layout.extrema(handle, missing).items():
            if not all(np.isfinite(bounds)):
                raise DataError(
                    f"{path}: field {layout.fields[c]!r} holds NaN or infinite values; expected finite values"
                )
            _EXTREMA[(signature, c)] = bounds
    low, high = zip(*(_EXTREMA[(signature, c)] for c in channels))
    return np.array(low, dtype=np.float64), np.array(high, dtype=np.float64)
