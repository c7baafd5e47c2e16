"""Save image batches in ``[-1, 1]`` as PNG files: grids, single images and resolution comparisons.

The array helpers (:func:`to_uint8`, :func:`make_grid`, :func:`make_resolution_comparison`)
are pure; the ``save_*`` functions encode with Pillow and write atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from infdiff.io import PathLike, array_to_pil, atomic_write_bytes, atomic_write_text, check_images, png_bytes, to_uint8

LABEL_COLOUR = "white"


def make_grid(images: torch.Tensor, nrow: Optional[int] = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile ``images`` ``(B, C, H, W)`` in ``[-1, 1]`` into one ``(H', W', C)`` uint8 array.

    ``nrow`` images per row (default ``ceil(sqrt(B))``), separated and surrounded by
    ``padding`` pixels of ``pad_value``.
    """
    pixels = to_uint8(images)
    count, height, width, channels = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(count))
    if nrow < 1 or padding < 0:
        raise ValueError(f"expected nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    columns, rows = min(nrow, count), math.ceil(count / nrow)
    grid = np.full(
        (padding + rows * (height + padding), padding + columns * (width + padding), channels), pad_value, np.uint8
    )
    for index, image in enumerate(pixels):
        row, column = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_image_grid(images: torch.Tensor, path: PathLike, nrow: Optional[int] = None, padding: int = 2) -> Path:
    """Write :func:`make_grid` of ``images`` to the PNG file ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(png_bytes(array_to_pil(make_grid(images, nrow, padding))), path)


def save_images(images: torch.Tensor, directory: PathLike, prefix: str = "", start_index: int = 0) -> List[Path]:
    """Write each image to ``directory/{prefix}{start_index + i:05d}.png``; returns the paths.

    Each file appears complete or not at all, but is not ``fsync``-ed (sample dumps for
    evaluation can hold tens of thousands of files): a power loss may drop the newest ones.
    """
    if start_index < 0:
        raise ValueError(f"start_index must be >= 0, got {start_index}")
    directory = Path(directory)
    return [
        atomic_write_bytes(
            png_bytes(array_to_pil(image)), directory / f"{prefix}{start_index + i:05d}.png", fsync=False
        )
        for i, image in enumerate(to_uint8(images))
    ]


def _label_column(labels: Sequence[str], image_height: int, padding: int, mode: str) -> Image.Image:
    """A strip with each label vertically centred on its row of the grid, in Pillow's default font."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new(mode, (1, 1)))
    boxes = [probe.textbbox((0, 0), label, font=font) for label in labels]
    width = max(right - left for left, _, right, _ in boxes) + 2 * padding
    strip = Image.new(mode, (width, padding + len(labels) * (image_height + padding)))
    draw = ImageDraw.Draw(strip)
    for row, (label, (left, top, _, bottom)) in enumerate(zip(labels, boxes)):
        centre = padding + row * (image_height + padding) + image_height / 2
        draw.text((padding - left, centre - (top + bottom) / 2), label, fill=LABEL_COLOUR, font=font)
    return strip


def make_resolution_comparison(rows: Sequence[Tuple[Optional[str], torch.Tensor]], padding: int = 2) -> Image.Image:
    """One row per ``(label, images)`` with the same samples at different resolutions, lined up in columns.

    Every batch ``(B, C, H_i, W_i)`` must share ``B`` and ``C``; each is upsampled with
    nearest-neighbour interpolation to the largest height and width so that pixels stay
    visible as blocks. Rows with a label get it drawn in a column on the left.
    """
    if not rows:
        raise ValueError("make_resolution_comparison needs at least one (label, images) row")
    labels, batches = zip(*rows)
    for images in batches:
        check_images(images)
    if len({tuple(images.shape[:2]) for images in batches}) != 1:
        shapes = [tuple(images.shape) for images in batches]
        raise ValueError(f"every row must hold the same number of images and channels, got shapes {shapes}")
    height, width = max(images.shape[-2] for images in batches), max(images.shape[-1] for images in batches)
    upsampled = torch.cat(
        [F.interpolate(images.detach().float().cpu(), size=(height, width), mode="nearest") for images in batches]
    )
    grid = array_to_pil(make_grid(upsampled, nrow=len(batches[0]), padding=padding))
    if not any(labels):
        return grid
    strip = _label_column([label or "" for label in labels], height, padding, grid.mode)
    canvas = Image.new(grid.mode, (strip.width + grid.width, grid.height))
    canvas.paste(strip, (0, 0))
    canvas.paste(grid, (strip.width, 0))
    return canvas


def save_resolution_comparison(
    rows: Sequence[Tuple[Optional[str], torch.Tensor]], path: PathLike, padding: int = 2
) -> Path:
    """Write :func:`make_resolution_comparison` of ``rows`` to the PNG file ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(png_bytes(make_resolution_comparison(rows, padding)), path)


def save_step_comparison(
    rows: Sequence[Tuple[Optional[str], torch.Tensor]], metrics: dict, directory: PathLike, stem: str, step: int
) -> Path:
    """A training hook's pictures and numbers: ``rows`` as ``<directory>/<stem>_<step>.png`` and
    ``{"step": step, **metrics}`` as the JSON beside it, both atomically; returns the PNG's path."""
    out = Path(directory) / f"{stem}_{step:08d}"
    atomic_write_text(json.dumps({"step": step, **metrics}, indent=2) + "\n", out.with_suffix(".json"))
    return save_resolution_comparison(rows, out.with_suffix(".png"))
