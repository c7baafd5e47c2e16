"""PDEBench-style HDF5 files of 2-D fields as a data set of ``(C, H, W)`` tensors in ``[-1, 1]``.

The file is one ``.h5`` / ``.hdf5`` (``root``: the file, or a folder holding exactly one) in either
PDEBench layout (:mod:`infdiff.data.pdebench_layout`): *grouped* (``"0000/data"`` ``(T, X, Y[, C])``
per trajectory, fields named ``"0"``, ``"1"``, ... after the channels) or *flat* (one dataset
``(N, T, X, Y)`` per variable, fields named after them: ``density``, ``pressure``, ``Vx``, ``Vy``).

* **Samples**: every snapshot of every trajectory of the split, trajectory by trajectory; with
  ``time_index`` only that snapshot of each (negative counts from the end: ``-1`` is the last),
  with ``time_stride`` every ``stride``-th one from the first.
* **Channels**: the ``fields`` (names, or a comma-separated string; default all, in the layout's
  order), stacked in the order given.  Axes keep the file's order: ``H`` is its ``x`` axis.
* **Normalisation**: each field is mapped linearly from ``[min, max]`` to ``[-1, 1]``, with its
  minimum and maximum taken over the whole file (every trajectory, both splits, every snapshot),
  so train and test and every time selection share one map; a constant field becomes 0.  The
  extrema are streamed in chunks and cached in memory per file; :meth:`PDEBenchDataset.denormalize`
  maps samples back to physical values.
* **Resolution**: with ``size`` set, fields are resampled to ``size²`` after normalisation: by
  exact cell averages where both sides are multiples of ``size`` (PDEBench's finite-volume data are
  cell averages, so this is the coarser grid's data), else by antialiased bilinear interpolation;
  ``size=None`` keeps the native grid.  The file's coordinates are not read: the field is taken on
  the unit square whatever its grid, as every data set here is.
* **Split**: by trajectory, as PDEBench does: the first ``int(N · test_fraction)`` trajectories
  (at least one when ``test_fraction > 0``) are ``"test"``, the others ``"train"``, so no
  trajectory has snapshots in both.

The file is opened lazily in each process that reads it (again after a fork: DataLoader workers
get their own handle), and pickles without its handle.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from infdiff.data.checks import require_int
from infdiff.data.errors import DataError
from infdiff.data.files import require_path
from infdiff.data.pdebench_layout import HDF5_EXTENSIONS, Layout, field_extrema, file_layout, open_hdf5
from infdiff.io import PathLike

SPLIT_NAMES = ("train", "test")
DEFAULT_TEST_FRACTION = 0.1  # PDEBench's test_ratio


def find_hdf5_file(root: PathLike, key: str) -> str:
    """``root`` if it is a file, else the one HDF5 file in the folder ``root``."""
    resolved = require_path(root, key, "a PDEBench .h5 file, or a folder holding one", directory=False)
    if not os.path.isdir(resolved):
        return resolved
    found = sorted(name for name in os.listdir(resolved) if name.lower().endswith(HDF5_EXTENSIONS))
    if len(found) != 1:
        held = f"holds {len(found)} HDF5 files ({', '.join(found)})" if found else "holds no .h5 / .hdf5 file"
        raise DataError(f"{key}={os.fspath(root)!r} {held}; point {key} at one PDEBench .h5 file")
    return os.path.join(resolved, found[0])


def parse_fields(fields: Any) -> Optional[Tuple[str, ...]]:
    """``fields`` as a tuple of names: ``None`` (every field), a name or comma-separated names, a channel
    index, or a sequence of those; a :class:`DataError` naming ``data.fields`` otherwise."""
    if fields is None:
        return None
    if isinstance(fields, str):
        items = [name.strip() for name in fields.split(",") if name.strip()]
    elif isinstance(fields, (list, tuple)):
        items = list(fields)
    else:
        items = [fields]
    if not items or not all(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in items):
        raise DataError(
            f"data.fields must be field names (a tuple, or one comma-separated string) or channel indices, "
            f"got {fields!r}"
        )
    names = tuple(str(v) for v in items)
    if len(set(names)) != len(names):
        raise DataError(f"data.fields={fields!r} names a field twice; expected each at most once")
    return names


def select_fields(layout: Layout, fields: Any, path: str) -> Tuple[int, ...]:
    """The channel indices in ``layout`` of ``fields`` (see :func:`parse_fields`; ``None``: all)."""
    names = parse_fields(fields)
    if names is None:
        return tuple(range(len(layout.fields)))
    unknown = [name for name in names if name not in layout.fields]
    if unknown:
        hint = " (the channels of each trajectory's 'data')" if layout.kind == "grouped" else ""
        raise DataError(
            f"data.fields: {', '.join(map(repr, unknown))} not in {path}; available fields: "
            f"{', '.join(layout.fields)}{hint}"
        )
    return tuple(layout.fields.index(name) for name in names)


def split_trajectories(count: int, split: str, test_fraction: Any) -> range:
    """The trajectories of ``split``: the first ``int(count · test_fraction)`` (at least one) are the test split."""
    if split not in SPLIT_NAMES:
        raise DataError(f"data.split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        raise DataError(f"data.test_fraction must be a number in [0, 1), got {test_fraction!r}")
    held_out = max(1, int(count * test_fraction)) if test_fraction > 0 else 0
    if held_out >= count:
        raise DataError(
            f"data.test_fraction={test_fraction} holds out {held_out} of the file's {count} trajectories, "
            "leaving none to train on; set data.test_fraction=0 to train on all"
        )
    if split == "test" and held_out == 0:
        raise DataError("data.split='test' with data.test_fraction=0: no trajectory is held out")
    return range(held_out) if split == "test" else range(held_out, count)


def select_steps(steps: int, time_index: Any = None, time_stride: Any = None) -> Tuple[int, ...]:
    """The snapshots of a trajectory of ``steps`` that are samples: ``time_index`` alone, or every ``time_stride``-th."""
    if time_index is None:
        return tuple(range(0, steps, require_int(1 if time_stride is None else time_stride, "data.time_stride")))
    if time_stride not in (None, 1):
        raise DataError(
            f"data.time_index={time_index!r} and data.time_stride={time_stride!r} both select snapshots; set one"
        )
    index = require_int(time_index, "data.time_index", minimum=-steps)
    if index >= steps:
        raise DataError(
            f"data.time_index={index} is past the last of the {steps} snapshots; expected -{steps} to {steps - 1}"
        )
    return (index % steps,)


def normalise(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(C, X, Y)`` values mapped from ``[low, high]`` to ``[-1, 1]`` per channel (0 where ``low == high``), float32."""
    span = (high - low)[:, None, None]
    scale = np.divide(2.0, span, out=np.zeros_like(span), where=span > 0)
    out = (values.astype(np.float64) - low[:, None, None]) * scale - 1.0
    return np.where(span > 0, out, 0.0).astype(np.float32)


