"""MNIST and Fashion-MNIST from their IDX image files.

``root`` must hold ``train-images-idx3-ubyte`` (split ``"train"``) and/or
``t10k-images-idx3-ubyte`` (split ``"test"``), each optionally gzipped (``.gz``), as distributed.
Labels are not read (the models are unconditional).

Resizing: with ``size`` set, digits are resized with the same antialiased bicubic filter as
every other dataset (:func:`~infdiff.data.transforms.resize_center_crop`), not zero-padded, so a
digit covers the same part of the unit square at every resolution, as a function-space model
expects; ``size=None`` keeps the native 28×28.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from infdiff.data.checks import check_channels, require_int
from infdiff.data.errors import DataError
from infdiff.data.files import require_path
from infdiff.data.transforms import convert_channels, resize_center_crop, to_tensor
from infdiff.io import PathLike

SPLIT_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
IMAGES_MAGIC = 0x00000803  # two zero bytes, type 0x08 (unsigned byte), 3 dimensions


def find_split_file(root: str, split: str, key: str) -> str:
    """Path of the images file of ``split`` in ``root``, plain or gzipped."""
    if split not in SPLIT_FILES:
        raise DataError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    name = SPLIT_FILES[split]
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    raise DataError(
        f"{key}={root!r} has no {name} or {name}.gz; expected a directory holding the MNIST / "
        f"Fashion-MNIST IDX files of the {split!r} split"
    )


def read_idx_images(path: str) -> np.ndarray:
    """The ``(N, rows, cols)`` uint8 array of an IDX3 unsigned-byte file (gzipped if ``path`` ends in .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as err:  # a cut-off .gz raises EOFError, a damaged one zlib.error
        raise DataError(
            f"{path}: cannot be read ({type(err).__name__}: {err}); the file is truncated or corrupt, "
            "download it again (expected an IDX images file, optionally gzipped)"
        ) from err
    if len(raw) < 16:
        raise DataError(f"{path}: only {len(raw)} bytes, shorter than an IDX3 header (16 bytes)")
    magic, count, rows, cols = struct.unpack(">4I", raw[:16])
    if magic != IMAGES_MAGIC:
        raise DataError(
            f"{path}: magic number 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x} (IDX file of uint8 "
            f"images, 3 dimensions); is this a labels file or not IDX at all?"
        )
    expected = count * rows * cols
    if len(raw) - 16 != expected:
        raise DataError(
            f"{path}: header announces {count} images of {rows}x{cols} ({expected} bytes of pixels) "
            f"but the file holds {len(raw) - 16}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)


class IDXDataset(Dataset):
    """The images of one split of an IDX dataset as ``(channels, size, size)`` tensors in ``[-1, 1]``.

    ``channels=3`` replicates the grey level.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        size: Optional[int] = None,
        channels: int = 1,
        key: str = "data.root_dir",
    ):
        resolved = require_path(root, key, "a directory holding MNIST / Fashion-MNIST IDX files")
        self.path = find_split_file(resolved, split, key)
        self.images = read_idx_images(self.path)
        self.split = split
        self.size = None if size is None else require_int(size, "size")
        self.channels = check_channels(channels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = Image.fromarray(self.images[index])
        if self.size is not None:
            image = resize_center_crop(image, self.size)
        return to_tensor(convert_channels(image, self.channels))
