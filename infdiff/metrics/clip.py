"""∞-Diff's FID_CLIP features: clean-fid's CLIP ViT-B/32 image embeddings (512-d), where the user has them.

No registry package ships CLIP weights, so this extractor needs OpenAI's ``clip`` package (PyPI
``clip-anytorch`` provides it) and the ViT-B/32 weights already on the machine: ``clip.load`` reads
``$INFDIFF_CLIP_DIR`` or ``~/.cache/clip`` (where clean-fid and ``clip`` keep them) and is never allowed
to download.  Preprocessing is clean-fid's: the 8-bit picture's shorter side resized to 224
bicubically, its central 224² crop, ``/ 255`` and CLIP's channel normalisation.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import torch

from infdiff.metrics.extractors import EXTRACTORS, ExtractorUnavailable, FeatureExtractor, pictures
from infdiff.metrics.resize import clip_resize_crop

MODEL, FILE = "ViT-B/32", "ViT-B-32.pt"
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def weights_dir() -> str:
    return os.environ.get("INFDIFF_CLIP_DIR", os.path.expanduser("~/.cache/clip"))


@EXTRACTORS.register("clip_vit_b_32")
class ClipViTB32(FeatureExtractor):
    """CLIP ViT-B/32 image features at 224² (module docstring); ``batch_size`` images per forward."""

    name = "clip_vit_b_32"
    dim = 512
    description = "CLIP ViT-B/32 image features (clean-fid's FID_CLIP protocol, 224² bicubic + centre crop)"

    def __init__(self, batch_size: int = 64):
        try:
            clip = importlib.import_module("clip")
        except ImportError:
            raise ExtractorUnavailable(
                "the 'clip_vit_b_32' extractor needs OpenAI's clip package "
                "(pip install clip-anytorch) and the ViT-B/32 weights"
            ) from None
        directory = weights_dir()
        if not os.path.isfile(os.path.join(directory, FILE)):
            raise ExtractorUnavailable(
                f"the CLIP ViT-B/32 weights are not in {directory} ({FILE}); infdiff never "
                "downloads them: copy them there or set INFDIFF_CLIP_DIR"
            )
        self.model, _ = clip.load(MODEL, device="cpu", download_root=directory)
        self.model.eval()
        self.batch_size = batch_size

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            cropped = clip_resize_crop(pictures(images[start : start + self.batch_size]))
            x = torch.from_numpy(np.ascontiguousarray(cropped)).permute(0, 3, 1, 2).float() / 255.0
            out.append(self.model.encode_image((x - MEAN) / STD).float())
        return torch.cat(out)
