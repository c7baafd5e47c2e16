"""Data sets for ∞-Diff: procedural shapes, image folders, LMDBs (LSUN or prepared), MNIST-style IDX files,
PDEBench-style HDF5 files of 2-D fields (with h5py, ``pip install infdiff[pde]``).

Every dataset yields float32 tensors ``(C, H, W)`` in ``[-1, 1]``; :func:`build_dataset` builds
one from the ``data`` config section.  Convert large image folders to an LMDB with
``python -m infdiff.data.prepare SRC DST.lmdb --size N``.
"""

from infdiff.data.errors import DataError, UnreadableImageError, UnreadableImageWarning, UpsampledImageWarning
from infdiff.data.idx import IDXDataset
from infdiff.data.image_folder import ImageFolderDataset
from infdiff.data.lmdb_dataset import LMDBDataset
from infdiff.data.pdebench import PDEBenchDataset
from infdiff.data.registry import (
    DATASETS,
    DataKeyWarning,
    DataSetEntry,
    build_dataset,
    data_channels,
    dataset_entry,
    random_flip,
)
from infdiff.data.shapes import ShapesDataset, ShapesSample, render, sample_params
from infdiff.data.transforms import flip_batch, load_image, resize_center_crop, to_tensor
from infdiff.io import to_pil

__all__ = [
    "DataError",
    "UnreadableImageError",
    "UnreadableImageWarning",
    "UpsampledImageWarning",
    "build_dataset",
    "DATASETS",
    "DataKeyWarning",
    "DataSetEntry",
    "data_channels",
    "dataset_entry",
    "random_flip",
    "ShapesDataset",
    "ShapesSample",
    "render",
    "sample_params",
    "ImageFolderDataset",
    "LMDBDataset",
    "IDXDataset",
    "PDEBenchDataset",
    "load_image",
    "resize_center_crop",
    "to_tensor",
    "to_pil",
    "flip_batch",
]
