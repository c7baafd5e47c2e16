"""Networks: sparse residual blocks, the coarse-grid U-Net, the ∞-Diff decoder/encoder, the latent MLP,
the score networks (FNO, CNO, U-Net) and the grid convolution they share."""

from infdiff.nn.archs import ARCHS
from infdiff.nn.cno import CNOScoreNet
from infdiff.nn.autoencoder import DiffusionAutoencoder, sparse_autoencoder
from infdiff.nn.decoder import SparseUNet
from infdiff.nn.embeddings import TimeEmbedding, timestep_embedding
from infdiff.nn.encoder import Encoding, SparseEncoder, kl_to_standard_normal
from infdiff.nn.film import FiLM
from infdiff.nn.fno import FNOScoreNet
from infdiff.nn.grid_conv import GridConv2d
from infdiff.nn.latent_mlp import LatentMLP
from infdiff.nn.sparse_block import MonteCarloConv, SparseResBlock
from infdiff.nn.spectral import FourierConv2d, SpectralConv2d, SpectralResample2d
from infdiff.nn.unet_score import UNetScoreNet
from infdiff.nn.uno import UNO, AttentionBlock, UNOEncoder

__all__ = [
    "ARCHS",
    "DiffusionAutoencoder",
    "sparse_autoencoder",
    "SparseUNet",
    "SparseEncoder",
    "Encoding",
    "kl_to_standard_normal",
    "SparseResBlock",
    "MonteCarloConv",
    "UNO",
    "UNOEncoder",
    "AttentionBlock",
    "LatentMLP",
    "FiLM",
    "FNOScoreNet",
    "CNOScoreNet",
    "UNetScoreNet",
    "GridConv2d",
    "TimeEmbedding",
    "timestep_embedding",
    "SpectralConv2d",
    "FourierConv2d",
    "SpectralResample2d",
]
