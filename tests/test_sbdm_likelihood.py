"""The probability-flow ODE likelihood, given the exact denoiser, is the data's exact log-density.

Data ``N(μ, Σ)`` on a 3×3 grid (and a two-mode mixture in 2-D) have exact denoisers
(:meth:`GaussianMixture.denoiser` with the prior's dense ``C_h``) and closed-form densities, so what
is left is the ODE solver's error, the cut-off ``t_min``, and the terminal density ``N(0, (α(1)² +
σ(1)²) C)`` in place of the true marginal; the SDEs are set so that the last is negligible
(``α(1) = e^{-10}``, ``σ_max = 1000``), except in the test of the defaults.
"""

import math

import pytest
import torch
from test_prior_log_prob import dense_covariance
from torch.distributions import MultivariateNormal

from infdiff.diffusion import PRIORS, CombinedPrior, GaussianMollifier, LaplacianPrior, WhiteNoise
from infdiff.sbdm import VESDE, VPSDE, SubVPSDE, bits_per_dim, bits_per_dim_from_log_likelihood, log_likelihood
from infdiff.sbdm.toy import COLOURED_ROOT_2D, DensePrior, GaussianMixture, two_mode_mixture

SIZE = (3, 3)
D = 9
_g = torch.Generator().manual_seed(0)
_A = torch.randn(D, D, generator=_g, dtype=torch.float64) / 3
DATA = GaussianMixture(
    torch.ones(1, dtype=torch.float64),
    0.3 * torch.randn(1, D, generator=_g, dtype=torch.float64),
    (_A @ _A.T + 0.2 * torch.eye(D, dtype=torch.float64))[None],
)
POINTS = DATA.sample(4, torch.Generator().manual_seed(1))


def grid_denoiser(data, process, size=SIZE):
    """The exact ``ŷ_0`` of ``data`` (vectors of the grid's pixels) under ``process`` on fields ``(B, 1, H, W)``."""
    flat = data.denoiser(process, dense_covariance(process.prior, size))
    return lambda x, t: flat(x.reshape(len(x), -1), t).reshape(x.shape)


def on_grid(points):
    return points.reshape(len(points), 1, *SIZE)


def exact_log_likelihood(process, points=POINTS, **options):
    return log_likelihood(grid_denoiser(DATA, process), process, on_grid(points), exact=True, **options)


WHITE, LAPLACIAN = WhiteNoise(train_size=SIZE), LaplacianPrior(s=2.0, train_size=SIZE)
COMBINED = CombinedPrior(s=2.0, modes=2, seed=0, weight=1.0, train_size=SIZE)


@pytest.mark.parametrize(
    "process, tolerance",
    [
        (VPSDE(WHITE, beta_max=40.0), 3e-3),
        (VPSDE(LAPLACIAN, beta_max=40.0), 3e-3),
        (VPSDE(COMBINED, beta_max=40.0), 3e-3),
        (SubVPSDE(LAPLACIAN, beta_max=40.0), 3e-3),
        (VESDE(COMBINED, sigma_min=0.01, sigma_max=1000.0), 1e-2),
    ],
    ids=["vp-white", "vp-laplacian", "vp-combined", "subvp-laplacian", "ve-combined"],
)
def test_the_ode_log_likelihood_with_the_exact_divergence_is_the_data_density(process, tolerance):
    """Measured: within 3e-4 nats of ``log p_{t_min}`` (the data smoothed to the cut-off) under the VP SDEs
    and 6e-3 under the VE SDE, and within 2.4e-3 / 5.6e-3 of ``log p_0``."""
    measured = exact_log_likelihood(process)
    assert measured.shape == (4,) and measured.dtype == torch.float64
    assert float((measured - DATA.log_prob(POINTS)).abs().max()) < tolerance
    if isinstance(process, VESDE):
        return
    alpha, sigma = process.levels(process.t_min)
    noise = sigma**2 * dense_covariance(process.prior, SIZE)
    smoothed = MultivariateNormal(alpha * DATA.means[0], alpha**2 * DATA.covariances[0] + noise)
    assert float((measured - smoothed.log_prob(POINTS)).abs().max()) < 1e-3


def test_under_the_default_vp_sde_the_terminal_approximation_costs_a_few_hundredths_of_a_nat():
    """``α(1) = e^{-5}``: the terminal density neglects ``α(1) μ`` and ``α(1)² Σ`` (measured 0.02 nats of 9 dims)."""
    error = exact_log_likelihood(VPSDE(LAPLACIAN)) - DATA.log_prob(POINTS)
    assert float(error.abs().max()) < 0.05


