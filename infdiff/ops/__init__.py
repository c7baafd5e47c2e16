"""Sparse coordinate operators: the sparse image type, grids, subsets, convolution, kNN."""

from infdiff.ops.grid import (
    as_size,
    grid_coords,
    index_to_coords,
    index_to_rowcol,
    resized_kernel_size,
    resolution_ratio,
    white_noise_scale,
)
from infdiff.ops.backends import BACKENDS, backend_names, resolve_backend
from infdiff.ops.knn import grid_to_sparse, interpolate_to_grid, knn_grid_search, sample_grid_at_points
from infdiff.ops.reference_kernels import knn_brute_force
from infdiff.ops.sparse_conv import (
    NEIGHBOURS,
    dense_depthwise_conv,
    neighbour_table,
    resize_kernel,
    sparse_depthwise_conv,
)
from infdiff.ops.sparse_image import SparseImage, full_index, gather_pixels
from infdiff.ops.subsets import SUBSETS, draw_subset, halton_subset, uniform_subset

__all__ = [
    "SparseImage",
    "full_index",
    "gather_pixels",
    "as_size",
    "grid_coords",
    "index_to_coords",
    "index_to_rowcol",
    "resized_kernel_size",
    "resolution_ratio",
    "white_noise_scale",
    "draw_subset",
    "uniform_subset",
    "halton_subset",
    "SUBSETS",
    "sparse_depthwise_conv",
    "dense_depthwise_conv",
    "resize_kernel",
    "neighbour_table",
    "NEIGHBOURS",
    "interpolate_to_grid",
    "knn_grid_search",
    "knn_brute_force",
    "sample_grid_at_points",
    "grid_to_sparse",
    "BACKENDS",
    "backend_names",
    "resolve_backend",
]
