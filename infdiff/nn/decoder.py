"""The ∞-Diff denoiser ("SparseUNet"): sparse integral operators around a coarse-grid U-Net.

Bond-Taylor & Willcocks 2024, §4.1 / Fig. 3.  For a noisy state at a set of pixels:

    h₀ = W_in x                                        lift channels → ``nf``
    h_i = SparseResBlock_i(h_{i-1}, t, z),  i = 1..L   kept as skips
    g   = UNO( W_g · kNN_K(h_L → r×r grid) [+ up(W_z z)], t, z )   (inverse-squared-distance kNN)
    h   = W_back · bilinear(g at the pixels)
    h   = SparseResBlock'_i(h, t, z, skip=h_{L+1-i}),  i = 1..L
    out = W_out h

Because kNN interpolation weights sum to one, ``W_g`` commutes with the interpolation; it is
applied on the grid (fewer channels are interpolated).  With ``z_grid = p > 0`` the latent is
also mapped linearly to a ``p × p`` feature map, bilinearly resized to the grid and added to
the U-Net's input (``up(W_z z)``): the counterpart of an encoder that pools to ``p × p``, giving
``z`` a spatial route into the decoder besides the per-channel FiLM scales of the paper (and of
DiffAE).  The input may be a :class:`SparseImage` (training on coordinate subsets) or a dense
``(B, C, H, W)`` batch at any resolution: every operator is defined on the unit square, so the
same weights serve both.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from infdiff.nn.embeddings import TimeEmbedding
from infdiff.nn.fields import Field, field_from_input, field_to_output, from_coarse_grid, map_values, to_coarse_grid
from infdiff.nn.film import block_affines
from infdiff.nn.sparse_block import SparseResBlock
from infdiff.nn.uno import UNO


class SparseUNet(nn.Module):
    """∞-Diff decoder ``f(x_t, t, z)`` on sparse or dense inputs (see module docstring).

    Args:
        channels: image channels; ``out_channels`` defaults to it.
        train_size: grid the kernels are learned at (their support is kept at other sizes).
        nf: channels of the sparse path.
        time_dim: width of the time embedding given to every block.
        z_dim: width of the latent code (``None``: unconditional).
        num_conv_blocks: sparse residual blocks before and after the grid.
        kernel_size: taps of the depthwise kernels at ``train_size``.
        mlp_mult: hidden-width multiplier of the point-wise MLPs.
        knn_neighbours: ``K`` of the interpolation onto the grid.
        backend: the sparse kernels (:data:`infdiff.ops.BACKENDS` or ``auto``, ∞-Diff's ``model.backend``).
        neighbours: how they find neighbours (:data:`infdiff.ops.NEIGHBOURS`).
        uno_res: side of the coarse grid.
        uno_channels: channels entering the U-Net.
        z_grid: side ``p`` of the latent feature map added to the U-Net input (0: none).
        uno: further :class:`~infdiff.nn.uno.UNO` arguments (``base_channels``, ``channel_mults``,
            ``blocks_per_level``, ``attn_resolutions``, ``dropout``, ...).
    """

    def __init__(
        self,
        channels: int = 3,
        train_size=256,
        nf: int = 64,
        time_dim: int = 256,
        z_dim: Optional[int] = None,
        num_conv_blocks: int = 3,
        kernel_size: int = 7,
        mlp_mult: int = 2,
        knn_neighbours: int = 3,
        uno_res: int = 128,
        uno_channels: int = 128,
        uno: Optional[Mapping[str, Any]] = None,
        out_channels: Optional[int] = None,
        z_grid: int = 0,
        backend: str = "auto",
        neighbours: str = "table",
    ):
        super().__init__()
        if z_grid < 0 or (z_grid and z_dim is None):
            raise ValueError(f"z_grid={z_grid}: must be 0 or a positive side with a latent (z_dim={z_dim})")
        self.channels = channels
        self.uno_res = uno_res
        self.knn_neighbours = knn_neighbours
        self.backend = backend
        self.time_embedding = TimeEmbedding(time_dim, time_dim)
        self.lift = nn.Linear(channels, nf)
        block = dict(
            kernel_size=kernel_size,
            train_size=train_size,
            time_dim=time_dim,
            z_dim=z_dim,
            mlp_mult=mlp_mult,
            backend=backend,
            neighbours=neighbours,
        )
        self.down = nn.ModuleList(SparseResBlock(nf, **block) for _ in range(num_conv_blocks))
        self.to_grid = nn.Conv2d(nf, uno_channels, 1)
        self.z_grid = z_grid
        self.z_to_grid = nn.Linear(z_dim, uno_channels * z_grid * z_grid) if z_grid else None
        self.uno = UNO(
            uno_channels, uno_channels, resolution=uno_res, time_dim=time_dim, z_dim=z_dim, **dict(uno or {})
        )
        self.from_grid = nn.Linear(uno_channels, nf)
        self.up = nn.ModuleList(SparseResBlock(nf, skip_channels=nf, **block) for _ in range(num_conv_blocks))
        self.project = nn.Linear(nf, out_channels or channels)

    def forward(self, x: Field, t: torch.Tensor, z: Optional[torch.Tensor] = None) -> Field:
        """Predict the diffusion target at the pixels of ``x`` (same kind and size as ``x``)."""
        t_emb = self.time_embedding(t)
        affines = block_affines([*self.down, *self.up], t_emb, z)  # every block's FiLM at once
        h = map_values(field_from_input(x), self.lift)
        skips = []
        for block in self.down:
            h = block(h, t_emb, z, affines=affines)
            skips.append(h)
        grid = self.to_grid(to_coarse_grid(h, self.uno_res, self.knn_neighbours, self.backend))
        if self.z_to_grid is not None:
            latent = self.z_to_grid(z).reshape(z.shape[0], -1, self.z_grid, self.z_grid)
            grid = grid + F.interpolate(latent, size=grid.shape[-2:], mode="bilinear", align_corners=False)
        grid = self.uno(grid, t_emb, z)
        h = map_values(from_coarse_grid(grid, h), self.from_grid)
        for block in self.up:
            h = block(h, t_emb, z, skip=skips.pop(), affines=affines)
        return field_to_output(map_values(h, self.project))
