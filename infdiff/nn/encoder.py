"""The ∞-Diff encoder: sparse integral operators, then the contracting half of the U-Net.

Bond-Taylor & Willcocks 2024, §4.2.  A *fresh* random subset of the clean image's pixels is
lifted, passed through ``L`` sparse residual blocks (no time conditioning), interpolated onto
the coarse grid, contracted by :class:`~infdiff.nn.uno.UNOEncoder`, averaged over the grid
and mapped linearly to the latent ``z``.  The stochastic variant predicts a diagonal Gaussian
``q(z|x) = N(μ, diag σ²)``, samples it by reparameterisation and adds
``KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − log σ² − 1)`` (weighted) to the loss.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import torch
from torch import nn

from infdiff.nn.fields import Field, field_from_input, map_values, to_coarse_grid
from infdiff.nn.sparse_block import SparseResBlock
from infdiff.nn.uno import UNOEncoder


class Encoding(NamedTuple):
    """``z`` (the code to condition on), and ``mean``/``logvar`` of ``q(z|x)`` (``logvar`` is
    ``None`` for a deterministic encoder)."""

    z: torch.Tensor
    mean: torch.Tensor
    logvar: Optional[torch.Tensor]


def kl_to_standard_normal(encoding: Encoding) -> torch.Tensor:
    """Per-example ``KL(N(μ, σ²) ‖ N(0, I))`` ``(B,)``; zero for deterministic encodings."""
    if encoding.logvar is None:
        return encoding.mean.new_zeros(encoding.mean.shape[0])
    mean, logvar = encoding.mean.float(), encoding.logvar.float()
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1).sum(-1)


class SparseEncoder(nn.Module):
    """Encoder ``x ↦ z`` from any set of pixels (see module docstring).

    Args mirror :class:`~infdiff.nn.decoder.SparseUNet`; ``uno`` is forwarded to
    :class:`~infdiff.nn.uno.UNOEncoder`.  ``stochastic`` selects the Gaussian encoder.
    """

    def __init__(self, channels: int = 3, z_dim: int = 1024, train_size=256, nf: int = 64,
                 num_conv_blocks: int = 3, kernel_size: int = 7, mlp_mult: int = 2, knn_neighbours: int = 3,
                 uno_res: int = 128, uno_channels: int = 128, uno: Optional[Mapping[str, Any]] = None,
                 stochastic: bool = False):
        super().__init__()
        self.uno_res = uno_res
        self.knn_neighbours = knn_neighbours
        self.stochastic = stochastic
        self.lift = nn.Linear(channels, nf)
        self.blocks = nn.ModuleList(
            SparseResBlock(nf, kernel_size=kernel_size, train_size=train_size, mlp_mult=mlp_mult)
            for _ in range(num_conv_blocks))
        self.to_grid = nn.Conv2d(nf, uno_channels, 1)
        self.contract = UNOEncoder(uno_channels, resolution=uno_res, **dict(uno or {}))
        self.head = nn.Linear(self.contract.out_channels, 2 * z_dim if stochastic else z_dim)

    def forward(self, x: Field, sample: Optional[bool] = None) -> Encoding:
        """Encode ``x``; a stochastic encoder samples ``z`` when ``sample`` (default: in training)."""
        h = map_values(field_from_input(x), self.lift)
        for block in self.blocks:
            h = block(h)
        features = self.contract(self.to_grid(to_coarse_grid(h, self.uno_res, self.knn_neighbours)))
        out = self.head(features.mean(dim=(2, 3)))
        if not self.stochastic:
            return Encoding(out, out, None)
        mean, logvar = out.chunk(2, dim=-1)
        draw = self.training if sample is None else sample
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean) if draw else mean
        return Encoding(z, mean, logvar)
