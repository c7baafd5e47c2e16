"""Diffusion in function space: noise priors, forward processes, targets, losses and samplers.

The shared protocols every model family plugs into (:class:`NoisePrior`, :class:`DiffusionProcess`,
losses called as ``loss(model, batch, generator)``, samplers as plain functions of a denoiser and a
process) and ∞-Diff's discrete mollified DDPM as their first implementation.  Each kind has one
registry: :data:`PRIORS`, :data:`PROCESSES`, :data:`TARGETS`, :data:`TIME_DISTRIBUTIONS`,
:data:`LOSSES`, :data:`SAMPLERS`.
"""

from infdiff.diffusion.dct import dct2, idct2
from infdiff.diffusion.losses import LOSSES, AutoencoderLoss, DiffusionLoss, denoising_loss
from infdiff.diffusion.mollifier import GaussianMollifier
from infdiff.diffusion.posterior import posterior_mean_variance, posterior_variance
from infdiff.diffusion.priors import PRIORS, NoisePrior, WhiteNoise
from infdiff.diffusion.process import PROCESSES, DiffusionProcess, DiscreteDDPM
from infdiff.diffusion.samplers import SAMPLERS, ddim_invert, sample_ddim, sample_ddpm
from infdiff.diffusion.schedules import Schedule, beta_schedule, respace
from infdiff.diffusion.spectral_priors import (
    BesselPrior,
    CombinedPrior,
    LaplacianPrior,
    RandomSpectralPrior,
    SpectralPrior,
)
from infdiff.diffusion.targets import TARGETS, Target, get_target, make_denoiser, noise_from_clean
from infdiff.diffusion.timesteps import (
    TIME_DISTRIBUTIONS,
    LossAwareTimesteps,
    TimeDistribution,
    UniformTimes,
    UniformTimesteps,
)

__all__ = [
    "AutoencoderLoss",
    "BesselPrior",
    "CombinedPrior",
    "LaplacianPrior",
    "RandomSpectralPrior",
    "SpectralPrior",
    "DiffusionLoss",
    "DiffusionProcess",
    "DiscreteDDPM",
    "GaussianMollifier",
    "LOSSES",
    "LossAwareTimesteps",
    "NoisePrior",
    "PRIORS",
    "PROCESSES",
    "SAMPLERS",
    "Schedule",
    "TARGETS",
    "TIME_DISTRIBUTIONS",
    "Target",
    "TimeDistribution",
    "UniformTimes",
    "UniformTimesteps",
    "WhiteNoise",
    "beta_schedule",
    "dct2",
    "ddim_invert",
    "denoising_loss",
    "get_target",
    "idct2",
    "make_denoiser",
    "noise_from_clean",
    "posterior_mean_variance",
    "posterior_variance",
    "respace",
    "sample_ddim",
    "sample_ddpm",
]
