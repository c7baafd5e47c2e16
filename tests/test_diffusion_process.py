import dataclasses

import pytest
import torch

from infdiff.diffusion.mollifier import GaussianMollifier
from infdiff.diffusion.process import MollifiedDiffusion
from infdiff.diffusion.schedules import Schedule


@pytest.fixture(scope="module")
def process():
    return MollifiedDiffusion(Schedule.named("linear", 1000), GaussianMollifier(1.0, 8))


def mollifier_matrix(mollifier, n):
    """The (n*n, n*n) matrix of the mollifier on an n x n grid (row p is T applied to pixel p)."""
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    return mollifier(basis).reshape(n * n, n * n)


def test_q_sample_moments_match_the_mollified_process(process):
    gen = torch.Generator().manual_seed(0)
    n, batch, t = 8, 4000, 300
    x0 = torch.rand(1, 1, n, n, dtype=torch.float64, generator=gen) * 2 - 1
    x_t = process.q_sample(x0.expand(batch, -1, -1, -1), torch.full((batch,), t), generator=gen)
    abar = process.schedule.alphas_cumprod[t]
    t_matrix = mollifier_matrix(process.mollifier, n)
    noise_variance = t_matrix.pow(2).sum(1).reshape(n, n)
    expected_variance = (1 - abar) * noise_variance
    variance = x_t.var(0)[0]
    torch.testing.assert_close(variance, expected_variance, rtol=0.12, atol=0)
    assert (variance / expected_variance).mean().item() == pytest.approx(1.0, abs=0.03)
    expected_mean = abar.sqrt() * process.mollify(x0)[0, 0]
    standard_error = (expected_variance / batch).sqrt()
    assert ((x_t.mean(0)[0] - expected_mean).abs() < 5 * standard_error).all()


def test_q_sample_with_given_noise_is_linear_in_mollified_parts(process):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=gen)
    noise = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=gen)
    t = torch.tensor([0, 500, 999])
    abar = process.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = abar.sqrt() * process.mollify(x0) + (1 - abar).sqrt() * process.mollify(noise)
    torch.testing.assert_close(process.q_sample(x0, t, noise), expected, rtol=0, atol=1e-12)


def mean_noise_variance(process, size, samples=1000, scaled=True):
    gen = torch.Generator().manual_seed(2)
    shape = (samples, 1, size, size)
    if scaled:
        noise = process.sample_noise(shape, generator=gen, dtype=torch.float64)
    else:
        noise = process.mollify(torch.randn(shape, generator=gen, dtype=torch.float64))
    return noise.pow(2).mean().item()


def expected_mean_noise_variance(process, size):
    """Mean over pixels of diag(T T^T) times the white-noise variance: scale^2 * mean_k g(k)^2."""
    gain = process.mollifier.gain((size, size), dtype=torch.float64)
    return process.noise_scale((size, size)) ** 2 * gain.pow(2).mean().item()


def test_noise_variance_per_pixel_is_the_same_at_every_resolution():
    process = MollifiedDiffusion(Schedule.named("cosine", 10), GaussianMollifier(1.0, 16))
    assert process.noise_scale((1, 1, 32, 32)) == 2.0
    at_train = mean_noise_variance(process, 16)
    at_double = mean_noise_variance(process, 32)
    assert at_train == pytest.approx(expected_mean_noise_variance(process, 16), rel=0.04)
    assert at_double == pytest.approx(expected_mean_noise_variance(process, 32), rel=0.04)
    assert at_double / at_train == pytest.approx(1.0, abs=0.05)
    unscaled = mean_noise_variance(process, 32, scaled=False)
    assert unscaled / at_train == pytest.approx(0.25, abs=0.02)


def test_noise_like_keeps_shape_dtype_and_is_reproducible(process):
    x = torch.zeros(2, 3, 8, 12, dtype=torch.float64)
    first = process.noise_like(x, torch.Generator().manual_seed(3))
    second = process.noise_like(x, torch.Generator().manual_seed(3))
    assert first.shape == x.shape and first.dtype == torch.float64
    assert torch.equal(first, second)


def test_vector_data_uses_a_plain_ddpm():
    process = MollifiedDiffusion(Schedule.named("constant", 100))
    assert process.train_size is None and process.noise_scale((4, 7)) == 1.0
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(4, 7, dtype=torch.float64, generator=gen)
    noise = torch.randn(4, 7, dtype=torch.float64, generator=gen)
    t = torch.tensor([0, 10, 50, 99])
    abar = process.schedule.alphas_cumprod[t].unsqueeze(1)
    torch.testing.assert_close(process.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)


def test_bad_inputs_are_rejected(process):
    with pytest.raises(ValueError, match="noise shape"):
        process.q_sample(torch.zeros(2, 1, 8, 8), torch.tensor([1, 2]), torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match="differs from the mollifier"):
        MollifiedDiffusion(process.schedule, GaussianMollifier(1.0, 8), train_size=16)
    assert MollifiedDiffusion(process.schedule, GaussianMollifier(1.0, 8), train_size=(8, 8)).train_size == (8, 8)


def test_noise_grid_draws_one_noise_function_at_every_resolution(process):
    """With a shared ``noise_grid`` a coarse draw is the cell average of the fine draw of the same seed."""
    nested = dataclasses.replace(process, noise_grid=(32, 24))
    fine = nested.white_noise((2, 3, 32, 24), torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(fine, process.white_noise((2, 3, 32, 24), torch.Generator().manual_seed(5),
                                                          dtype=torch.float64))
    for size in ((16, 12), (8, 8), (4, 6)):
        coarse = nested.white_noise((2, 3, *size), torch.Generator().manual_seed(5), dtype=torch.float64)
        torch.testing.assert_close(coarse, torch.nn.functional.adaptive_avg_pool2d(fine, size))
    torch.testing.assert_close(nested.sample_noise((2, 3, 8, 8), torch.Generator().manual_seed(5),
                                                   dtype=torch.float64),
                               process.mollify(torch.nn.functional.adaptive_avg_pool2d(fine, (8, 8))))


def test_noise_grid_keeps_the_per_pixel_distribution():
    base = MollifiedDiffusion(Schedule.named("cosine", 10), GaussianMollifier(0.0), train_size=8)
    nested = dataclasses.replace(base, noise_grid=64)
    gen = torch.Generator().manual_seed(6)
    for size in (8, 16, 32):
        noise = nested.white_noise((400, 1, size, size), gen, dtype=torch.float64)
        assert noise.std().item() == pytest.approx(base.noise_scale((size, size)), rel=0.02)
        assert noise.mean().item() == pytest.approx(0.0, abs=0.02 * base.noise_scale((size, size)))
        pixels = noise.flatten(1)
        neighbours = (pixels[:, :-1] * pixels[:, 1:]).mean() / pixels.var()
        assert abs(neighbours.item()) < 0.02  # still white: averaging disjoint blocks adds no correlation


def test_noise_grid_must_be_a_multiple_of_the_sampled_grid(process):
    nested = dataclasses.replace(process, noise_grid=96)
    with pytest.raises(ValueError, match="integer multiple of the sampled grid"):
        nested.white_noise((1, 3, 64, 64))
    with pytest.raises(ValueError, match="needs a training grid"):
        MollifiedDiffusion(process.schedule, noise_grid=32)