def resample(field: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, X, Y)`` on a ``size²`` grid: cell averages when ``size`` divides both sides, else antialiased bilinear."""
    height, width = field.shape[-2:]
    if (height, width) == (size, size):
        return field
    if height % size == 0 and width % size == 0:
        return F.avg_pool2d(field[None], (height // size, width // size))[0]
    return F.interpolate(field[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def pdebench_channels(root: PathLike, fields: Any = None, key: str = "data.root_dir") -> int:
    """The number of channels of the data set: of ``fields`` when given (no file read), else of the file's fields."""
    names = parse_fields(fields)
    return len(names) if names is not None else len(file_fields(root, key))


def file_fields(root: PathLike, key: str = "data.root_dir") -> Tuple[str, ...]:
    """The names of the fields of the file at ``root`` (a file, or a folder holding one)."""
    path = find_hdf5_file(root, key)
    with open_hdf5(path) as handle:
        return file_layout(path, handle).fields


class PDEBenchDataset(Dataset):
    """The snapshots of a PDEBench-style file as ``(channels, size, size)`` float32 tensors in ``[-1, 1]``.

    Arguments mirror the ``data`` keys (see the module docstring): ``root`` (``root_dir``), ``size``
    (``img_size``; ``None``: native), ``fields``, ``split``, ``test_fraction``, ``time_index``,
    ``time_stride``.  Attributes: ``path``, ``layout``, ``fields`` (names of the channels),
    ``channels``, ``trajectories`` and ``steps`` (the file's indices that are samples), ``low`` and
    ``high`` (each channel's extrema, float64).
    """

    def __init__(
        self,
        root: PathLike,
        size: Optional[int] = None,
        fields: Any = None,
        split: str = "train",
        test_fraction: float = DEFAULT_TEST_FRACTION,
        time_index: Optional[int] = None,
        time_stride: Optional[int] = None,
        key: str = "data.root_dir",
    ):
        self.path = find_hdf5_file(root, key)
        self.size = None if size is None else require_int(size, "data.img_size")
        with open_hdf5(self.path) as handle:
            self.layout = file_layout(self.path, handle)
            self.channel_indices = select_fields(self.layout, fields, self.path)
            self.low, self.high = field_extrema(self.path, handle, self.layout, self.channel_indices)
        self.fields = tuple(self.layout.fields[c] for c in self.channel_indices)
        self.channels = len(self.fields)
        self.split = split
        self.trajectories = split_trajectories(self.layout.trajectories, split, test_fraction)
        self.steps = select_steps(self.layout.steps, time_index, time_stride)
        self._handle, self._pid = None, None

    def __len__(self) -> int:
        return len(self.trajectories) * len(self.steps)

    def position(self, index: int) -> Tuple[int, int]:
        """The file's ``(trajectory, step)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        trajectory, step = divmod(index, len(self.steps))
        return self.trajectories[trajectory], self.steps[step]

    def _file(self):
        """This process's handle on the file, opened on first use (and again in a forked worker)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open_hdf5(self.path), os.getpid()
        return self._handle

    def __getitem__(self, index: int) -> torch.Tensor:
        trajectory, step = self.position(index)
        values = self.layout.read(self._file(), trajectory, step, self.channel_indices)
        field = torch.from_numpy(normalise(values, self.low, self.high))
        return field if self.size is None else resample(field, self.size)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Samples ``(..., C, H, W)`` in ``[-1, 1]`` back in the file's units (a constant field at its value)."""
        low, high = (torch.as_tensor(v, dtype=x.dtype, device=x.device)[:, None, None] for v in (self.low, self.high))
        return (x + 1) / 2 * (high - low) + low

    def close(self) -> None:
        """Close this process's handle, if open (it reopens on the next read)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _handle=None, _pid=None)

    def __repr__(self) -> str:
        grid = "x".join(map(str, self.layout.grid))
        return (
            f"PDEBenchDataset({self.path!r}, {self.layout.kind}, fields={self.fields}, split={self.split!r}, "
            f"{len(self)} samples of {grid} -> {self.size or 'native'})"
        )
