"""The grid U-Net ("UNO") that ∞-Diff runs on its coarse regular grid.

∞-Diff (Bond-Taylor & Willcocks, ICLR 2024, arXiv 2303.18242) maps the sparse,
irregularly sampled state onto a coarse grid, processes it with a U-Net and maps back.  This module is
that U-Net, in the style of DDPM / ADM (Ho et al. 2020; Dhariwal & Nichol 2021) with the ∞-Diff
conditioning, optionally with Fourier (FNO) convolutions so that it acts as a U-shaped neural
operator (Rahman et al. 2022, "U-NO"):

* level ``i`` works at ``resolution / 2^i`` with ``base_channels * channel_mults[i]`` channels (or the
  ∞-Diff code's widths, shifted by one level: :mod:`infdiff.nn.uno_plan`);
* a residual block is ``x -> skip(x) + conv2(GELU(GN(conv1(dropout(GELU(FiLM(GN(x))))))))``;
* self-attention follows each residual block at levels listed in ``attn_resolutions``;
* the contracting path (stem, levels with downsampling, middle ``res -> attn -> res``) is
  :class:`UNOEncoder`; :class:`UNO` adds the expanding path, whose blocks take the contracting
  path's block outputs concatenated as skips, and an output head.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from infdiff.nn.film import FiLM, block_affines, own_affines
from infdiff.nn.uno_plan import BlockSettings, GridOps, LevelSpec, plan_levels
from infdiff.ops.grid import grid_coords


class AppendCoordinates(nn.Module):
    """Concatenate the unit-square coordinates ``(row, col)`` of each pixel as 2 extra channels.

    Neural-operator practice (Li et al. 2021): spectral convolutions are translation-equivariant and
    periodic, the coordinates let the network break both.  Pixel centres follow
    :func:`infdiff.ops.grid.grid_coords`, ``((i + 0.5) / H, (j + 0.5) / W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        coords = grid_coords((h, w), device=x.device, dtype=x.dtype)
        coords = coords.t().reshape(1, 2, h, w).expand(b, -1, -1, -1)
        return torch.cat((x, coords), dim=1)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H W`` pixels, with a residual connection.

        x + Proj(MHA(GN(x))),    MHA_h = softmax(Q_h K_h^T / sqrt(d)) V_h,

    ``Q, K, V`` being one linear map of the normalised pixel features.  Heads: ``max(1, C // head_dim)``
    (``C = 256`` gives 8 heads of 32), so the head width is ``C / heads``; ``C`` must be divisible by
    the head count.  Attention runs through ``F.scaled_dot_product_attention``.
    """

    def __init__(self, channels: int, num_groups: int = 32, head_dim: int = 32):
        super().__init__()
        if head_dim < 1:
            raise ValueError(f"head_dim must be positive, got {head_dim}")
        self.num_heads = max(1, channels // head_dim)
        if channels % self.num_heads:
            raise ValueError(
                f"attention channels {channels} are not divisible by its {self.num_heads} heads "
                f"(heads = max(1, channels // head_dim={head_dim}))"
            )
        self.norm = nn.GroupNorm(num_groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        split = "b n (three heads d) -> three b heads n d"
        q, k, v = rearrange(self.qkv(tokens), split, three=3, heads=self.num_heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = rearrange(attended, "b heads n d -> b n (heads d)")
        return x + rearrange(self.proj(attended), "b (h w) c -> b c h w", h=h, w=w)


class ResBlock(nn.Module):
    """Residual block ``skip(x) + conv2(GELU(GN(conv1(dropout(GELU(FiLM(GN(x), t_emb, z)))))))``.

    ``skip`` is a ``1x1`` convolution when the channel count changes, else the identity; FiLM is
    :class:`~infdiff.nn.film.FiLM` (time scale/shift, latent scale); the convolutions are those of
    ``settings.ops`` on a grid of side ``grid``.
    """

    def __init__(self, in_channels: int, out_channels: int, grid: int, dropout: float, settings: BlockSettings):
        super().__init__()
        self.norm1 = nn.GroupNorm(settings.num_groups, in_channels)
        self.film = FiLM(in_channels, settings.time_dim, settings.z_dim, channels_last=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv1 = settings.ops.conv(in_channels, out_channels, grid)
        self.norm2 = nn.GroupNorm(settings.num_groups, out_channels)
        self.conv2 = settings.ops.conv(out_channels, out_channels, grid)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )

    def modulated_norms(self) -> List[Tuple[FiLM, nn.GroupNorm]]:
        """The block's (FiLM, norm) pair (:func:`~infdiff.nn.film.block_affines`)."""
        return [(self.film, self.norm1)]

    def forward(self, x: torch.Tensor, t_emb: Optional[torch.Tensor], z: Optional[torch.Tensor], affines=None):
        """``affines``: the U-Net's folded FiLMs computed together (:func:`~infdiff.nn.film.block_affines`),
        or ``None`` to compute this block's own."""
        (affine,) = own_affines(self, t_emb, z, affines)
        h = F.gelu(self.film.apply_folded(self.norm1, x, affine))
        h = self.conv1(self.dropout(h))
        h = self.conv2(F.gelu(self.norm2(h)))
        return self.skip(x) + h


def res_block_affines(network: nn.Module, t_emb: Optional[torch.Tensor], z: Optional[torch.Tensor]) -> dict:
    """The folded FiLM of every :class:`ResBlock` of ``network`` (its ``res_blocks``, listed once when it is
    built), computed together: one projection of ``e_t`` and ``z`` per channel width instead of one per block."""
    return block_affines(network.res_blocks, t_emb, z)


def _res_blocks(network: nn.Module) -> tuple:
    """``network``'s residual blocks, kept as a plain tuple: not registered again as submodules."""
    return tuple(m for m in network.modules() if isinstance(m, ResBlock))


class LevelBlock(nn.Module):
    """A :class:`ResBlock` from ``in_channels`` to ``out_channels`` on ``level``'s grid followed, at attention
    levels, by an :class:`AttentionBlock`."""

    def __init__(self, in_channels: int, out_channels: int, level: LevelSpec, settings: BlockSettings):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, level.resolution, level.dropout, settings)
        self.attn = (
            AttentionBlock(out_channels, settings.num_groups, settings.head_dim) if level.attention else nn.Identity()
        )

    def forward(self, x: torch.Tensor, t_emb: Optional[torch.Tensor], z: Optional[torch.Tensor], affines=None):
        return self.attn(self.res(x, t_emb, z, affines))


class DownPath(nn.Module):
    """Contracting levels at their ``down_channels``: per level ``num_blocks`` :class:`LevelBlock` s, each
    output kept as a skip, then a downsampling layer (none after the last level)."""

    def __init__(self, in_channels: int, levels: Sequence[LevelSpec], settings: BlockSettings):
        super().__init__()
        self.levels = nn.ModuleList()
        self.resamples = nn.ModuleList()
        channels = in_channels
        for level in levels:
            blocks = nn.ModuleList()
            for _ in range(level.num_blocks):
                blocks.append(LevelBlock(channels, level.down_channels, level, settings))
                channels = level.down_channels
            self.levels.append(blocks)
            is_last = level.index == len(levels) - 1
            self.resamples.append(nn.Identity() if is_last else settings.ops.downsample(channels, level.resolution))

    def forward(
        self, x: torch.Tensor, t_emb: Optional[torch.Tensor], z: Optional[torch.Tensor], affines=None
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        skips = []
        for blocks, resample in zip(self.levels, self.resamples):
            for block in blocks:
                x = block(x, t_emb, z, affines)
                skips.append(x)
            x = resample(x)
        return x, skips


class MiddleBlock(nn.Module):
    """Bottleneck ``res -> attn -> res`` on the last level's grid, from its contracting width to its width."""

    def __init__(self, level: LevelSpec, settings: BlockSettings):
        super().__init__()
        self.first = LevelBlock(
            level.down_channels, level.channels, dataclasses.replace(level, attention=True), settings
        )
        self.second = ResBlock(level.channels, level.channels, level.resolution, level.dropout, settings)

    def forward(self, x: torch.Tensor, t_emb: Optional[torch.Tensor], z: Optional[torch.Tensor], affines=None):
        return self.second(self.first(x, t_emb, z, affines), t_emb, z, affines)


class UpPath(nn.Module):
    """Expanding levels at their ``channels``, coarsest first: per level ``num_blocks`` :class:`LevelBlock` s,
    each taking its input concatenated with the matching :class:`DownPath` skip (last in, first out),
    then a ``x2`` upsampling layer (none after level 0)."""

    def __init__(self, in_channels: int, levels: Sequence[LevelSpec], settings: BlockSettings):
        super().__init__()
        self.levels = nn.ModuleList()
        self.resamples = nn.ModuleList()
        channels = in_channels
        for level in reversed(levels):
            blocks = nn.ModuleList()
            for _ in range(level.num_blocks):
                blocks.append(LevelBlock(channels + level.down_channels, level.channels, level, settings))
                channels = level.channels
            self.levels.append(blocks)
            is_first = level.index == 0
            self.resamples.append(nn.Identity() if is_first else settings.ops.upsample(channels, level.resolution))

    def forward(
        self,
        x: torch.Tensor,
        skips: List[torch.Tensor],
        t_emb: Optional[torch.Tensor],
        z: Optional[torch.Tensor],
        affines=None,
    ) -> torch.Tensor:
        skips = list(skips)
        for blocks, resample in zip(self.levels, self.resamples):
            for block in blocks:
                x = block(torch.cat((x, skips.pop()), dim=1), t_emb, z, affines)
            x = resample(x)
        return x


class UNOEncoder(nn.Module):
    """Contracting half of :class:`UNO`:
    [coordinates] -> stem -> :class:`DownPath` -> :class:`MiddleBlock`.

    ``forward(x (B, in, H, W), t_emb, z)`` returns the bottleneck features
    ``(B, base_channels * channel_mults[-1], H / 2^(L-1), W / 2^(L-1))`` (``out_channels``,
    ``out_resolution``); the ∞-Diff encoder pools them and maps them to ``z``.  ``features`` also
    returns the skips used by :class:`UNO`.
    Arguments are those of :class:`UNO` (without ``out_channels``).
    """

    static_shapes = True  # the coarse grid's size is the config's: infdiff.train.compile may compile it

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
        blocks_per_level: Union[int, Sequence[int]] = 2,
        attn_resolutions: Sequence[int] = (16, 8),
        dropout: float = 0.1,
        dropout_from_resolution: int = 16,
        resolution: int = 128,
        time_dim: Optional[int] = None,
        z_dim: Optional[int] = None,
        conv_type: str = "conv",
        spectral_modes: Optional[int] = None,
        num_groups: int = 32,
        attn_head_dim: int = 32,
        append_coordinates: Optional[bool] = None,
        width_layout: str = "per_level",
    ):
        super().__init__()
        self.levels = plan_levels(
            base_channels,
            channel_mults,
            blocks_per_level,
            attn_resolutions,
            dropout,
            dropout_from_resolution,
            resolution,
            num_groups,
            width_layout,
        )
        self.settings = BlockSettings(GridOps(conv_type, spectral_modes), time_dim, z_dim, num_groups, attn_head_dim)
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.resolution = resolution
        self.out_channels = self.levels[-1].channels
        self.out_resolution = self.levels[-1].resolution
        coordinates = conv_type == "spectral" if append_coordinates is None else append_coordinates
        self.coordinates = AppendCoordinates() if coordinates else nn.Identity()
        stem_in = in_channels + 2 if coordinates else in_channels
        self.stem = self.settings.ops.conv(stem_in, base_channels, resolution)
        self.down = DownPath(base_channels, self.levels, self.settings)
        self.middle = MiddleBlock(self.levels[-1], self.settings)
        self.res_blocks = _res_blocks(self)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2 ** (len(self.levels) - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"input grid {x.shape[-2]}x{x.shape[-1]} must be divisible by {factor} for {len(self.levels)} levels"
            )

    def features(
        self,
        x: torch.Tensor,
        t_emb: Optional[torch.Tensor] = None,
        z: Optional[torch.Tensor] = None,
        affines=None,
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Bottleneck features and the per-block skips of the contracting path; ``affines``: those of
        :func:`res_block_affines` for an enclosing network (``None``: this path's own, computed together)."""
        self._check_input(x)
        affines = res_block_affines(self, t_emb, z) if affines is None else affines
        h = self.stem(self.coordinates(x))
        h, skips = self.down(h, t_emb, z, affines)
        return self.middle(h, t_emb, z, affines), skips

    def forward(
        self,
        x: torch.Tensor,
        t_emb: Optional[torch.Tensor] = None,
        z: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return self.features(x, t_emb, z)[0]


class UNO(nn.Module):
    """U-Net on the coarse grid of ∞-Diff: :class:`UNOEncoder` -> :class:`UpPath` -> head.

    Args (all but ``out_channels`` are passed on to :class:`UNOEncoder`):
        in_channels, out_channels: channels of ``x`` and of the output.
        base_channels: channels of level 0; level ``i`` has ``base_channels * channel_mults[i]``.
        channel_mults: one multiplier per level; ``L = len(channel_mults)`` levels.
        blocks_per_level: residual blocks per level in each path (int or one per level).
        attn_resolutions: grid sides whose levels get self-attention after every residual block
            (the middle always has one); each must be a level's side.
        dropout: dropout rate inside residual blocks at levels of side ``<= dropout_from_resolution``.
        resolution: grid side the levels are laid out for; must be divisible by ``2^(L-1)``.  Inputs
            of other sides divisible by ``2^(L-1)`` run with the same layout.
        time_dim, z_dim: widths of ``t_emb`` and ``z`` for FiLM; ``None`` disables that conditioning.
        conv_type: ``"conv"``, ``"grid_conv"`` or ``"spectral"`` (see :class:`GridOps`).
        append_coordinates: append the 2 unit-square pixel coordinates to the input
            (:class:`AppendCoordinates`); default: only for ``"spectral"``.  Convolutions and
            attention are translation-equivariant, so without them absolute positions (where a
            latent code puts an object) reach the network only through border effects.
        spectral_modes: Fourier modes per axis for ``"spectral"`` (capped per grid).
        num_groups: GroupNorm groups; must divide every channel count.
        attn_head_dim: target attention head width (see :class:`AttentionBlock`).
        width_layout: ``"per_level"`` (level ``i`` at ``base_channels * channel_mults[i]``) or
            ``"infty_diff"`` (the ∞-Diff code's: the widths shifted by one level,
            :mod:`infdiff.nn.uno_plan`).

    ``forward(x (B, in, H, W), t_emb (B, time_dim), z (B, z_dim)) -> (B, out, H, W)``.
    The head is ``conv(GELU(GN(h)))`` with the path's convolution.
    """

    static_shapes = True  # the coarse grid's size is the config's: infdiff.train.compile may compile it

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.contracting = UNOEncoder(in_channels, **kwargs)
        settings = self.contracting.settings
        self.expanding = UpPath(self.contracting.out_channels, self.contracting.levels, settings)
        top = self.contracting.levels[0].channels
        self.head = nn.Sequential(
            nn.GroupNorm(settings.num_groups, top),
            nn.GELU(),
            settings.ops.conv(top, out_channels, self.contracting.resolution),
        )
        self.res_blocks = _res_blocks(self)

    def forward(
        self,
        x: torch.Tensor,
        t_emb: Optional[torch.Tensor] = None,
        z: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        affines = res_block_affines(self, t_emb, z)  # both paths' FiLMs at once
        h, skips = self.contracting.features(x, t_emb, z, affines)
        return self.head(self.expanding(h, skips, t_emb, z, affines))
