"""Procedural shapes: a resolution-free image distribution defined analytically on the unit square.

Sample ``index`` of seed ``seed`` (drawn from ``np.random.default_rng([seed, stream, index])``,
stream 0 for the train split and 1 for test) is a continuous image: a background that is a
linear gradient between two muted colours plus a faint low-frequency wave, overlaid (painter's
order) by 1 to ``max_shapes`` (default 3) bright shapes defined by exact geometric predicates:
discs, rings, rotated rectangles and rotated equilateral triangles, of a radius drawn uniformly
from ``radius_range`` (default 0.12–0.3 of the image side).  ``max_shapes`` and
``radius_range`` change nothing else of a sample: its background, and its shapes' kinds, centres,
angles and colours, are the same for every value.

A pixel's value is the average of the continuous image over its cell, approximated by point
samples at the centres of a grid ``supersample`` times finer (cell-centred, as in
:mod:`infdiff.ops.grid`) and box-averaged.  The sample points of ``(size, s)`` are those of
``(2·size, s/2)``, so rendering at ``2N`` and 2×2 average pooling equals rendering at ``N`` with
twice the supersampling: the rendering is a consistent family of discretisations of one
function, and :meth:`ShapesDataset.render_sample` gives the exact ground truth of any sample at
any resolution (for scoring super-resolution).

Geometry is the same for 1 and 3 channels (greyscale keeps each colour's HSV value, so shapes
stay bright on a dark background).  The distribution is already mirror-symmetric, so the data
registry turns random flips off for it by default.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from infdiff.data.checks import check_channels, check_range, require_int
from infdiff.data.errors import DataError
from infdiff.ops.grid import as_size

SPLIT_STREAMS = {"train": 0, "test": 1}
KINDS = ("disc", "ring", "rectangle", "triangle")
RATIO_RANGE = {"disc": (0.0, 0.0), "ring": (0.4, 0.7), "rectangle": (0.4, 1.0), "triangle": (1.0, 1.0)}
RADIUS_RANGE = (0.12, 0.3)
CENTRE_RANGE = (0.15, 0.85)
MAX_SHAPES = 3
BACKGROUND_VALUE, BACKGROUND_SATURATION = (0.05, 0.4), (0.2, 0.7)
SHAPE_VALUE, SHAPE_SATURATION = (0.7, 1.0), (0.5, 1.0)
WAVE_AMPLITUDE, WAVE_FREQUENCY = (0.0, 0.05), (0.5, 1.5)
BAND_POINTS = 1 << 20  # point samples evaluated at once (bounds memory at high resolution)
DTYPE = np.float32  # of point samples; float64 is no more faithful at 8-bit output

Colour = Tuple[float, ...]


@dataclass(frozen=True)
class Shape:
    """One shape: ``centre`` (row, col) on the unit square, ``radius``, rotation ``angle`` (radians).

    ``ratio`` is kind-specific: inner/outer radius of a ring (0 for a disc), short/long
    half-side of a rectangle (whose long half-side is ``radius``), unused for a triangle (whose
    circumradius is ``radius``).
    """

    kind: str
    centre: Tuple[float, float]
    radius: float
    ratio: float
    angle: float
    colour: Colour


@dataclass(frozen=True)
class Background:
    """Linear gradient from ``colours[0]`` to ``colours[1]`` along direction ``angle``, plus a wave.

    The wave ``amplitude * cos(2π frequency · proj + phase)`` runs along ``wave_angle`` and is
    added to every channel.
    """

    colours: Tuple[Colour, Colour]
    angle: float
    amplitude: float
    frequency: float
    wave_angle: float
    phase: float


@dataclass(frozen=True)
class ShapesSample:
    """The parameters of one continuous image: background and shapes, drawn back to front."""

    background: Background
    shapes: Tuple[Shape, ...]


def random_colour(
    rng: np.random.Generator, channels: int, value: Tuple[float, float], saturation: Tuple[float, float]
) -> Colour:
    """A random hue with saturation and HSV value in the given ranges; its value alone if greyscale."""
    hue, sat, val = rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)
    return (val,) if channels == 1 else colorsys.hsv_to_rgb(hue, sat, val)


def random_background(rng: np.random.Generator, channels: int) -> Background:
    """A muted two-colour gradient with a faint wave."""
    colours = tuple(random_colour(rng, channels, BACKGROUND_VALUE, BACKGROUND_SATURATION) for _ in range(2))
    return Background(
        colours=colours,
        angle=rng.uniform(0, 2 * math.pi),
        amplitude=rng.uniform(*WAVE_AMPLITUDE),
        frequency=rng.uniform(*WAVE_FREQUENCY),
        wave_angle=rng.uniform(0, 2 * math.pi),
        phase=rng.uniform(0, 2 * math.pi),
    )


def random_shape(rng: np.random.Generator, channels: int, radius_range: Tuple[float, float] = RADIUS_RANGE) -> Shape:
    """A bright shape of a random kind, size (radius uniform in ``radius_range``), position and rotation."""
    kind = KINDS[rng.integers(len(KINDS))]
    return Shape(
        kind=kind,
        centre=(rng.uniform(*CENTRE_RANGE), rng.uniform(*CENTRE_RANGE)),
        radius=rng.uniform(*radius_range),
        ratio=rng.uniform(*RATIO_RANGE[kind]),
        angle=rng.uniform(0, 2 * math.pi),
        colour=random_colour(rng, channels, SHAPE_VALUE, SHAPE_SATURATION),
    )


def sample_params(
    index: int,
    seed: int = 0,
    channels: int = 3,
    split: str = "train",
    max_shapes: int = MAX_SHAPES,
    radius_range: Tuple[float, float] = RADIUS_RANGE,
) -> ShapesSample:
    """The parameters of sample ``index`` of ``seed`` and ``split`` with 1 to ``max_shapes`` shapes.

    A pure function of its arguments; ``radius_range`` (fractions of the image side, at most 0.5)
    scales the shapes' radii and changes no other parameter, and the background does not depend
    on ``max_shapes``.
    """
    if split not in SPLIT_STREAMS:
        raise DataError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
    index, seed = require_int(index, "index", minimum=0), require_int(seed, "seed", minimum=0)
    channels, max_shapes = check_channels(channels), require_int(max_shapes, "max_shapes")
    radius_range = check_range(radius_range, "radius_range", 0.0, 0.5)
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
    background = random_background(rng, channels)
    count = int(rng.integers(1, max_shapes + 1))
    return ShapesSample(background, tuple(random_shape(rng, channels, radius_range) for _ in range(count)))


def _projection(angle: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance of points ``(u, v)`` from the square's centre along direction ``angle``."""
    return (u - 0.5) * math.cos(angle) + (v - 0.5) * math.sin(angle)


