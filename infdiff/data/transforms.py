"""Decoding images and the transforms every image dataset shares.

Images are decoded with Pillow into 8-bit mode ``"L"`` (greyscale, 1 channel) or ``"RGB"``
(3 channels), resized and centre-cropped to a square, and turned into float32 tensors
``(C, H, W)`` in ``[-1, 1]``: an 8-bit value ``v`` becomes ``v / 127.5 - 1``, which
:func:`infdiff.io.to_pil` inverts exactly.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from infdiff.data.checks import MODES, check_channels, require_int
from infdiff.data.errors import UnreadableImageError
from infdiff.io import PathLike

RESAMPLE = Image.Resampling.BICUBIC
# Pillow first box-reduces by an integer factor while the image stays >= REDUCING_GAP times the
# target, then resamples bicubically (antialiased): fast, and practically equal to a full bicubic.
REDUCING_GAP = 3.0

DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)

ImageSource = Union[PathLike, bytes, bytearray, memoryview]


def _to_8bit(img: Image.Image) -> Image.Image:
    """Integer modes ``I``/``I;16*`` are read as 16-bit (0..65535), ``F`` as floats in [0, 1]."""
    if img.mode != "F" and img.mode != "I" and not img.mode.startswith("I;16"):
        return img
    scale = 255.0 if img.mode == "F" else 255.0 / 65535.0
    values = np.asarray(img, dtype=np.float64) * scale
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images (alpha band or palette/colour-key transparency) over black."""
    if "A" not in img.getbands() and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")


def convert_channels(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as 8-bit ``"L"`` (``channels=1``) or ``"RGB"`` (``channels=3``).

    Handles every Pillow mode: 16-bit and float images are rescaled to 8 bits, transparency is
    composited over black, palettes are expanded, colour becomes greyscale by ITU-R 601-2 luma.
    """
    mode = MODES[check_channels(channels)]
    img = _flatten_alpha(_to_8bit(img))
    return img if img.mode == mode else img.convert(mode)


def load_image(source: ImageSource, channels: int, name: Optional[str] = None) -> Image.Image:
    """Decode a file path or encoded bytes into an 8-bit ``"L"`` or ``"RGB"`` Pillow image.

    The EXIF orientation is applied and animated images give their first frame.  Any decoding
    failure raises :class:`UnreadableImageError` whose message names ``name`` (default: the path,
    or the byte count of an in-memory image).
    """
    channels = check_channels(channels)
    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    label = name or (f"<encoded image, {len(source)} bytes>" if in_memory else os.fspath(source))
    try:
        with Image.open(io.BytesIO(source) if in_memory else source) as img:
            img.load()
            return convert_channels(ImageOps.exif_transpose(img), channels)
    except DECODE_ERRORS as err:
        raise UnreadableImageError(f"cannot decode {label}: {type(err).__name__}: {err}") from err


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (antialiased bicubic), then crop the central ``size×size``.

    An image whose shorter side already is ``size`` is only cropped (no resampling).
    """
    size = require_int(size, "size")
    width, height = img.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size != img.size:
        img = img.resize(new_size, RESAMPLE, reducing_gap=REDUCING_GAP)
    if new_size == (size, size):
        return img
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An ``"L"`` or ``"RGB"`` image as a float32 tensor ``(C, H, W)`` in ``[-1, 1]``."""
    if img.mode not in MODES.values():
        raise ValueError(f"to_tensor expects an 'L' or 'RGB' image, got mode {img.mode!r}; use convert_channels")
    array = np.array(img, dtype=np.uint8)  # a writable copy
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div_(127.5).sub_(1.0)


def flip_batch(x: torch.Tensor, generator: Optional[torch.Generator] = None, p: float = 0.5) -> torch.Tensor:
    """Each image of a batch ``(B, C, H, W)`` mirrored along its width axis with probability ``p``.

    The draws come from ``generator`` (the global torch RNG if ``None``); a batch source that seeds
    it from the run's seed and step flips a resumed run's batches as the uninterrupted run did.
    """
    device = x.device if generator is None else generator.device
    flip = torch.rand(x.shape[0], generator=generator, device=device) < p
    return torch.where(flip.to(x.device).view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
