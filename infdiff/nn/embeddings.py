"""Sinusoidal embeddings of the diffusion time.

The positional encoding of Vaswani et al. (2017, "Attention is all you need", Sec. 3.5), used for
diffusion timesteps by Ho et al. (2020, DDPM) and Dhariwal & Nichol (2021, ADM).  For ``dim = 2h``

    e(t)_i     = cos(t * w_i),
    e(t)_{h+i} = sin(t * w_i),        w_i = max_period^(-i / h),   i = 0, ..., h - 1,

so the frequencies run geometrically from 1 down to ``1 / max_period``.  An odd ``dim`` gets one
trailing zero.  The frequencies suit timesteps on the scale ``0 ... 1000``; callers with
continuous times in ``[0, 1]`` should scale them first.
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import nn


def _check_embedding_args(dim: int, max_period: float) -> None:
    if dim < 2:
        raise ValueError(f"timestep embedding needs dim >= 2, got {dim}")
    if max_period <= 1:
        raise ValueError(f"max_period must exceed 1, got {max_period}")


def timestep_embedding(t: Union[torch.Tensor, float], dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(*t.shape, dim)`` of times ``t`` (any shape, int or float).

    The first ``dim // 2`` features are cosines and the next ``dim // 2`` sines, so ``t = 0`` maps to
    ``(1, ..., 1, 0, ..., 0)``.  Computed in float32 (float64 if ``t`` is float64).
    """
    _check_embedding_args(dim, max_period)
    t = torch.as_tensor(t)
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    exponents = torch.arange(half, device=t.device, dtype=dtype) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    args = t.to(dtype)[..., None] * freqs
    embedding = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


class TimeEmbedding(nn.Module):
    """Learned time embedding ``Linear(GELU(Linear(e(t))))`` with ``e`` the sinusoidal embedding.

    ``dim`` is the width of ``e(t)``; the output, of width ``hidden`` (``self.out_dim``), is what the
    networks' FiLM layers take as ``t_emb``.
    """

    def __init__(self, dim: int, hidden: int, max_period: float = 10000.0):
        super().__init__()
        _check_embedding_args(dim, max_period)
        if hidden < 1:
            raise ValueError(f"hidden must be positive, got {hidden}")
        self.dim = dim
        self.max_period = max_period
        self.out_dim = hidden
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed times ``t`` of shape ``(B,)`` into ``(B, hidden)``."""
        embedding = timestep_embedding(t, self.dim, self.max_period)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))
