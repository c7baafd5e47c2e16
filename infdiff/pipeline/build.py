"""Turn configs into objects, so scripts, tests and benchmarks build them alike."""

from __future__ import annotations

from ml_collections import ConfigDict

from infdiff.data import build_dataset
from infdiff.diffusion import (GaussianMollifier, LossAwareTimestepSampler, MollifiedDiffusion, Schedule,
                               UniformTimestepSampler)
from infdiff.nn import LatentMLP, SparseEncoder, SparseUNet

TIMESTEP_SAMPLERS = {
    "uniform": UniformTimestepSampler,
    "loss-second-moment": LossAwareTimestepSampler,
}


def build_process(config: ConfigDict) -> MollifiedDiffusion:
    """The mollified forward process of stage 1 (``config.diffusion``, ``config.data.img_size``)."""
    d = config.diffusion
    mollifier = GaussianMollifier(d.gaussian_filter_std, config.data.img_size if d.gaussian_filter_std > 0 else None)
    return MollifiedDiffusion(Schedule.named(d.noise_schedule, d.steps), mollifier)


def build_latent_process(config: ConfigDict) -> MollifiedDiffusion:
    """The plain DDPM of stage 2 over latent vectors (identity mollifier)."""
    return MollifiedDiffusion(Schedule.named(config.diffusion.noise_schedule, config.diffusion.steps))


def build_timestep_sampler(config: ConfigDict):
    """``config.diffusion.schedule_sampler`` over ``config.diffusion.steps`` steps."""
    name = config.diffusion.schedule_sampler
    if name not in TIMESTEP_SAMPLERS:
        raise ValueError(f"diffusion.schedule_sampler={name!r}; expected one of {sorted(TIMESTEP_SAMPLERS)}")
    return TIMESTEP_SAMPLERS[name](config.diffusion.steps)


def _uno_kwargs(m: ConfigDict) -> dict:
    return dict(base_channels=m.uno_base_channels, channel_mults=tuple(m.uno_mults),
                blocks_per_level=tuple(m.uno_blocks_per_level), attn_resolutions=tuple(m.uno_attn_resolutions),
                dropout=m.uno_dropout, dropout_from_resolution=m.uno_dropout_from_resolution,
                conv_type=m.uno_conv_type, spectral_modes=m.uno_spectral_modes or None, num_groups=m.uno_num_groups,
                append_coordinates=m.uno_append_coordinates or m.uno_conv_type == "spectral")


def _sparse_front_kwargs(config: ConfigDict) -> dict:
    m = config.model
    return dict(channels=config.data.channels, train_size=config.data.img_size, nf=m.nf,
                num_conv_blocks=m.num_conv_blocks, kernel_size=m.kernel_size, mlp_mult=m.mlp_mult,
                knn_neighbours=m.knn_neighbours, uno_res=m.uno_res, uno_channels=m.uno_base_channels)


def build_decoder(config: ConfigDict) -> SparseUNet:
    """The ∞-Diff decoder (``config.model``), conditioned on ``z`` of ``model.z_dim``."""
    uno = _uno_kwargs(config.model)
    return SparseUNet(time_dim=config.model.time_emb_dim, z_dim=config.model.z_dim, uno=uno,
                      z_grid=config.model.decoder_z_grid, **_sparse_front_kwargs(config))


def build_encoder(config: ConfigDict) -> SparseEncoder:
    """The sparse encoder (``config.model``); no dropout in the encoder's U-Net half."""
    uno = dict(_uno_kwargs(config.model), dropout=0.0)
    return SparseEncoder(z_dim=config.model.z_dim, stochastic=config.model.stochastic_encoding, uno=uno,
                         pool_size=config.model.encoder_pool_size, **_sparse_front_kwargs(config))


def build_latent_model(config: ConfigDict, z_dim: int) -> LatentMLP:
    """DiffAE's MLP with skips over latents of width ``z_dim`` (``config.model`` of a latent config)."""
    m = config.model
    return LatentMLP(z_dim, hidden=m.hidden, num_layers=m.num_layers, time_dim=m.time_emb_dim, dropout=m.dropout,
                     skip=m.skip)


def build_unflipped_dataset(config: ConfigDict):
    """``config.data``'s data set without its own random flips.

    Training flips whole batches in the main process with the global RNG (restored on resume);
    a data set flipping on its own, in loader workers or while building pictures, would make a
    resumed run diverge.  Encoding and reconstruction want the images as stored anyway.
    """
    data = ConfigDict(config.data.to_dict())
    data.random_flip = False
    return build_dataset(data)
