"""Score-based diffusion in function space (the Multilevel Diffusion / CNO family): SDE processes and
their samplers, registered in :data:`infdiff.diffusion.PROCESSES` and :data:`~infdiff.diffusion.SAMPLERS`, and
likelihoods (bits per dimension) through the probability-flow ODE (:mod:`infdiff.sbdm.likelihood`).

Priors are shared with every family (:mod:`infdiff.diffusion.spectral_priors`); losses and targets too
(the denoising loss with the ``epsilon`` target is the preconditioned score matching of ``η = Q z``).
"""

from infdiff.sbdm.likelihood import bits_per_dim, bits_per_dim_from_log_likelihood, log_likelihood
from infdiff.sbdm.samplers import (
    preconditioned_score,
    sample_euler_maruyama,
    sample_ode_adaptive,
    sample_ode_heun,
    sample_predictor_corrector,
)
from infdiff.sbdm.sde import VESDE, VPSDE, SubVPSDE
from infdiff.sbdm.toy import DensePrior, GaussianMixture

__all__ = [
    "DensePrior",
    "GaussianMixture",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "bits_per_dim_from_log_likelihood",
    "log_likelihood",
    "preconditioned_score",
    "sample_euler_maruyama",
    "sample_ode_adaptive",
    "sample_ode_heun",
    "sample_predictor_corrector",
]