def background_values(background: Background, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The background ``(C, *shape)`` at broadcastable row / column coordinates ``u``, ``v``."""
    spread = abs(math.cos(background.angle)) + abs(math.sin(background.angle))
    t = 0.5 + _projection(background.angle, u, v) / spread  # in [0, 1] over the unit square
    wave = background.amplitude * np.cos(
        2 * math.pi * background.frequency * _projection(background.wave_angle, u, v) + background.phase
    )
    start, end = (np.asarray(c, dtype=DTYPE).reshape(-1, 1, 1) for c in background.colours)
    return np.clip(start + t * (end - start) + wave, 0.0, 1.0)


def _annulus(shape: Shape, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Between the radii ``ratio * radius`` and ``radius`` of the centre (a disc when ``ratio`` is 0)."""
    squared = du * du + dv * dv
    return (squared <= shape.radius**2) & (squared >= (shape.ratio * shape.radius) ** 2)


def _rectangle(shape: Shape, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Within half-sides ``radius`` (along ``angle``) and ``ratio * radius`` (across) of the centre."""
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    return (np.abs(du * cos + dv * sin) <= shape.radius) & (np.abs(dv * cos - du * sin) <= shape.ratio * shape.radius)


def _triangle(shape: Shape, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Inside all three edges: each at the inradius ``radius / 2`` opposite a vertex at ``angle + 2πk/3``."""
    inside = None
    for k in range(3):
        normal = shape.angle + math.pi + 2 * math.pi * k / 3
        edge = du * math.cos(normal) + dv * math.sin(normal) <= shape.radius / 2
        inside = edge if inside is None else inside & edge
    return inside


MASKS: Dict[str, Callable[[Shape, np.ndarray, np.ndarray], np.ndarray]] = {
    "disc": _annulus,
    "ring": _annulus,
    "rectangle": _rectangle,
    "triangle": _triangle,
}


def point_samples(sample: ShapesSample, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The continuous image ``(C, *shape)`` in ``[0, 1]`` at broadcastable coordinates ``u`` (row), ``v`` (col)."""
    image = background_values(sample.background, u, v)
    for shape in sample.shapes:
        mask = MASKS[shape.kind](shape, u - shape.centre[0], v - shape.centre[1])
        image = np.where(mask, np.asarray(shape.colour, dtype=DTYPE).reshape(-1, 1, 1), image)
    return image


def cell_centres(start: int, stop: int, count: int) -> np.ndarray:
    """Centres ``(k + 0.5) / count`` of cells ``start .. stop - 1`` of ``count`` cells of the unit interval."""
    return (np.arange(start, stop, dtype=DTYPE) + DTYPE(0.5)) / DTYPE(count)


def render(sample: ShapesSample, size: Union[int, Tuple[int, int]], supersample: int = 4) -> torch.Tensor:
    """Cell averages of ``sample`` on an ``(H, W)`` grid: float32 ``(C, H, W)`` in ``[-1, 1]``.

    Each pixel averages ``supersample²`` point samples at the cell centres of the grid
    ``(H·s, W·s)``; bands of rows are rendered in turn to bound memory.
    """
    (h, w), s = as_size(size), require_int(supersample, "supersample")
    channels = len(sample.background.colours[0])
    v = cell_centres(0, w * s, w * s)[None, :]
    out = np.empty((channels, h, w), dtype=DTYPE)
    rows_per_band = max(1, BAND_POINTS // (w * s * s))
    for top in range(0, h, rows_per_band):
        bottom = min(h, top + rows_per_band)
        u = cell_centres(top * s, bottom * s, h * s)[:, None]
        points = point_samples(sample, u, v)
        out[:, top:bottom] = points.reshape(channels, bottom - top, s, w, s).mean(axis=(2, 4))
    return torch.from_numpy(out * 2.0 - 1.0)


class ShapesDataset(Dataset):
    """``length`` procedural samples rendered at ``size`` as ``(channels, size, size)`` tensors in ``[-1, 1]``.

    Item ``i`` is :func:`render` of :func:`sample_params` ``(i, seed, channels, split, max_shapes, radius_range)``.
    """

    def __init__(
        self,
        size: int,
        length: int = 50_000,
        seed: int = 0,
        channels: int = 3,
        supersample: int = 4,
        split: str = "train",
        max_shapes: int = MAX_SHAPES,
        radius_range: Tuple[float, float] = RADIUS_RANGE,
    ):
        sample_params(0, seed, channels, split, max_shapes, radius_range)  # validates all but size and length
        self.size, self.length, self.seed = require_int(size, "size"), require_int(length, "length"), int(seed)
        self.channels, self.supersample = check_channels(channels), require_int(supersample, "supersample")
        self.split, self.max_shapes = split, int(max_shapes)
        self.radius_range = check_range(radius_range, "radius_range", 0.0, 0.5)

    def __len__(self) -> int:
        return self.length

    def params(self, index: int) -> ShapesSample:
        """The parameters of sample ``index``."""
        return sample_params(index, self.seed, self.channels, self.split, self.max_shapes, self.radius_range)

    def render_sample(
        self, index: int, size: Optional[Union[int, Tuple[int, int]]] = None, supersample: Optional[int] = None
    ) -> torch.Tensor:
        """Sample ``index`` (unflipped) at any resolution; by default the dataset's size and supersampling."""
        return render(
            self.params(index),
            self.size if size is None else size,
            self.supersample if supersample is None else supersample,
        )

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} samples")
        return self.render_sample(index)
