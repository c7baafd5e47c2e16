"""Latent diffusion network: the MLP with input skips of Diffusion Autoencoders.

DiffAE (Preechakul et al., CVPR 2022, the "latent DDIM" and its MLPSkipNet) denoises
semantic latents with an MLP of ``L`` linear layers; ∞-Diff (Bond-Taylor & Willcocks, 2024) uses it
to sample the latent ``z`` of its autoencoder.  With ``x`` the noisy latent ``z_t`` and ``c`` the
time embedding (sinusoid -> MLP):

    h_0     = x
    u_l     = [h_{l-1}, x]  if skip and l > 1 else h_{l-1}
    h_l     = Dropout(SiLU(LayerNorm((W_l u_l + b_l) * (1 + A_l SiLU(c) + a_l))))   for l < L
    output  = W_L u_L + b_L

i.e. every hidden layer is scaled by ``1 + cond`` before normalisation (DiffAE's ``condition_bias = 1``)
and, with ``skip``, sees the input ``z_t`` concatenated to its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infdiff.nn.archs import ARCHS
from infdiff.nn.embeddings import TimeEmbedding


class LatentMLPLayer(nn.Module):
    """Hidden layer ``Dropout(SiLU(LayerNorm(Linear(u) * (1 + Linear(SiLU(c))))))`` of
    :class:`LatentMLP`."""

    def __init__(self, in_dim: int, out_dim: int, cond_dim: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.cond = nn.Linear(cond_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.linear(u) * (1 + self.cond(F.silu(c)))
        return self.dropout(F.silu(self.norm(h)))


@ARCHS.register("latent_mlp")
class LatentMLP(nn.Module):
    """DiffAE's MLPSkipNet predicting from ``z_t (B, z_dim)`` and times ``t (B,)`` a ``(B, z_dim)``
    output (see the module docstring).

    Args:
        z_dim: latent width ``D``.
        hidden: width of the hidden layers.
        num_layers: linear layers in total, ``L >= 2`` (``L - 1`` hidden layers and the output layer).
        time_dim: width of the sinusoidal time embedding and of the time MLP's output ``c``.
        dropout: dropout after each hidden layer.
        skip: concatenate ``z_t`` to the input of every layer after the first.
    """

    def __init__(
        self,
        z_dim: int,
        hidden: int = 2048,
        num_layers: int = 10,
        time_dim: int = 64,
        dropout: float = 0.0,
        skip: bool = True,
    ):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers must be at least 2, got {num_layers}")
        if min(z_dim, hidden) < 1:
            raise ValueError(f"z_dim and hidden must be positive, got {z_dim}, {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.skip = skip
        self.time = TimeEmbedding(time_dim, time_dim)
        later_in = hidden + z_dim if skip else hidden
        self.layers = nn.ModuleList(
            LatentMLPLayer(z_dim if i == 0 else later_in, hidden, time_dim, dropout) for i in range(num_layers - 1)
        )
        self.out = nn.Linear(later_in, z_dim)

    def _with_input(self, h: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        return torch.cat((h, z_t), dim=-1) if self.skip else h

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.time(t)
        h = self.layers[0](z_t, c)
        for layer in self.layers[1:]:
            h = layer(self._with_input(h, z_t), c)
        return self.out(self._with_input(h, z_t))
