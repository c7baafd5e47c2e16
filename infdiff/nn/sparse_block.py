"""The ∞-Diff sparse residual block: a Monte-Carlo integral operator plus a point-wise MLP.

For features ``x`` at a set of pixels (Bond-Taylor & Willcocks 2024, §4.1 and Fig. 3):

    h = FiLM₁(LayerNorm(x))                 time scale/shift, latent scale
    x = x + K h,     (K h)(u) = Σ_o w_o h(u+o) m(u+o) / (Σ_o m(u+o) / k0²)
    h = FiLM₂(LayerNorm(x))
    x = x + W₂ GELU(W₁ h)                   point-wise MLP, hidden width ``mlp_mult · C``

``K`` is a depthwise ``k0×k0`` kernel learned at the training resolution.  On a grid ``r`` times
finer it is resampled to ``k' ≈ r k0`` taps so that it keeps its physical support on the unit
square (:func:`infdiff.ops.resized_kernel_size`); the normaliser keeps the ``k0²`` of training.
An optional skip input (the matching block of the down path) is concatenated and mixed in by
a linear layer first.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Tuple

import torch
from torch import nn

from infdiff.nn.fields import Field, field_values, grid_size, map_values, with_values
from infdiff.nn.film import FiLM, own_affines
from infdiff.ops import (
    SparseImage,
    as_size,
    dense_depthwise_conv,
    resize_kernel,
    resized_kernel_size,
    resolution_ratio,
    sparse_depthwise_conv,
)


class MonteCarloConv(nn.Module):
    """Depthwise integral operator of ∞-Diff, evaluated on sparse or dense fields at any resolution."""

    def __init__(self, channels: int, kernel_size: int, train_size, backend: str = "auto", neighbours: str = "table"):
        super().__init__()
        self.backend = backend
        self.neighbours = neighbours
        self._resized = None  # (key, kernel): the last resampled kernel, outside autograd
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.train_size = as_size(train_size)
        self.weight = nn.Parameter(torch.empty(channels, kernel_size, kernel_size))
        bound = 1 / kernel_size  # kaiming-uniform(a=√5) bound 1/√fan_in of a depthwise conv
        nn.init.uniform_(self.weight, -bound, bound)

    def kernel_at(self, size) -> torch.Tensor:
        """The kernel resampled for a grid of ``size`` (unchanged at the training size).

        Outside autograd the last one is kept until the weights change, so every sampling step
        at one size uses the same tensor (and the dense path's FFT of it is taken once); a compiled
        graph resamples it in each call instead (the weights' version is no value a graph can hold).
        """
        rh, rw = resolution_ratio(size, self.train_size)
        taps = (resized_kernel_size(self.kernel_size, rh), resized_kernel_size(self.kernel_size, rw))
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return resize_kernel(self.weight, taps)
        key = (taps, self.weight._version, self.weight.device, self.weight.dtype)
        if self._resized is None or self._resized[0] != key:
            self._resized = (key, resize_kernel(self.weight, taps))
        return self._resized[1]

    def forward(self, field: Field) -> Field:
        kernel = self.kernel_at(grid_size(field))
        train_kernel = (self.kernel_size, self.kernel_size)
        if isinstance(field, SparseImage):
            return sparse_depthwise_conv(field, kernel, train_kernel, self.backend, self.neighbours)
        out = dense_depthwise_conv(field.permute(0, 3, 1, 2), kernel, train_kernel)
        return out.permute(0, 2, 3, 1)


class SparseResBlock(nn.Module):
    """Residual block ``x + K FiLM(LN x)`` then ``x + MLP(FiLM(LN x))`` (see module docstring)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        train_size,
        time_dim: Optional[int] = None,
        z_dim: Optional[int] = None,
        mlp_mult: int = 2,
        skip_channels: Optional[int] = None,
        backend: str = "auto",
        neighbours: str = "table",
    ):
        super().__init__()
        self.backend = backend
        self.skip = nn.Linear(channels + skip_channels, channels) if skip_channels else None
        self.norm1 = nn.LayerNorm(channels)
        self.film1 = FiLM(channels, time_dim, z_dim)
        self.conv = MonteCarloConv(channels, kernel_size, train_size, backend, neighbours)
        self.norm2 = nn.LayerNorm(channels)
        self.film2 = FiLM(channels, time_dim, z_dim)
        self.mlp = nn.Sequential(
            nn.Linear(channels, mlp_mult * channels), nn.GELU(), nn.Linear(mlp_mult * channels, channels)
        )

    def modulated_norms(self) -> List[Tuple[FiLM, nn.LayerNorm]]:
        """The block's two (FiLM, norm) pairs (:func:`~infdiff.nn.film.block_affines`)."""
        return [(self.film1, self.norm1), (self.film2, self.norm2)]

    def forward(
        self,
        x: Field,
        t_emb: Optional[torch.Tensor] = None,
        z: Optional[torch.Tensor] = None,
        skip: Optional[Field] = None,
        affines: Optional[Mapping[nn.Module, list]] = None,
    ) -> Field:
        """``affines``: the folded FiLMs of a network's blocks for this ``t_emb`` and ``z``, when the caller
        computed them together (:func:`~infdiff.nn.film.block_affines`); else the block computes its own."""
        if (skip is None) != (self.skip is None):
            raise ValueError("skip input must be given exactly when the block was built with skip_channels")
        first, second = own_affines(self, t_emb, z, affines)
        if skip is not None:
            x = map_values(x, lambda v: self.skip(torch.cat((v, field_values(skip)), -1)))
        h = self.conv(map_values(x, lambda v: self.film1.apply_folded(self.norm1, v, first, self.backend)))
        v = field_values(x) + field_values(h)
        v = v + self.mlp(self.film2.apply_folded(self.norm2, v, second, self.backend))
        return with_values(x, v)
