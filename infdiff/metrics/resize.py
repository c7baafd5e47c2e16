"""The resizes the feature extractors' protocols prescribe, on 8-bit pictures as a metric sees saved PNGs.

* :func:`clean_resize`: clean-fid's "clean" mode (Parmar et al. 2022): each channel of the 8-bit image
  resized on its own as a float32 PIL image with the bicubic filter (antialiased, no quantisation
  after), clipped to [0, 255]; what the Inception protocol feeds the network at 299².
* :func:`clip_resize_crop`: clean-fid's CLIP preprocessing: the 8-bit RGB image's shorter side resized
  to ``size`` bicubically (PIL, quantised), then its central ``size × size`` crop.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def clean_resize(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, C)`` uint8 → ``(N, size, size, C)`` float32 in [0, 255], per channel (module docstring)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"clean_resize expects (N, H, W, C) uint8 pictures, got {images.dtype} {images.shape}")
    out = np.empty((len(images), size, size, images.shape[-1]), np.float32)
    for i, image in enumerate(images):
        for c in range(image.shape[-1]):
            channel = Image.fromarray(image[:, :, c].astype(np.float32), mode="F")
            out[i, :, :, c] = np.asarray(channel.resize((size, size), resample=Image.BICUBIC))
    return out.clip(0, 255)


def clip_resize_crop(images: np.ndarray, size: int = 224) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 → ``(N, size, size, 3)`` uint8: shorter side to ``size`` (bicubic), centre crop."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"clip_resize_crop expects (N, H, W, 3) uint8 pictures, got {images.dtype} {images.shape}")
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        height, width = image.shape[:2]
        scale = size / min(height, width)
        new_w, new_h = (size, int(height * scale)) if width <= height else (int(width * scale), size)
        resized = Image.fromarray(image).resize((new_w, new_h), resample=Image.BICUBIC)
        left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
        out[i] = np.asarray(resized.crop((left, top, left + size, top + size)))
    return out
