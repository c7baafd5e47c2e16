import pytest
import torch

from infdiff.diffusion.schedules import Schedule, beta_schedule, respace


@pytest.fixture(scope="module")
def cosine():
    return Schedule.named("cosine", 1000)


def test_cosine_alphas_cumprod_decrease_inside_unit_interval(cosine):
    abar = cosine.alphas_cumprod
    assert abar.dtype == torch.float64
    assert (abar > 0).all() and (abar < 1).all()
    assert (abar.diff() < 0).all()
    assert beta_schedule("cosine", 1000).max() <= 0.999


def test_linear_betas_scale_with_number_of_steps():
    b1000, b500 = beta_schedule("linear", 1000), beta_schedule("linear", 500)
    assert b1000[0].item() == pytest.approx(1e-4) and b1000[-1].item() == pytest.approx(0.02)
    assert b500[0].item() == pytest.approx(2e-4) and b500[-1].item() == pytest.approx(0.04)


@pytest.mark.parametrize("name, beta", [("constant", 0.008), ("const0.008", 0.008), ("const0.02", 0.02)])
def test_constant_betas(name, beta):
    betas = beta_schedule(name, 50)
    assert torch.equal(betas, torch.full((50,), beta, dtype=torch.float64))


@pytest.mark.parametrize("name", ["quadratic", "const", "constx", "const1.5"])
def test_unknown_schedule_names_are_rejected(name):
    with pytest.raises(ValueError, match="linear|beta"):
        beta_schedule(name, 10)


def test_from_betas_derives_the_original_betas(cosine):
    betas = beta_schedule("cosine", 1000)
    torch.testing.assert_close(cosine.betas, betas, rtol=1e-9, atol=1e-12)
    assert torch.equal(cosine.timesteps, torch.arange(1000))


@pytest.mark.parametrize("spec", [1000, "1000", "ddim1000"])
def test_respacing_to_all_steps_is_the_identity(cosine, spec):
    same = respace(cosine, spec)
    assert torch.equal(same.timesteps, cosine.timesteps)
    assert torch.equal(same.alphas_cumprod, cosine.alphas_cumprod)


@pytest.mark.parametrize("spec, count", [(10, 10), (50, 50), ("ddim50", 50), ("ddim10", 10), ("10,15,20", 45)])
def test_respacing_keeps_alphas_cumprod_at_kept_steps(cosine, spec, count):
    short = respace(cosine, spec)
    assert short.num_steps == count
    assert short.timesteps[0] == 0
    torch.testing.assert_close(short.alphas_cumprod, cosine.alphas_cumprod[short.timesteps], rtol=0, atol=0)
    torch.testing.assert_close(torch.cumprod(1 - short.betas, 0), short.alphas_cumprod, rtol=1e-9, atol=0)


def test_respacing_patterns(cosine):
    assert respace(cosine, "ddim50").timesteps.tolist() == list(range(0, 1000, 20))
    assert respace(cosine, 10).timesteps.tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    sections = respace(cosine, "2,3").timesteps.tolist()
    assert sections == [0, 499, 500, 750, 999]


def test_respacing_composes_on_original_ids(cosine):
    twice = respace(respace(cosine, "ddim100"), 10)
    assert twice.timesteps.tolist() == [0, 110, 220, 330, 440, 550, 660, 770, 880, 990]
    torch.testing.assert_close(twice.alphas_cumprod, cosine.alphas_cumprod[twice.timesteps], rtol=0, atol=0)


@pytest.mark.parametrize("spec", [0, 1001, -3, 2.5, "", "abc", "10,x", "ddim", "ddim999", "1000,1000", None])
def test_bad_respacing_specs_are_rejected(cosine, spec):
    with pytest.raises(ValueError):
        respace(cosine, spec)


def test_bad_respacing_spec_message_says_what_is_allowed(cosine):
    with pytest.raises(ValueError, match="ddimN"):
        respace(cosine, "every other")


def test_alphas_cumprod_at_uses_original_ids(cosine):
    short = respace(cosine, "ddim50")
    t = torch.tensor([980, 0, 500])
    torch.testing.assert_close(short.alphas_cumprod_at(t), cosine.alphas_cumprod[t], rtol=0, atol=0)
    with pytest.raises(ValueError, match="not in this schedule"):
        short.alphas_cumprod_at(torch.tensor([10, 20]))


def test_invalid_schedules_are_rejected():
    with pytest.raises(ValueError):
        Schedule.from_betas(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError):
        Schedule(torch.tensor([0, 2, 1]), torch.tensor([0.9, 0.8, 0.7]))
    with pytest.raises(ValueError):
        Schedule(torch.tensor([0, 1]), torch.tensor([0.8, 0.9]))


def test_linear_schedule_with_too_few_steps_is_rejected():
    with pytest.raises(ValueError, match="steps > 20"):
        beta_schedule("linear", 20)
