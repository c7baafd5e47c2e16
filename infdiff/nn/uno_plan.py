"""The layout of the coarse-grid U-Net: its spatial operators and each level's channels, grid and blocks.

Level ``i`` of ``L`` works at ``resolution / 2^i``.  Its expanding path (and the middle, on the last
level) runs at ``base_channels · channel_mults[i]`` channels; its contracting path at the
``down_channels`` of one of :data:`WIDTH_LAYOUTS`:

* ``"per_level"``: the same ``base_channels · channel_mults[i]``;
* ``"infty_diff"``: ``base_channels`` at level 0 and ``base_channels · channel_mults[i − 1]`` after it:
  the ∞-Diff code's U-Net, whose contracting blocks run at the width *entering* the level (its
  downsampling convolution widens), so for the FFHQ-256 mults (1, 2, 4, 8, 8) the contracting path
  works at 128, 128, 256, 512, 1024 instead of 128, 256, 512, 1024, 1024.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from infdiff.nn.grid_conv import GridConv2d
from infdiff.nn.spectral import FourierConv2d, SpectralResample2d

GRID_OPS = ("conv", "grid_conv", "spectral")  # the U-Net's kinds of spatial operators (GridOps)

WIDTH_LAYOUTS: Dict[str, Callable[[int, Sequence[int]], List[int]]] = {
    "per_level": lambda base, mults: [base * m for m in mults],
    "infty_diff": lambda base, mults: [base, *(base * m for m in mults[:-1])],
}


@dataclass(frozen=True)
class GridOps:
    """The spatial operators of the U-Net.

    ``kind="conv"``: ``3x3`` convolutions, stride-2 ``3x3`` convolution to downsample, nearest ``x2``
    followed by a ``3x3`` convolution to upsample (stencils of pixels, as DDPM's U-Net).

    ``kind="grid_conv"``: :class:`~infdiff.nn.grid_conv.GridConv2d`, whose kernels cover a fixed
    patch of the unit square on any input grid, with resampling that commutes with refining the grid
    (one operator at every resolution): 2×2 cell averages, then a convolution, to downsample (a
    stride-2 stencil samples a point a quarter cell off the coarse cell's centre, an O(h) shift that
    differs between grids); bilinear ×2, then a convolution, to upsample (nearest ×2 adds an O(h)
    staircase of the coarse grid's size).

    ``kind="spectral"``: :class:`~infdiff.nn.spectral.FourierConv2d` (spectral + ``1x1``) as the
    convolution and :class:`~infdiff.nn.spectral.SpectralResample2d` to resample.  A layer touching
    grids of side ``r`` keeps ``min(modes, r_min // 2)`` modes, ``r_min`` the smallest grid it reads
    or writes, so every kept mode is representable.
    """

    kind: str
    modes: Optional[int] = None

    def __post_init__(self):
        if self.kind not in GRID_OPS:
            raise ValueError(f"conv_type must be one of {list(GRID_OPS)}, got {self.kind!r}")
        if self.kind == "spectral" and (self.modes is None or self.modes < 1):
            raise ValueError(f"conv_type='spectral' needs a positive int spectral_modes, got {self.modes!r}")
        if self.kind != "spectral" and self.modes is not None:
            raise ValueError("spectral_modes only applies to conv_type='spectral'")

    def _modes(self, grid: int) -> int:
        if grid < 2:
            raise ValueError(f"spectral convolutions need grids of at least 2x2, got {grid}x{grid}")
        return min(self.modes, grid // 2)

    def conv(self, in_channels: int, out_channels: int, grid: int) -> nn.Module:
        """Same-size convolution on a grid of side ``grid``."""
        if self.kind == "conv":
            return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        if self.kind == "grid_conv":
            return GridConv2d(in_channels, out_channels, grid)
        modes = self._modes(grid)
        return FourierConv2d(in_channels, out_channels, modes, modes)

    def downsample(self, channels: int, grid: int) -> nn.Module:
        """Halve a grid of side ``grid``."""
        if self.kind == "conv":
            return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        if self.kind == "grid_conv":
            return nn.Sequential(nn.AvgPool2d(2), GridConv2d(channels, channels, grid // 2))
        return SpectralResample2d(channels, channels, self._modes(grid // 2), scale=0.5)

    def upsample(self, channels: int, grid: int) -> nn.Module:
        """Double a grid of side ``grid``."""
        if self.kind == "conv":
            return nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, kernel_size=3, padding=1)
            )
        if self.kind == "grid_conv":
            return nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                GridConv2d(channels, channels, 2 * grid),
            )
        return SpectralResample2d(channels, channels, self._modes(grid), scale=2.0)


@dataclass(frozen=True)
class BlockSettings:
    """What every block of one U-Net shares: spatial operators, conditioning widths, norm groups and
    attention head width."""

    ops: GridOps
    time_dim: Optional[int]
    z_dim: Optional[int]
    num_groups: int
    head_dim: int


@dataclass(frozen=True)
class LevelSpec:
    """One U-Net level: its channels (expanding path), ``down_channels`` (contracting path), grid side,
    residual blocks, attention and dropout."""

    index: int
    channels: int
    down_channels: int
    resolution: int
    num_blocks: int
    attention: bool
    dropout: float


def plan_levels(
    base_channels: int,
    channel_mults: Sequence[int],
    blocks_per_level: Union[int, Sequence[int]],
    attn_resolutions: Sequence[int],
    dropout: float,
    dropout_from_resolution: int,
    resolution: int,
    num_groups: int,
    width_layout: str = "per_level",
) -> Tuple[LevelSpec, ...]:
    """Validate the U-Net hyper-parameters and lay out its levels.

    Level ``i`` has the channels of ``width_layout`` (module docstring) at side ``resolution / 2^i``;
    it has attention iff its side is in ``attn_resolutions`` and dropout ``dropout`` iff its side is
    ``<= dropout_from_resolution`` (else none).
    """
    num_levels = len(channel_mults)
    if num_levels == 0 or any(m < 1 for m in channel_mults):
        raise ValueError(f"channel_mults={tuple(channel_mults)}: expected non-empty positive ints")
    if base_channels < 1:
        raise ValueError(f"base_channels={base_channels}: expected a positive int")
    if isinstance(blocks_per_level, int):
        blocks_per_level = (blocks_per_level,) * num_levels
    if len(blocks_per_level) != num_levels or any(n < 1 for n in blocks_per_level):
        raise ValueError(
            f"blocks_per_level={tuple(blocks_per_level)}: expected a positive int or {num_levels} "
            "positive ints (one per level)"
        )
    factor = 2 ** (num_levels - 1)
    if resolution < 1 or resolution % factor:
        raise ValueError(
            f"resolution={resolution}: must be a positive multiple of 2^(levels - 1) = {factor} for "
            f"{num_levels} levels (channel_mults={tuple(channel_mults)})"
        )
    resolutions = [resolution // 2**i for i in range(num_levels)]
    missing = sorted(set(attn_resolutions) - set(resolutions))
    if missing:
        raise ValueError(
            f"attn_resolutions={tuple(attn_resolutions)}: {missing} never occur; the levels have sides "
            f"{resolutions} (resolution {resolution}, halved per level), choose among them"
        )
    if width_layout not in WIDTH_LAYOUTS:
        raise ValueError(f"width_layout={width_layout!r}: expected one of {sorted(WIDTH_LAYOUTS)}")
    channels = [base_channels * m for m in channel_mults]
    down_channels = WIDTH_LAYOUTS[width_layout](base_channels, channel_mults)
    if num_groups < 1:
        raise ValueError(f"num_groups={num_groups}: expected a positive int")
    bad = sorted({c for c in [base_channels, *channels, *down_channels] if c % num_groups})
    if bad:
        raise ValueError(f"num_groups={num_groups}: must divide every channel count, got {bad}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout}: expected a rate in [0, 1)")
    return tuple(
        LevelSpec(
            index=i,
            channels=channels[i],
            down_channels=down_channels[i],
            resolution=resolutions[i],
            num_blocks=blocks_per_level[i],
            attention=resolutions[i] in attn_resolutions,
            dropout=dropout if resolutions[i] <= dropout_from_resolution else 0.0,
        )
        for i in range(num_levels)
    )
