"""Features over a grid, carried either sparsely or densely, and the moves to a coarse grid.

A *field* is what the ∞-Diff networks pass between blocks: either a :class:`SparseImage`
(``values`` ``(B, N, C)`` at some pixels) or a dense channels-last tensor ``(B, H, W, C)``
holding every pixel.  Point-wise layers act on the last dimension of both; the convolution
and the grid moves dispatch on the kind.  A dense field is a sparse field with every pixel
present, and both kinds give the same results (tested).
"""

from __future__ import annotations

from typing import Callable, Tuple, Union

import torch

from infdiff.ops import SparseImage, full_index, grid_to_sparse, interpolate_to_grid

Field = Union[SparseImage, torch.Tensor]


def field_from_input(x: Field) -> Field:
    """A network input as a field: images ``(B, C, H, W)`` become channels-last ``(B, H, W, C)``."""
    if isinstance(x, SparseImage):
        return x
    if x.dim() != 4:
        raise ValueError(f"expected a SparseImage or a dense (B, C, H, W) batch, got shape {tuple(x.shape)}")
    return x.permute(0, 2, 3, 1)


def field_to_output(field: Field) -> Field:
    """Inverse of :func:`field_from_input` (dense fields go back to ``(B, C, H, W)``)."""
    return field if isinstance(field, SparseImage) else field.permute(0, 3, 1, 2)


def field_values(field: Field) -> torch.Tensor:
    return field.values if isinstance(field, SparseImage) else field


def with_values(field: Field, values: torch.Tensor) -> Field:
    return field.with_values(values) if isinstance(field, SparseImage) else values


def map_values(field: Field, fn: Callable[[torch.Tensor], torch.Tensor]) -> Field:
    """Apply a point-wise ``fn`` to the channels of every pixel."""
    return with_values(field, fn(field_values(field)))


def grid_size(field: Field) -> Tuple[int, int]:
    return field.size if isinstance(field, SparseImage) else tuple(field.shape[1:3])


def as_sparse(field: Field) -> SparseImage:
    """View a dense field as a sparse image holding every pixel (no copy of the values)."""
    if isinstance(field, SparseImage):
        return field
    b, h, w, c = field.shape
    return SparseImage(field.reshape(b, h * w, c), full_index(b, (h, w), field.device), (h, w))


def to_coarse_grid(field: Field, resolution: int, neighbours: int, backend: str = "auto") -> torch.Tensor:
    """kNN inverse-squared-distance interpolation onto a ``resolution²`` grid ``(B, C, r, r)``."""
    return interpolate_to_grid(as_sparse(field), resolution, neighbours, backend)


def from_coarse_grid(grid: torch.Tensor, like: Field) -> Field:
    """Bilinear samples of ``grid`` at the pixels of ``like``, as a field of the same kind."""
    values = grid_to_sparse(grid, as_sparse(like)).values
    return with_values(like, values.view(*field_values(like).shape[:-1], values.shape[-1]))
