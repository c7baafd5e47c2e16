"""The Fourier neural operator as a score network ``s(x_t, t)`` on any grid (Li et al., ICLR 2021;
as the score operator of Multilevel Diffusion, Hagemann et al. 2023).

The input field's channels are joined by its cell-centred unit-square coordinates, lifted to
``width`` channels, passed through ``fourier_layers`` layers

    h ← GELU(K h + W h + E t)      (K spectral on the lowest modes, W pointwise, E a time projection)

(no activation after the last) and projected back by a two-layer pointwise MLP.  Every part is a
function of the field, not of its pixels: the spectral convolution reads the grid as samples of a
function (:mod:`infdiff.nn.spectral`) and the others act pixel by pixel, so the same network runs
natively at any resolution and on non-square grids, as long as the grid holds ``2 × modes`` per side.
"""

from __future__ import annotations

import torch
from torch import nn

from infdiff.nn.archs import ARCHS
from infdiff.nn.embeddings import TimeEmbedding
from infdiff.nn.spectral import FourierConv2d
from infdiff.ops.grid import as_size, grid_coords


@ARCHS.register("fno")
class FNOScoreNet(nn.Module):
    """FNO score network ``(B, C, H, W), (B,) -> (B, C, H, W)`` (module docstring).

    Args:
        channels: channels of the field (given by the stage from its data).
        width: channels of the hidden layers.
        modes: Fourier modes kept per side (rows ``|k| < modes``, columns ``0 <= l < modes``).
        fourier_layers: Fourier layers.
        time_dim: width of the time embedding.
        train_size: the training grid (given by the stage), checked to hold ``2 × modes`` pixels per side;
            the network itself has no grid.
    """

    def __init__(
        self,
        channels: int,
        width: int = 64,
        modes: int = 12,
        fourier_layers: int = 4,
        time_dim: int = 128,
        train_size=None,
    ):
        super().__init__()
        if min(width, modes, fourier_layers, time_dim) < 1:
            raise ValueError(
                f"width={width}, modes={modes}, fourier_layers={fourier_layers}, time_dim={time_dim}: expected positive values"
            )
        if train_size is not None and min(as_size(train_size)) < 2 * modes:
            raise ValueError(
                f"modes={modes}: a {as_size(train_size)[0]}x{as_size(train_size)[1]} training grid holds at most "
                f"{min(as_size(train_size)) // 2} Fourier modes per side (2 x modes pixels)"
            )
        self.channels = channels
        self.time_embedding = TimeEmbedding(time_dim, time_dim)
        self.lift = nn.Conv2d(channels + 2, width, kernel_size=1)
        self.layers = nn.ModuleList(FourierConv2d(width, width, modes, modes) for _ in range(fourier_layers))
        self.time_projections = nn.ModuleList(nn.Linear(time_dim, width) for _ in range(fourier_layers))
        self.project = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.GELU(), nn.Conv2d(2 * width, channels, 1))
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        coords = grid_coords((h, w), device=x.device, dtype=x.dtype).T.reshape(1, 2, h, w).expand(b, -1, -1, -1)
        hidden = self.lift(torch.cat((x, coords), dim=1))
        t_emb = self.time_embedding(t)
        for i, (layer, time) in enumerate(zip(self.layers, self.time_projections)):
            hidden = layer(hidden) + time(t_emb).to(hidden.dtype)[:, :, None, None]
            if i < len(self.layers) - 1:
                hidden = self.activation(hidden)
        return self.project(hidden)
