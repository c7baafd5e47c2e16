"""The base of datasets whose images are stored encoded (files or byte strings).

An item is decoded, converted to the requested channels, resized and centre-cropped to
``size×size``, turned into a tensor ``(C, size, size)`` in ``[-1, 1]`` (flips are a batch transform,
:func:`~infdiff.data.transforms.flip_batch`).
An image smaller than ``size`` is upsampled, warned about once per data set and process with an
:class:`~infdiff.data.errors.UpsampledImageWarning`.  An image that cannot be decoded is reported once per process with an
:class:`~infdiff.data.errors.UnreadableImageWarning` and skipped: the item is the next readable
image in storage order (wrapping around), so the substitution is deterministic.
"""

from __future__ import annotations

import warnings
from typing import Set

import torch
from torch.utils.data import Dataset

from infdiff.data.checks import check_channels, require_int
from infdiff.data.errors import DataError, UnreadableImageError, UnreadableImageWarning, UpsampledImageWarning
from infdiff.data.transforms import ImageSource, load_image, resize_center_crop, to_tensor


class EncodedImageDataset(Dataset):
    """Decode-on-access image dataset with deterministic skipping of unreadable images.

    Subclasses implement ``__len__``, :meth:`encoded` (a path or the encoded bytes of image
    ``index``; may raise :class:`UnreadableImageError`) and :meth:`describe` (how to name image
    ``index`` in messages).  ``location`` and ``key`` name the data source and the config key it
    came from in the error raised when no image at all can be read.
    """

    def __init__(self, size: int, channels: int, location: str, key: str):
        self.size = require_int(size, "size")
        self.channels = check_channels(channels)
        self.location = location
        self.key = key
        self._unreadable: Set[int] = set()
        self.warned_upsampling = False

    def __len__(self) -> int:
        raise NotImplementedError

    def encoded(self, index: int) -> ImageSource:
        """The file path or encoded bytes of image ``index``."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A name for image ``index`` that lets a user find it."""
        raise NotImplementedError

    def decode(self, index: int) -> torch.Tensor:
        """Image ``index`` as a tensor ``(C, size, size)`` in ``[-1, 1]``, without skipping."""
        image = load_image(self.encoded(index), self.channels, name=self.describe(index))
        if min(image.size) < self.size and not self.warned_upsampling:
            self.warned_upsampling = True
            warnings.warn(
                f"{self.describe(index)} is {image.size[0]}×{image.size[1]} px, smaller than {self.size} px "
                f"(data.img_size): it and any other such images of {self.key}={self.location!r} are upsampled "
                "and lack that size's detail; use larger images or a smaller data.img_size",
                UpsampledImageWarning,
                stacklevel=3,
            )
        return to_tensor(resize_center_crop(image, self.size))

    def __getitem__(self, index: int) -> torch.Tensor:
        length = len(self)
        if not 0 <= index < length:
            raise IndexError(f"index {index} out of range for a dataset of {length} images")
        for offset in range(length):
            candidate = (index + offset) % length
            if candidate in self._unreadable:
                continue
            try:
                x = self.decode(candidate)
            except UnreadableImageError as err:
                self._unreadable.add(candidate)
                warnings.warn(f"skipping unreadable image: {err}", UnreadableImageWarning, stacklevel=2)
                continue
            return x
        raise DataError(
            f"{self.key}={self.location!r}: none of its {length} images can be decoded "
            f"(see the UnreadableImageWarning messages); expected readable PNG/JPEG/WebP/... images"
        )