@pytest.mark.parametrize("estimator", ["rademacher", "gaussian"])
def test_hutchinsons_estimate_averages_to_the_exact_divergences(estimator):
    """512 probes per point in one batch (each row of the batch has its own fixed probe): their mean is
    held to 4 standard errors of the exact-divergence ODE value, which matches the data density."""
    process = VPSDE(LAPLACIAN, beta_max=40.0)
    copies = 512
    points = POINTS[:2].repeat(copies, 1)
    estimates = log_likelihood(
        grid_denoiser(DATA, process),
        process,
        on_grid(points),
        generator=torch.Generator().manual_seed(3),
        estimator=estimator,
    ).reshape(copies, 2)
    exact = exact_log_likelihood(process, POINTS[:2])
    error = (estimates.mean(0) - exact).abs()
    standard_error = estimates.std(0) / math.sqrt(copies)
    assert bool((error < 4 * standard_error).all()), (error, standard_error)
    assert bool((estimates.std(0) > 0).all()), "each row has its own probe"


@pytest.mark.parametrize("root", [torch.eye(2, dtype=torch.float64), COLOURED_ROOT_2D], ids=["white", "coloured"])
def test_a_gaussian_mixtures_log_density_is_recovered_in_two_dimensions(root):
    """Measured: within 7e-4 nats of the mixture smoothed to ``t_min`` (itself a mixture), and within 5.3e-3
    of the mixture's density (the cut-off matters most in the tail, at (-1, -1))."""
    mixture = two_mode_mixture()
    process = VPSDE(DensePrior(root), beta_max=40.0)
    points = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.0, 0.5], [-1.0, -1.0]], dtype=torch.float64)
    measured = log_likelihood(mixture.denoiser(process, root @ root), process, points, exact=True)
    alpha, sigma = process.levels(process.t_min)
    noise = sigma**2 * root @ root
    smoothed = GaussianMixture(mixture.weights, alpha * mixture.means, alpha**2 * mixture.covariances + noise)
    assert float((measured - smoothed.log_prob(points)).abs().max()) < 2e-3
    assert float((measured - mixture.log_prob(points)).abs().max()) < 1e-2


def test_bits_per_dim_of_data_distributed_as_the_prior():
    """Data ``N(0, C)`` under a VP SDE stay ``N(0, C)``: the flow is 0, so ``log p_0 = log p_1`` is the prior's
    density exactly, and ``bpd = -log p / (D ln 2) + 7`` (float32 fields, two channels, 4×4)."""
    prior = LaplacianPrior(s=2.0, train_size=4)
    process = VPSDE(prior)
    x0 = prior.sample((3, 2, 4, 4), torch.Generator().manual_seed(4))

    def denoise(x, t):
        alpha, _ = process.levels(float(t[0]))
        return alpha * x  # E[x_0 | x_t] when the data are the noise's law

    measured = bits_per_dim(denoise, process, x0, generator=torch.Generator().manual_seed(5), progress=True)
    expected = -prior.log_prob(x0) / (32 * math.log(2)) + 7
    torch.testing.assert_close(measured, expected, rtol=0, atol=1e-5)  # float32 fields: measured 2.5e-6
    uniform_on_the_cube = torch.tensor([-32 * math.log(2)], dtype=torch.float64)  # uniform on [-1, 1]^32
    assert float(bits_per_dim_from_log_likelihood(uniform_on_the_cube, 32)) == pytest.approx(8.0)


def test_what_has_no_likelihood_here_is_refused_before_the_solve():
    x0 = on_grid(POINTS)
    with pytest.raises(ValueError, match=r"estimator='hutch': expected one of \['gaussian', 'rademacher'\]"):
        log_likelihood(lambda x, t: x, VPSDE(WHITE), x0, estimator="hutch")
    with pytest.raises(ValueError, match=r"use a process without mollified_states"):
        log_likelihood(lambda x, t: x, VPSDE(GaussianMollifier(1.0, SIZE), mollified_states=True), x0)
    with pytest.raises(ValueError, match=r"prior 'fno'.*has no density"):
        log_likelihood(lambda x, t: x, VPSDE(PRIORS["fno"](modes=2, train_size=SIZE)), x0)
