"""The ∞-Diff diffusion autoencoder as one module: the sparse encoder and the ∞-Diff decoder.

``forward(x_t, t, encoder_input)`` encodes the clean image's view ``encoder_input`` (a fresh
subset of its pixels, or the dense image) into ``z`` and predicts the diffusion target at the
pixels of ``x_t`` given ``z`` (Bond-Taylor & Willcocks 2024, §4), returning the prediction and
the per-example ``KL(q(z | x) ‖ N(0, I))`` for the loss to weight.  Keeping both networks in one
module lets DDP synchronise them in a single backward pass.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from infdiff.nn.archs import ARCHS
from infdiff.nn.decoder import SparseUNet
from infdiff.nn.encoder import Encoding, SparseEncoder, kl_to_standard_normal
from infdiff.nn.fields import Field
from infdiff.nn.uno import UNOEncoder

# What the networks call the arguments this builder takes under other names (for error messages).
_OWN_NAMES = {"resolution": "uno_res", "pool_size": "encoder_pool_size", "z_grid": "decoder_z_grid"}
_UNO_NAMES = set(inspect.signature(UNOEncoder).parameters) - {"in_channels", "resolution", "time_dim", "z_dim"}


def _in_builder_terms(error: ValueError) -> ValueError:
    """``error`` with a leading ``name=`` of a network argument renamed to this builder's key for it."""
    message = str(error)
    name = message.split("=", 1)[0]
    if name in _OWN_NAMES:
        return ValueError(_OWN_NAMES[name] + message[len(name) :])
    if name in _UNO_NAMES:
        return ValueError("uno." + message)
    return error


class DiffusionAutoencoder(nn.Module):
    """Encoder ``x ↦ z`` and decoder ``f(x_t, t, z)`` (module docstring)."""

    def __init__(self, encoder: SparseEncoder, decoder: SparseUNet):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    @property
    def channels(self) -> int:
        """Image channels the decoder produces."""
        return self.decoder.channels

    @property
    def z_dim(self) -> int:
        """Width of the code ``z``."""
        return self.encoder.z_dim

    def encode(self, x: Field, sample: Optional[bool] = None) -> Encoding:
        """The code of ``x`` (see :meth:`SparseEncoder.forward`)."""
        return self.encoder(x, sample=sample)

    def conditioned_on(self, z: torch.Tensor) -> Callable[[Field, torch.Tensor], Field]:
        """The decoder as ``model_fn(x_t, t)`` for the code ``z`` (what samplers call)."""
        return lambda x_t, t: self.decoder(x_t, t, z)

    def forward(self, x_t: Field, t: torch.Tensor, encoder_input: Field) -> Tuple[Field, Dict[str, torch.Tensor]]:
        encoding = self.encoder(encoder_input)
        return self.decoder(x_t, t, encoding.z), {"kl": kl_to_standard_normal(encoding)}


@ARCHS.register("sparse_autoencoder")
def sparse_autoencoder(
    channels: int,
    train_size,
    nf: int = 64,
    time_dim: int = 256,
    num_conv_blocks: int = 3,
    kernel_size: int = 7,
    mlp_mult: int = 2,
    knn_neighbours: int = 3,
    uno_res: int = 128,
    z_dim: int = 1024,
    stochastic: bool = False,
    encoder_pool_size: int = 1,
    decoder_z_grid: int = 0,
    uno: Optional[Mapping[str, Any]] = None,
    backend: str = "auto",
    neighbours: str = "table",
) -> DiffusionAutoencoder:
    """∞-Diff's autoencoder: :class:`SparseEncoder` and :class:`SparseUNet` sharing their sparse front.

    Both networks lift to ``nf`` channels, run ``num_conv_blocks`` sparse residual blocks with
    ``kernel_size``-tap kernels (learned at ``train_size``) and ``mlp_mult``-wide MLPs, and move
    to a ``uno_res``-side grid by ``knn_neighbours``-nearest-neighbour interpolation, where a
    U-Net of ``uno`` settings (:class:`~infdiff.nn.uno.UNO` arguments; its input width is its
    ``base_channels``) runs; the encoder keeps its contracting half without dropout and pools to
    ``encoder_pool_size²`` cells, the decoder adds ``z`` on a ``decoder_z_grid²`` map (0: FiLM only).
    ``backend`` names the sparse kernels (:data:`infdiff.ops.BACKENDS`, or ``auto``: compiled when they build),
    ``neighbours`` how they find a point's neighbours (:data:`infdiff.ops.NEIGHBOURS`).
    """
    uno = dict(uno or {})
    front = dict(
        channels=channels,
        train_size=train_size,
        nf=nf,
        num_conv_blocks=num_conv_blocks,
        kernel_size=kernel_size,
        mlp_mult=mlp_mult,
        knn_neighbours=knn_neighbours,
        uno_res=uno_res,
        uno_channels=uno.get("base_channels", 128),
        backend=backend,
        neighbours=neighbours,
    )
    try:
        encoder = SparseEncoder(
            z_dim=z_dim, stochastic=stochastic, pool_size=encoder_pool_size, uno=dict(uno, dropout=0.0), **front
        )
        decoder = SparseUNet(time_dim=time_dim, z_dim=z_dim, z_grid=decoder_z_grid, uno=uno, **front)
    except ValueError as error:
        raise _in_builder_terms(error) from error
    return DiffusionAutoencoder(encoder, decoder)
