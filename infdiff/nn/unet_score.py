"""The DDPM U-Net (Ho et al. 2020) as a score network ``s(x_t, t)`` on whole images: the baseline
score operator of Multilevel Diffusion and the CNO fork (REFERENCE §2).

It is :class:`~infdiff.nn.uno.UNO` (residual blocks with FiLM by the time embedding, self-attention
at chosen levels, skips between the two paths) with a :class:`~infdiff.nn.embeddings.TimeEmbedding`
in front.  Its spatial operators are the config's ``model.uno.conv_type``: ``"grid_conv"`` (the
default) keeps every kernel's support on the unit square, so the network is one operator at every
resolution (:mod:`infdiff.nn.grid_conv`); ``"conv"`` is DDPM's 3×3 stencils of pixels, whose
receptive field shrinks on a finer grid (what the published U-Net baseline does when sampled at 2×);
``"spectral"`` makes it a U-shaped neural operator.  Grid sides must be divisible by
``2^(levels − 1)``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from infdiff.nn.archs import ARCHS
from infdiff.nn.embeddings import TimeEmbedding
from infdiff.nn.uno import UNO
from infdiff.ops.grid import as_size

SCORE_UNET_DEFAULTS = dict(
    base_channels=32,
    channel_mults=(1, 2, 2),
    blocks_per_level=2,
    dropout=0.0,
    num_groups=8,
    conv_type="grid_conv",
)


@ARCHS.register("unet")
class UNetScoreNet(nn.Module):
    """U-Net score network ``(B, C, H, W), (B,) -> (B, C, H, W)`` (module docstring).

    Args:
        channels: channels of the field (given by the stage from its data).
        uno: :class:`~infdiff.nn.uno.UNO` keyword arguments (the ``model.uno`` section) over
            :data:`SCORE_UNET_DEFAULTS`; ``resolution`` is the training grid, and attention is at the
            coarsest level unless ``attn_resolutions`` says otherwise.
        time_dim: width of the time embedding (FiLM in every residual block).
        train_size: the training grid's side (given by the stage).
    """

    def __init__(self, channels: int, uno: Optional[dict] = None, time_dim: int = 128, train_size=None):
        super().__init__()
        if train_size is None:
            raise ValueError("the U-Net score network needs train_size, the grid its levels are laid out for")
        side = as_size(train_size)
        if side[0] != side[1]:
            raise ValueError(f"train_size={train_size}: the U-Net's levels are laid out for a square training grid")
        self.channels = channels
        self.time_embedding = TimeEmbedding(time_dim, time_dim)
        settings = {**SCORE_UNET_DEFAULTS, **(uno or {}), "resolution": side[0], "time_dim": time_dim}
        settings.setdefault("attn_resolutions", (side[0] // 2 ** (len(settings["channel_mults"]) - 1),))
        self.unet = UNO(channels, channels, **settings)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, self.time_embedding(t))
