"""Every SDE sampler, given the exact denoiser of Gaussian data, reproduces the data's mean and covariance.

Data ``x_0 ~ N(μ, Σ)`` in three dimensions and coloured noise ``N(0, C)`` with a dense ``Q = C^{1/2}``:
``x_t`` is Gaussian, so ``E[x_0 | x_t] = μ + α Σ (α² Σ + σ² C)^{-1} (x_t - α μ)`` exactly and the
only errors left are the sampler's discretisation and the sample count's.
"""

import pytest
import torch

from infdiff.diffusion import SAMPLERS
from infdiff.sbdm import VESDE, VPSDE, SubVPSDE
from infdiff.sbdm.toy import COLOURED_ROOT_2D, DensePrior, GaussianMixture, two_mode_mixture

MEAN = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
A = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.2, 0.4]], dtype=torch.float64)
COVARIANCE = A @ A.T
ROOT = torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)  # symmetric Q
COUNT = 4000


def exact_denoiser(process):
    noise_cov = ROOT @ ROOT

    def denoise(x, t):
        alpha, sigma = process.levels(float(t[0]))
        gain = alpha * COVARIANCE @ torch.linalg.inv(alpha**2 * COVARIANCE + sigma**2 * noise_cov)
        return MEAN + (x - alpha * MEAN) @ gain.T

    return denoise


def draw(process, sampler, steps, seed=0, **options):
    g = torch.Generator().manual_seed(seed)
    x_T = process.terminal_state((COUNT, 3), g, dtype=torch.float64)
    return SAMPLERS[sampler](exact_denoiser(process), x_T, process, steps, generator=g, **options)


def assert_matches_the_data(samples, mean_tolerance=0.06, covariance_tolerance=0.08):
    assert torch.isfinite(samples).all()
    mean_error = float((samples.mean(0) - MEAN).abs().max())
    covariance_error = float(
        torch.linalg.matrix_norm(torch.cov(samples.T) - COVARIANCE) / torch.linalg.matrix_norm(COVARIANCE)
    )
    assert mean_error < mean_tolerance and covariance_error < covariance_tolerance, (mean_error, covariance_error)


@pytest.mark.parametrize(
    "sampler, steps, options",
    [
        ("euler_maruyama", 200, {}),
        ("predictor_corrector", 200, {"snr": 0.1}),
        ("ode_heun", 60, {}),
        ("ode_adaptive", 0, {"rtol": 1e-5, "atol": 1e-5}),
    ],
)
def test_each_sampler_reproduces_a_gaussian_under_the_vp_sde_with_coloured_noise(sampler, steps, options):
    assert_matches_the_data(draw(VPSDE(DensePrior(ROOT)), sampler, steps or 1, **options))


@pytest.mark.parametrize(
    "process", [SubVPSDE(DensePrior(ROOT)), VESDE(DensePrior(ROOT), sigma_min=0.01, sigma_max=20.0)]
)
def test_the_sub_vp_and_ve_sdes_reproduce_it_too(process):
    assert_matches_the_data(draw(process, "euler_maruyama", 400))
    assert_matches_the_data(draw(process, "ode_heun", 80))


def test_the_marginals_follow_the_sdes():
    """``α`` and ``σ`` solve the SDEs' moment equations: ``dα/dt = -β α / 2`` and, for the VP SDE,
    ``d(σ²)/dt = -β σ² + g²``; for the VE SDE ``d(σ²)/dt = g²``."""
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-5
    for process in (VPSDE(), SubVPSDE()):
        d_alpha = (process.alpha(t + h) - process.alpha(t - h)) / (2 * h)
        torch.testing.assert_close(d_alpha, -0.5 * process.beta(t) * process.alpha(t))
        d_var = (process.sigma(t + h) ** 2 - process.sigma(t - h) ** 2) / (2 * h)
        torch.testing.assert_close(d_var, -process.beta(t) * process.sigma(t) ** 2 + process.diffusion(t) ** 2)
    ve = VESDE()
    d_var = (ve.sigma(t + h) ** 2 - ve.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(d_var, ve.diffusion(t) ** 2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        VPSDE().beta(torch.tensor(0.5, dtype=torch.float64)), torch.tensor(10.05, dtype=torch.float64)
    )


def test_bad_sde_settings_are_named():
    with pytest.raises(ValueError, match=r"beta_min=5.0, beta_max=1.0"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match=r"sigma_min=0.0"):
        VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match=r"snr=0.0"):
        draw(VPSDE(DensePrior(ROOT)), "predictor_corrector", 2, snr=0.0)


