"""The named data sets of the ``data`` config section, :func:`build_dataset` and the loader's flip setting.

Each entry of :data:`DATASETS` builds a data set from the keys it reads (``data`` is an
``ml_collections.ConfigDict`` or any mapping with ``.get``; a missing or ``None`` value takes the
default); every data set also has ``name``, and the batch loader reads ``random_flip`` and
``num_workers``.  A key that the chosen data set does not read warns (it is ignored) unless it is
unset (``None`` or ``""``), so a config switched from one data set to another never keeps a setting
silently.

====================================  ===========================================================
``name``                              keys read
====================================  ===========================================================
``shapes``                            ``img_size``, ``channels`` (3), ``split``, ``num_samples``
                                      (50000; 0 means that too), ``seed`` (0), ``max_shapes`` (3),
                                      ``radius_range`` ((0.12, 0.3) of the side)
``image_folder``, ``ffhq``,           ``root_dir`` (a folder, searched recursively), ``img_size``,
``celeba``, ``celebahq``              ``channels`` (3)
``lmdb``, ``churches``, ``lsun``      ``root_dir`` (an LSUN or ``prepare``-made LMDB), ``img_size``,
                                      ``channels`` (3)
``mnist``, ``fashion_mnist``          ``root_dir`` (the IDX files), ``img_size`` (native 28 when
                                      unset), ``channels`` (1), ``split``
``pdebench``                          ``root_dir`` (a PDEBench-style 2-D ``.h5`` file, or a folder
                                      holding one), ``img_size`` (native when unset), ``fields``
                                      (all), ``split``, ``test_fraction`` (0.1), ``time_index``,
                                      ``time_stride`` (1); needs h5py (``pip install infdiff[pde]``)
====================================  ===========================================================

``split`` is ``"train"`` or ``"test"``; image folders and LMDBs have none (point ``root_dir`` at
the split's folder or db); ``pdebench`` splits by trajectory, and has as many channels as
``fields`` (PDE variables, any count; it does not read ``channels``).  ``random_flip`` (mirror
each training image left-right with probability 1/2) defaults to true for photos and false for
shapes (already mirror-symmetric), digits and PDE fields (not mirror-symmetric, and a mirrored
velocity would need its sign flipped: setting it for them warns).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, FrozenSet, Tuple, Union

from torch.utils.data import Dataset

from infdiff.data.checks import check_channels, check_range, require_int
from infdiff.data.errors import DataError
from infdiff.data.idx import IDXDataset
from infdiff.data.image_folder import ImageFolderDataset
from infdiff.data.lmdb_dataset import LMDBDataset
from infdiff.data.pdebench import DEFAULT_TEST_FRACTION, PDEBenchDataset, pdebench_channels
from infdiff.data.shapes import MAX_SHAPES, RADIUS_RANGE, ShapesDataset
from infdiff.registry import Registry, RegistryError

SPLITS = ("train", "test")
DEFAULT_SHAPES_LENGTH = 50_000
LOADER_KEYS = frozenset({"name", "random_flip", "num_workers"})


class DataKeyWarning(UserWarning):
    """A ``data`` key that the chosen data set does not use, or a flip it should not get."""


@dataclass(frozen=True)
class DataSetEntry:
    """How to build one named data set: ``build(data)``, the ``keys`` it reads, its default number of
    ``channels`` (or ``channels(data)``, for a data set whose count follows from its keys and files),
    whether random flips suit it by default (``flips``) or at all (``mirror_symmetric``),
    and its ``splits``."""

    build: Callable[[Any], Dataset]
    keys: FrozenSet[str]
    channels: Union[int, Callable[[Any], int]]
    flips: bool
    mirror_symmetric: bool
    splits: Tuple[str, ...] = ()


DATASETS = Registry("data set")


def _get(data: Any, key: str, default: Any = None) -> Any:
    """``data.<key>``, or ``default`` when it is missing or ``None``."""
    value = data.get(key, None)
    return default if value is None else value


def _int(data: Any, key: str, default: Any = None, minimum: int = 1) -> int:
    return require_int(_get(data, key, default), f"data.{key}", minimum)


def data_channels(data: Any) -> int:
    """``data.channels``, or the data set's own number of channels when it is unset; a data set whose count
    follows from its files (``pdebench``: its fields, any count) gives it itself and ignores ``data.channels``."""
    channels = dataset_entry(data).channels
    if callable(channels):
        return channels(data)
    return check_channels(_get(data, "channels", channels), "data.channels")


def _split(data: Any) -> str:
    split = _get(data, "split", "train")
    if split not in SPLITS:
        raise DataError(f"data.split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _shapes(data: Any) -> ShapesDataset:
    length = DEFAULT_SHAPES_LENGTH if _get(data, "num_samples", 0) == 0 else _int(data, "num_samples")
    radius_range = check_range(_get(data, "radius_range", RADIUS_RANGE), "data.radius_range", 0.0, 0.5)
    return ShapesDataset(
        _int(data, "img_size"),
        length=length,
        seed=_int(data, "seed", 0, minimum=0),
        channels=data_channels(data),
        split=_split(data),
        max_shapes=_int(data, "max_shapes", MAX_SHAPES),
        radius_range=radius_range,
    )


def _stored_images(dataset_class):
    def build(data: Any) -> Dataset:
        return dataset_class(
            _get(data, "root_dir", ""), _int(data, "img_size"), channels=data_channels(data), key="data.root_dir"
        )

    return build


def _idx(data: Any) -> IDXDataset:
    size = None if _get(data, "img_size") is None else _int(data, "img_size")
    return IDXDataset(
        _get(data, "root_dir", ""), split=_split(data), size=size, channels=data_channels(data), key="data.root_dir"
    )


def _pdebench(data: Any) -> PDEBenchDataset:
    return PDEBenchDataset(
        _get(data, "root_dir", ""),
        size=None if _get(data, "img_size") is None else _int(data, "img_size"),
        fields=_get(data, "fields"),
        split=_split(data),
        test_fraction=_get(data, "test_fraction", DEFAULT_TEST_FRACTION),
        time_index=_get(data, "time_index"),
        time_stride=_get(data, "time_stride"),
        key="data.root_dir",
    )


def _pdebench_channels(data: Any) -> int:
    return pdebench_channels(_get(data, "root_dir", ""), _get(data, "fields"), "data.root_dir")


DATASETS.register(
    "shapes",
    DataSetEntry(
        _shapes,
        frozenset({"img_size", "channels", "split", "num_samples", "seed", "max_shapes", "radius_range"}),
        channels=3,
        flips=False,
        mirror_symmetric=True,
        splits=SPLITS,
    ),
)
for _names, _class in (
    (("image_folder", "ffhq", "celeba", "celebahq"), ImageFolderDataset),
    (("lmdb", "churches", "lsun"), LMDBDataset),
):
    for _name in _names:
        DATASETS.register(
            _name,
            DataSetEntry(
                _stored_images(_class),
                frozenset({"root_dir", "img_size", "channels"}),
                channels=3,
                flips=True,
                mirror_symmetric=True,
            ),
        )
for _name in ("mnist", "fashion_mnist"):
    DATASETS.register(
        _name,
        DataSetEntry(
            _idx,
            frozenset({"root_dir", "img_size", "channels", "split"}),
            channels=1,
            flips=False,
            mirror_symmetric=False,
            splits=SPLITS,
        ),
    )


DATASETS.register(
    "pdebench",
    DataSetEntry(
        _pdebench,
        frozenset({"root_dir", "img_size", "fields", "split", "test_fraction", "time_index", "time_stride"}),
        channels=_pdebench_channels,
        flips=False,
        mirror_symmetric=False,
        splits=SPLITS,
    ),
)


def dataset_entry(data: Any) -> DataSetEntry:
    """The :class:`DataSetEntry` named by ``data.name``."""
    name = _get(data, "name")
    try:
        return DATASETS[name]
    except RegistryError:
        raise DataError(
            f"data.name={name!r} is not a known dataset; expected one of: {', '.join(DATASETS.names())}"
        ) from None


def build_dataset(data: Any) -> Dataset:
    """The dataset described by the ``data`` config section (see the module docstring for its keys).

    Keys the data set does not read warn with :class:`DataKeyWarning` and are ignored, unless unset
    (``None`` or ``""``).
    """
    entry = dataset_entry(data)
    unused = sorted(key for key in set(data.keys()) - entry.keys - LOADER_KEYS if data[key] not in (None, ""))
    if unused:
        warnings.warn(
            f"data.{', data.'.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to the "
            f"{data.get('name')!r} data set and {'is' if len(unused) == 1 else 'are'} ignored; it reads "
            f"{', '.join(sorted(entry.keys))}",
            DataKeyWarning,
            stacklevel=2,
        )
    return entry.build(data)


def random_flip(data: Any) -> bool:
    """Whether training batches are mirrored at random: ``data.random_flip``, or the data set's default.

    Flipping a data set that is not mirror-symmetric (digits) warns with :class:`DataKeyWarning`.
    """
    entry = dataset_entry(data)
    value = _get(data, "random_flip", entry.flips)
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise DataError(f"data.random_flip must be true or false, got {value!r}")
    if value and not entry.mirror_symmetric:
        warnings.warn(
            f"data.random_flip=True mirrors {data.get('name')!r} images, which are not mirror-symmetric; "
            "set --config.data.random_flip=false unless that is meant",
            DataKeyWarning,
            stacklevel=2,
        )
    return bool(value)
