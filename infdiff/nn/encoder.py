"""The ∞-Diff encoder: sparse integral operators, then the contracting half of the U-Net.

Bond-Taylor & Willcocks 2024, §4.2.  A *fresh* random subset of the clean image's pixels is
lifted, passed through ``L`` sparse residual blocks (no time conditioning), interpolated onto
the coarse grid, contracted by :class:`~infdiff.nn.uno.UNOEncoder`, average-pooled to a
``p × p`` grid, flattened and mapped linearly to the latent ``z``.  ``p = 1`` is the global mean
of the paper (and of DiffAE); ``p > 1`` keeps where features are, which a small encoder cannot
otherwise recover from a translation-equivariant trunk.  The coarse grid has a fixed side at
every input resolution, so either way the code is resolution-independent.  The stochastic
variant predicts a diagonal Gaussian ``q(z|x) = N(μ, diag σ²)``, samples it by reparameterisation and adds
``KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − log σ² − 1)`` (weighted) to the loss.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
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
    ``pool_size`` is ``p`` of the module docstring; it must divide the contracted grid's side.
    """

    def __init__(
        self,
        channels: int = 3,
        z_dim: int = 1024,
        train_size=256,
        nf: int = 64,
        num_conv_blocks: int = 3,
        kernel_size: int = 7,
        mlp_mult: int = 2,
        knn_neighbours: int = 3,
        uno_res: int = 128,
        uno_channels: int = 128,
        uno: Optional[Mapping[str, Any]] = None,
        stochastic: bool = False,
        pool_size: int = 1,
        backend: str = "auto",
        neighbours: str = "table",
    ):
        super().__init__()
        self.uno_res = uno_res
        self.knn_neighbours = knn_neighbours
        self.backend = backend
        self.stochastic = stochastic
        self.lift = nn.Linear(channels, nf)
        self.blocks = nn.ModuleList(
            SparseResBlock(nf, kernel_size, train_size, mlp_mult=mlp_mult, backend=backend, neighbours=neighbours)
            for _ in range(num_conv_blocks)
        )
        self.to_grid = nn.Conv2d(nf, uno_channels, 1)
        self.contract = UNOEncoder(uno_channels, resolution=uno_res, **dict(uno or {}))
        contracted = self.contract.out_resolution
        if pool_size < 1 or contracted % pool_size:
            divisors = [d for d in range(1, contracted + 1) if contracted % d == 0]
            raise ValueError(
                f"pool_size={pool_size}: must divide the side {contracted} of the contracted grid; "
                f"choose one of {divisors}"
            )
        self.pool_size, self.z_dim = pool_size, z_dim
        self.head = nn.Linear(self.contract.out_channels * pool_size**2, 2 * z_dim if stochastic else z_dim)

    def forward(self, x: Field, sample: Optional[bool] = None) -> Encoding:
        """Encode ``x``; a stochastic encoder samples ``z`` when ``sample`` (default: in training)."""
        h = map_values(field_from_input(x), self.lift)
        for block in self.blocks:
            h = block(h)
        features = self.contract(self.to_grid(to_coarse_grid(h, self.uno_res, self.knn_neighbours, self.backend)))
        out = self.head(F.adaptive_avg_pool2d(features, self.pool_size).flatten(1))
        if not self.stochastic:
            return Encoding(out, out, None)
        mean, logvar = out.chunk(2, dim=-1)
        draw = self.training if sample is None else sample
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean) if draw else mean
        return Encoding(z, mean, logvar)
