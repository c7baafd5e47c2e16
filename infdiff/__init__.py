"""infdiff: infinite-resolution (function-space) diffusion models in PyTorch."""

__version__ = "0.1.0"
