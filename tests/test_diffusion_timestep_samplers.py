import pytest
import torch

from infdiff.diffusion.timestep_samplers import LossAwareTimestepSampler, UniformTimestepSampler


def test_uniform_sampler_covers_all_steps_with_unit_weights():
    sampler = UniformTimestepSampler(50)
    t, weights = sampler.sample(5000, "cpu", torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() == 0 and t.max() == 49
    assert torch.equal(weights, torch.ones(5000))
    again, _ = sampler.sample(5000, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def warmed_up_sampler(loss_of_step, num_steps=20, history=10):
    sampler = LossAwareTimestepSampler(num_steps, history)
    steps = torch.arange(num_steps).repeat(history)
    sampler.update(steps, loss_of_step(steps.double()))
    return sampler


def test_loss_aware_sampler_is_uniform_until_every_step_has_its_history():
    sampler = LossAwareTimestepSampler(20)
    sampler.update(torch.arange(20).repeat(9), torch.ones(180))
    assert not sampler.warmed_up
    torch.testing.assert_close(sampler.probabilities(), torch.full((20,), 0.05, dtype=torch.float64))
    sampler.update(torch.arange(20), torch.ones(20))
    assert sampler.warmed_up


def test_loss_aware_probabilities_follow_root_mean_square_loss():
    sampler = warmed_up_sampler(lambda t: 1 + t)
    rms = 1 + torch.arange(20, dtype=torch.float64)
    expected = 0.999 * rms / rms.sum() + 0.001 / 20
    torch.testing.assert_close(sampler.probabilities(), expected, rtol=1e-12, atol=0)


def test_loss_aware_sampler_concentrates_on_high_loss_steps_with_unbiased_weights():
    sampler = warmed_up_sampler(lambda t: torch.where(t >= 15, 10.0, 1.0))
    t, weights = sampler.sample(20000, "cpu", torch.Generator().manual_seed(1))
    high = (t >= 15).double().mean().item()
    assert high == pytest.approx(50 / 65, abs=0.02)
    assert weights.mean().item() == pytest.approx(1.0, abs=0.03)
    assert weights[t >= 15].max() < 1 < weights[t < 15].min()


def test_only_the_most_recent_losses_count():
    sampler = LossAwareTimestepSampler(2, history=3)
    sampler.update(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([100.0, 100.0, 100.0, 1.0, 1.0, 1.0]))
    sampler.update(torch.tensor([0, 0, 0]), torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(sampler.probabilities(), torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="num_steps"):
        UniformTimestepSampler(0)
    with pytest.raises(ValueError, match="history"):
        LossAwareTimestepSampler(10, history=0)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        LossAwareTimestepSampler(10).update(torch.tensor([1, 2]), torch.ones(3))


def test_loss_aware_state_round_trip_resumes_identical_probabilities():
    a = LossAwareTimestepSampler(5, history=2)
    for _ in range(3):
        a.update(torch.arange(5), torch.arange(5, dtype=torch.float64) + 1)
    b = LossAwareTimestepSampler(5, history=2)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.probabilities(), b.probabilities())
    assert b.warmed_up