def test_a_config_names_the_sdes_and_the_spectral_priors():
    from ml_collections import ConfigDict

    from infdiff.diffusion import LaplacianPrior
    from infdiff.pipeline.build import build_process

    config = ConfigDict(
        dict(
            data=dict(img_size=28),
            prior=dict(name="laplacian", s=2.0),
            process=dict(name="vp_sde", beta_min=0.1, beta_max=20.0),
        )
    )
    process = build_process(config)
    assert isinstance(process, VPSDE) and isinstance(process.prior, LaplacianPrior)
    assert process.prior.train_size == (28, 28)
    x = process.terminal_state((2, 1, 56, 56), torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 56, 56), "drawn natively at twice the training size"


MIXTURE = two_mode_mixture()
ROOT_2D = COLOURED_ROOT_2D


@pytest.mark.parametrize("sampler, steps", [("euler_maruyama", 300), ("ode_heun", 80)])
@pytest.mark.parametrize("root", [torch.eye(2, dtype=torch.float64), ROOT_2D], ids=["white", "coloured"])
def test_the_samplers_reproduce_a_gaussian_mixtures_moments_with_its_exact_denoiser(sampler, steps, root):
    process = VPSDE(DensePrior(root))
    g = torch.Generator().manual_seed(1)
    x_T = process.terminal_state((COUNT, 2), g, dtype=torch.float64)
    samples = SAMPLERS[sampler](MIXTURE.denoiser(process, root @ root), x_T, process, steps, generator=g)
    assert float((samples.mean(0) - MIXTURE.mean()).abs().max()) < 0.08
    relative = torch.linalg.matrix_norm(torch.cov(samples.T) - MIXTURE.covariance()) / torch.linalg.matrix_norm(
        MIXTURE.covariance()
    )
    assert float(relative) < 0.06
    left = float((samples[:, 0] < -0.25).double().mean())
    assert left == pytest.approx(0.3, abs=0.03), "the modes keep their weights"


def test_the_denoising_loss_is_smallest_at_the_exact_denoiser():
    """``E‖ŷ_0(x_t) - x_0‖²`` is minimised by the posterior mean: shrinking, stretching or shifting the
    exact ``ŷ_0`` raises it (common random numbers, every time of a grid)."""
    process = VPSDE(DensePrior(ROOT_2D))
    g = torch.Generator().manual_seed(2)
    x0 = MIXTURE.sample(20000, g)
    denoise = MIXTURE.denoiser(process, ROOT_2D @ ROOT_2D)
    for t in (0.05, 0.3, 0.7):
        alpha, sigma = process.levels(t)
        x_t = alpha * x0 + sigma * process.prior.sample_like(x0, g)
        exact = denoise(x_t, torch.full((len(x0),), t))
        best = float((exact - x0).square().sum(1).mean())
        for changed in (0.95 * exact, 1.05 * exact, exact + 0.05):
            assert best < float((changed - x0).square().sum(1).mean()), t


def test_a_mixture_with_bad_parts_is_refused():
    with pytest.raises(ValueError, match=r"must sum to 1"):
        GaussianMixture(torch.tensor([0.5, 0.6], dtype=torch.float64), MIXTURE.means, MIXTURE.covariances)
    with pytest.raises(ValueError, match=r"must be \(K,\), \(K, D\) and \(K, D, D\)"):
        GaussianMixture(MIXTURE.weights, MIXTURE.means, MIXTURE.covariances[:, :1])


def test_the_toy_script_writes_its_figure_and_numbers(tmp_path):
    import json

    from test_pipeline import script

    script("experiments/sbdm_toy.py").main(["--out_dir", str(tmp_path), "--samples", "400"])
    numbers = json.loads((tmp_path / "sbdm_toy.json").read_text())
    assert set(numbers["cells"]) == {
        "white/euler_maruyama",
        "white/ode_heun",
        "coloured/euler_maruyama",
        "coloured/ode_heun",
    }
    assert (tmp_path / "sbdm_toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
