"""The convolutional neural operator (CNO, Raonić et al., NeurIPS 2023) as a score network ``s(x_t, t)``
on any grid, in pure PyTorch.

A CNO maps band-limited functions to band-limited functions with a U-shaped stack of blocks

    lift P → [residual nets R_ℓ on the skips; down D_ℓ]_{ℓ < L} → neck R_L → [up U_ℓ, cat skip, I_ℓ]_ℓ → project Q

where every block is ``σ̃(FiLM_t(GN(K h)))``: a convolution ``K`` (3×3 on level ``ℓ``'s grid, side
``N / 2^ℓ``), a group norm, FiLM by the time embedding, and the **alias-free activation**

    σ̃(h) = resample_{n_out}( σ( resample_{2·max(n_in, n_out)}(h) ) ),

σ applied on a grid twice as fine as both the input's and the output's, then filtered (antialiased
bicubic) onto the output's grid: the high frequencies σ creates are removed instead of aliased back
(the CNO paper's "continuous-discrete equivalence", with interpolation filters in place of its
windowed sincs).  Down blocks write a grid of half the side, up blocks one of the matching skip's
side, the others keep it.  ``R`` is ``h + K₂ σ̃(FiLM_t(GN(K₁ h)))``.

One addition makes it a score network: a pointwise path from the input, ``FiLM_t(W x)`` (``W`` 1×1),
joins the last features before ``Q``.  Every CNO block is band-limited by its filters, but the score
at small ``t`` is ``ε ≈ (x − x₀) / σ``, as rough as the noise: without the path the pixel-scale noise
is never predicted, so it is never removed and the samples keep a checkerboard (measured on shapes);
it is the role the FNO's pointwise ``W`` plays.

Two changes make it run **natively** at any resolution, where the published score-CNO resamples
every input to its training size (REFERENCE §2: its "56²" samples are made at 28² and upsampled):
grid sizes are read from the input, not fixed at construction (any side that halves ``L`` times to
at least one pixel, non-square included), and the kernels are
:class:`~infdiff.nn.grid_conv.GridConv2d`: their support is a patch of the unit square, so a grid
twice as fine sees the same operator with 7×7 taps.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from infdiff.nn.archs import ARCHS
from infdiff.nn.embeddings import TimeEmbedding
from infdiff.nn.film import FiLM
from infdiff.nn.grid_conv import GridConv2d
from infdiff.ops.grid import as_size

Grid = Tuple[int, int]


def alias_free_activation(h: torch.Tensor, out_size: Grid, negative_slope: float = 0.2) -> torch.Tensor:
    """``σ̃`` of the module docstring with the leaky ReLU as ``σ``: ``h`` ``(B, C, H, W)`` to ``out_size``."""
    fine = tuple(2 * max(n, m) for n, m in zip(h.shape[-2:], out_size))
    up = F.interpolate(h.contiguous(memory_format=torch.channels_last), size=fine, mode="bilinear")
    return F.interpolate(F.leaky_relu(up, negative_slope), size=out_size, mode="bilinear", antialias=True)


class CNOBlock(nn.Module):
    """``σ̃(FiLM_t(GN(K h)))`` onto a given output grid (module docstring); ``grid`` is the side the
    convolution is laid out for on the training grid."""

    def __init__(self, in_channels: int, out_channels: int, grid: int, time_dim: int, num_groups: int):
        super().__init__()
        self.conv = GridConv2d(in_channels, out_channels, grid)
        self.norm = nn.GroupNorm(num_groups, out_channels)
        self.film = FiLM(out_channels, time_dim, channels_last=False)

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor, out_size: Grid) -> torch.Tensor:
        return alias_free_activation(self.film.normalised(self.norm, self.conv(h), t_emb), out_size)


class CNOResidual(nn.Module):
    """``h + K₂ σ̃(FiLM_t(GN(K₁ h)))`` on one grid."""

    def __init__(self, channels: int, grid: int, time_dim: int, num_groups: int):
        super().__init__()
        self.block = CNOBlock(channels, channels, grid, time_dim, num_groups)
        self.conv = GridConv2d(channels, channels, grid)

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return h + self.conv(self.block(h, t_emb, tuple(h.shape[-2:])))


class CNOResNet(nn.Sequential):
    """``count`` :class:`CNOResidual` blocks in a row (the CNO's skip-path and neck networks)."""

    def __init__(self, count: int, channels: int, grid: int, time_dim: int, num_groups: int):
        super().__init__(*(CNOResidual(channels, grid, time_dim, num_groups) for _ in range(count)))

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        for block in self:
            h = block(h, t_emb)
        return h


@ARCHS.register("cno")
class CNOScoreNet(nn.Module):
    """CNO score network ``(B, C, H, W), (B,) -> (B, C, H, W)`` (module docstring).

    Args:
        channels: channels of the field (given by the stage from its data).
        width: channels of level 0; level ``ℓ`` has ``width · 2^ℓ``.
        levels: down (and up) blocks ``L``; the coarsest grid has side ``N / 2^L``.
        res_blocks: residual blocks on each level's skip path.
        neck_blocks: residual blocks at the coarsest level.
        time_dim: width of the time embedding.
        num_groups: group-norm groups (must divide ``width``).
        train_size: the training grid's side (given by the stage); kernels are laid out for it.
    """

    def __init__(
        self,
        channels: int,
        width: int = 32,
        levels: int = 2,
        res_blocks: int = 1,
        neck_blocks: int = 2,
        time_dim: int = 128,
        num_groups: int = 8,
        train_size=None,
    ):
        super().__init__()
        if train_size is None:
            raise ValueError("the CNO needs train_size, the grid its kernels are laid out for")
        side = min(as_size(train_size))
        if min(width, levels, time_dim, num_groups) < 1 or min(res_blocks, neck_blocks) < 0:
            raise ValueError(
                f"width={width}, levels={levels}, time_dim={time_dim}, num_groups={num_groups}, "
                f"res_blocks={res_blocks}, neck_blocks={neck_blocks}: expected positive sizes"
            )
        if width % num_groups:
            raise ValueError(f"num_groups={num_groups}: must divide width={width}")
        if side >> levels < 1:
            raise ValueError(
                f"levels={levels}: a {side}-pixel training grid halves at most {side.bit_length() - 1} times"
            )
        self.channels, self.levels = channels, levels
        widths = [width * 2**level for level in range(levels + 1)]
        grids = [max(1, side >> level) for level in range(levels + 1)]
        block = lambda c_in, c_out, level: CNOBlock(c_in, c_out, grids[level], time_dim, num_groups)  # noqa: E731
        self.time_embedding = TimeEmbedding(time_dim, time_dim)
        self.lift = block(channels, width, 0)
        self.skip_nets = nn.ModuleList(
            CNOResNet(res_blocks, widths[i], grids[i], time_dim, num_groups) for i in range(levels)
        )
        self.down = nn.ModuleList(block(widths[i], widths[i + 1], i) for i in range(levels))
        self.neck = CNOResNet(neck_blocks, widths[levels], grids[levels], time_dim, num_groups)
        self.up = nn.ModuleList(block(widths[i + 1], widths[i], i + 1) for i in range(levels))
        self.invariant = nn.ModuleList(block(2 * widths[i], widths[i], i) for i in range(levels))
        self.pointwise = nn.Conv2d(channels, width, kernel_size=1)
        self.pointwise_film = FiLM(width, time_dim, channels_last=False)
        self.project = GridConv2d(width, channels, grids[0])

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected input (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) >> self.levels < 1:
            raise ValueError(
                f"input grid {x.shape[-2]}x{x.shape[-1]}: {self.levels} levels halve it to nothing; "
                f"expected sides of at least {2**self.levels}"
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        t_emb = self.time_embedding(t)
        h = self.lift(x, t_emb, tuple(x.shape[-2:]))
        skips: List[torch.Tensor] = []
        for skip_net, down in zip(self.skip_nets, self.down):
            skips.append(skip_net(h, t_emb))
            h = down(h, t_emb, tuple(n // 2 for n in h.shape[-2:]))
        h = self.neck(h, t_emb)
        for level in reversed(range(self.levels)):
            skip = skips[level]
            h = self.up[level](h, t_emb, tuple(skip.shape[-2:]))
            h = self.invariant[level](torch.cat((h, skip), dim=1), t_emb, tuple(skip.shape[-2:]))
        return self.project(h + self.pointwise_film(self.pointwise(x), t_emb))
