"""Diffusion on mollified states (∞-Diff): schedules, mollifier, forward process, losses, samplers."""

from infdiff.diffusion.dct import dct2, idct2
from infdiff.diffusion.losses import subset_diffusion_loss
from infdiff.diffusion.mollifier import GaussianMollifier
from infdiff.diffusion.parameterization import TARGETS, Target, get_target, make_denoiser, noise_from_y0
from infdiff.diffusion.posterior import posterior_mean_variance
from infdiff.diffusion.process import MollifiedDiffusion
from infdiff.diffusion.samplers import ddim_invert, sample_ddim, sample_ddpm
from infdiff.diffusion.schedules import Schedule, beta_schedule, respace
from infdiff.diffusion.timestep_samplers import LossAwareTimestepSampler, TimestepSampler, UniformTimestepSampler

__all__ = [
    "GaussianMollifier",
    "LossAwareTimestepSampler",
    "MollifiedDiffusion",
    "Schedule",
    "TARGETS",
    "Target",
    "TimestepSampler",
    "UniformTimestepSampler",
    "beta_schedule",
    "dct2",
    "ddim_invert",
    "get_target",
    "idct2",
    "make_denoiser",
    "noise_from_y0",
    "posterior_mean_variance",
    "respace",
    "sample_ddim",
    "sample_ddpm",
    "subset_diffusion_loss",
]
