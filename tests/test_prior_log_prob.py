"""Each prior's log-density is that of the discrete Gaussian ``N(0, C_h)`` its draws follow on any grid.

``C_h`` is built densely from the prior itself (``r² C^{1/2} C^{1/2}`` applied to the pixel basis, ``r`` the
grid's white-noise standard deviation) and handed to torch's ``MultivariateNormal``: on the training
grid 6×5, on grids finer (12×10) and coarser (4×3) than it, with two channels.
"""

import pytest
import torch
from torch.distributions import MultivariateNormal

from infdiff.diffusion import PRIORS, BesselPrior, CombinedPrior, GaussianMollifier, LaplacianPrior, WhiteNoise
from infdiff.sbdm.toy import DensePrior, GaussianMixture

TRAIN = (6, 5)
PRIORS_WITH_DENSITIES = [
    WhiteNoise(train_size=TRAIN),
    LaplacianPrior(s=2.0, train_size=TRAIN),
    BesselPrior(s=1.5, tau=5.0, train_size=TRAIN),
    CombinedPrior(s=2.0, modes=3, seed=1, weight=0.7, train_size=TRAIN),
    GaussianMollifier(std=0.5, train_size=TRAIN),  # std=1 at 12×10: g² down to 1e-28, no dense reference
]


def dense_covariance(prior, size):
    """``C_h`` ``(D, D)`` (float64) of ``prior`` on a grid of ``size``: its draws' covariance, pixel by pixel."""
    h, w = size
    basis = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    return prior.noise_scale(size) ** 2 * prior.apply_cov(basis).reshape(h * w, h * w)


@pytest.mark.parametrize("size", [TRAIN, (12, 10), (4, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("prior", PRIORS_WITH_DENSITIES, ids=lambda p: type(p).__name__)
def test_the_log_density_is_the_dense_gaussians(prior, size):
    covariance = dense_covariance(prior, size)
    torch.testing.assert_close(covariance, covariance.T)
    reference = MultivariateNormal(torch.zeros(len(covariance), dtype=torch.float64), covariance)
    x = prior.sample((3, 2, *size), torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = reference.log_prob(x.flatten(2)).sum(1)
    measured = prior.log_prob(x)
    assert measured.shape == (3,) and measured.dtype == torch.float64
    torch.testing.assert_close(measured, expected, rtol=1e-9, atol=1e-7)


def test_vector_priors_have_the_standard_and_the_dense_densities():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    standard = MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(WhiteNoise().log_prob(x), standard.log_prob(x))
    torch.testing.assert_close(GaussianMollifier(std=0.0).log_prob(x), standard.log_prob(x))
    root = torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)
    dense = MultivariateNormal(torch.zeros(3, dtype=torch.float64), root @ root)
    torch.testing.assert_close(DensePrior(root).log_prob(x), dense.log_prob(x))


def test_a_gaussian_mixtures_log_density_is_the_log_of_its_weighted_sum():
    mixture = GaussianMixture(
        torch.tensor([0.25, 0.75], dtype=torch.float64),
        torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64),
        torch.stack([torch.eye(2, dtype=torch.float64), torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=torch.float64)]),
    )
    x = torch.tensor([[0.1, 0.2], [1.5, -0.5]], dtype=torch.float64)
    parts = [MultivariateNormal(m, c).log_prob(x).exp() for m, c in zip(mixture.means, mixture.covariances)]
    torch.testing.assert_close(mixture.log_prob(x), (0.25 * parts[0] + 0.75 * parts[1]).log())


def test_the_finite_rank_random_spectral_prior_has_no_density():
    prior = PRIORS["fno"](modes=3, train_size=TRAIN)
    with pytest.raises(ValueError, match=r"RandomSpectralPrior \(prior 'fno', modes=3\) has finite rank 3²"):
        prior.log_prob(torch.zeros(1, 1, *TRAIN))
