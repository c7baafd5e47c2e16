"""Feature extractors: images in [-1, 1] of any size → one feature vector each, with their protocol's resize inside.

Every extractor has a ``name``, a feature width ``dim``, a ``description`` that reports quote, and
``__call__(images (B, C, H, W) in [-1, 1]) -> (B, dim)`` (float32, on the CPU; grey images are
repeated to three channels).  They are registered in :data:`EXTRACTORS`:

* ``inception``: the standard FID Inception-v3 (:mod:`infdiff.metrics.inception`);
* ``clip_vit_b_32``: ∞-Diff's FID_CLIP features (:mod:`infdiff.metrics.clip`);
* ``random``: :class:`RandomFeatures`, a fixed random convolutional network for tests and smoke
  runs: fast and resolution-aware, but **not a perceptual metric**; numbers computed with it are not
  comparable with any published one, and every report says so.
"""

from __future__ import annotations

import abc
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from infdiff.io import check_images, to_uint8
from infdiff.registry import Registry

EXTRACTORS = Registry("feature extractor")


class ExtractorUnavailable(RuntimeError):
    """An extractor whose weights or package are not installed; the message says how to install them."""


class FeatureExtractor(abc.ABC):
    """``name``, ``dim``, ``description`` and ``__call__`` (module docstring)."""

    name: str
    dim: int
    description: str

    @abc.abstractmethod
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, dim)`` of a checked RGB batch ``(B, 3, H, W)`` in [-1, 1]."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        images = images.detach().float().cpu()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        with torch.no_grad():
            return self.features(images).float().cpu()


def pictures(images: torch.Tensor):
    """``images`` in [-1, 1] as the 8-bit pictures ``(B, H, W, 3)`` a saved PNG holds (metrics score those)."""
    return to_uint8(images)


def features_of(
    extractor: FeatureExtractor,
    batches: Iterable[torch.Tensor],
    desc: Optional[str] = None,
    total: Optional[int] = None,
) -> torch.Tensor:
    """The features ``(N, dim)`` of every image of ``batches`` (a progress bar when ``desc`` is given)."""
    parts = [extractor(batch) for batch in tqdm(batches, desc=desc, total=total, disable=None if desc else True)]
    return torch.cat(parts) if parts else torch.empty(0, extractor.dim)


@EXTRACTORS.register("random")
class RandomFeatures(FeatureExtractor):
    """A fixed random convolutional network (seed 0): for tests and smoke runs, **not a perceptual metric**.

    Images are quantised to 8 bits like every other extractor's input, resized to 64² (bilinear,
    antialiased), and passed through three 5×5/3×3/3×3 stride-2 convolutions with ReLU (32, 64 and 128
    channels, He-normal weights drawn from ``torch.Generator().manual_seed(0)``); the feature is the
    channel-wise mean and standard deviation of the last map (256 numbers).
    """

    name = "random"
    dim = 256
    description = "random convolutional features (seed 0): a smoke-test extractor, not comparable with published FIDs"
    size = 64

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        shapes = [(32, 3, 5), (64, 32, 3), (128, 64, 3)]
        self.weights = [
            torch.randn(out, inp, k, k, generator=generator) * (2.0 / (inp * k * k)) ** 0.5 for out, inp, k in shapes
        ]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.from_numpy(pictures(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        h = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        for weight in self.weights:
            h = F.relu(F.conv2d(h, weight, stride=2, padding=weight.shape[-1] // 2))
        flat = h.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1)], dim=1)
