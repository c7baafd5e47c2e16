"""The named datasets of the ``data`` config section and :func:`build_dataset`.

Keys read from ``data`` (an ``ml_collections.ConfigDict`` or any mapping with ``.get``; a
missing or ``None`` value takes the default):

* ``name``: one of :data:`DATASETS` (required);
* ``root_dir``: the image folder, LMDB or IDX directory (required except for ``shapes``);
* ``img_size``: side of the square images (required; ``mnist``/``fashion_mnist``: native 28×28);
* ``channels``: 1 or 3 (default 3; ``mnist``/``fashion_mnist``: 1);
* ``random_flip``: mirror left-right with probability 1/2 (default True for photos, False for
  shapes and digits);
* ``num_samples``: length of the ``shapes`` dataset (default, and when 0: 50000);
* ``seed``: seed of the ``shapes`` dataset (default 0);
* ``max_shapes``: most shapes in one ``shapes`` image (default 3);
* ``radius_range``: ``(low, high)``, the range of a ``shapes`` shape's radius as a fraction of
  the image side (default ``(0.12, 0.3)``);
* ``split``: ``"train"`` or ``"test"`` for ``shapes`` and IDX datasets (default ``"train"``).

Image folders and LMDBs have no split: point ``root_dir`` at the split's folder or db.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Type

from torch.utils.data import Dataset

from infdiff.data.checks import check_channels, check_range, require_int
from infdiff.data.errors import DataError
from infdiff.data.idx import IDXDataset
from infdiff.data.image_folder import ImageFolderDataset
from infdiff.data.lmdb_dataset import LMDBDataset
from infdiff.data.shapes import MAX_SHAPES, RADIUS_RANGE, ShapesDataset

SPLITS = ("train", "test")
DEFAULT_SHAPES_LENGTH = 50_000


def _get(data: Any, key: str, default: Any = None) -> Any:
    """``data.<key>``, or ``default`` when it is missing or ``None``."""
    value = data.get(key, None)
    return default if value is None else value


def _int(data: Any, key: str, default: Any = None, minimum: int = 1) -> int:
    return require_int(_get(data, key, default), f"data.{key}", minimum)


def _channels(data: Any, default: int) -> int:
    return check_channels(_get(data, "channels", default), "data.channels")


def _flag(data: Any, key: str, default: bool) -> bool:
    value = _get(data, key, default)
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise DataError(f"data.{key} must be true or false, got {value!r}")
    return bool(value)


def _split(data: Any) -> str:
    split = _get(data, "split", "train")
    if split not in SPLITS:
        raise DataError(f"data.split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _radius_range(data: Any) -> tuple:
    return check_range(_get(data, "radius_range", RADIUS_RANGE), "data.radius_range", 0.0, 0.5)


def _shapes(data: Any) -> ShapesDataset:
    length = DEFAULT_SHAPES_LENGTH if _get(data, "num_samples", 0) == 0 else _int(data, "num_samples")
    return ShapesDataset(_int(data, "img_size"), length=length,
                         seed=_int(data, "seed", 0, minimum=0), channels=_channels(data, 3),
                         random_flip=_flag(data, "random_flip", False), split=_split(data),
                         max_shapes=_int(data, "max_shapes", MAX_SHAPES),
                         radius_range=_radius_range(data))


def _stored_images(dataset_class: Type[Dataset], data: Any) -> Dataset:
    return dataset_class(_get(data, "root_dir", ""), _int(data, "img_size"), channels=_channels(data, 3),
                         random_flip=_flag(data, "random_flip", True), key="data.root_dir")


def _idx(data: Any) -> IDXDataset:
    size = None if _get(data, "img_size") is None else _int(data, "img_size")
    return IDXDataset(_get(data, "root_dir", ""), split=_split(data), size=size, channels=_channels(data, 1),
                      random_flip=_flag(data, "random_flip", False), key="data.root_dir")


DATASETS: Dict[str, Callable[[Any], Dataset]] = {
    "shapes": _shapes,
    **dict.fromkeys(("image_folder", "ffhq", "celeba", "celebahq"), partial(_stored_images, ImageFolderDataset)),
    **dict.fromkeys(("lmdb", "churches", "lsun"), partial(_stored_images, LMDBDataset)),
    **dict.fromkeys(("mnist", "fashion_mnist"), _idx),
}


def build_dataset(data: Any) -> Dataset:
    """The dataset described by the ``data`` config section (see the module docstring for its keys)."""
    name = _get(data, "name")
    if name not in DATASETS:
        raise DataError(f"data.name={name!r} is not a known dataset; expected one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](data)
