import pytest
import torch

from infdiff.diffusion import TIME_DISTRIBUTIONS, DiscreteDDPM, LossAwareTimesteps, UniformTimes, UniformTimesteps
from infdiff.diffusion.timesteps import step_times, time_steps


def test_steps_and_times_convert_both_ways():
    steps = torch.arange(1000)
    times = step_times(steps, 1000)
    assert times[0].item() == pytest.approx(1e-3) and times[-1].item() == 1.0
    assert torch.equal(time_steps(times, 1000), steps)


def test_uniform_distribution_covers_all_steps_with_unit_weights():
    distribution = UniformTimesteps(50)
    t, weights = distribution.sample(5000, torch.Generator().manual_seed(0))
    steps = time_steps(t, 50)
    assert t.dtype == torch.float32 and steps.min() == 0 and steps.max() == 49
    assert torch.equal(weights, torch.ones(5000))
    again, _ = distribution.sample(5000, torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def warmed_up(loss_of_step, num_steps=20, history=10):
    distribution = LossAwareTimesteps(num_steps, history)
    steps = torch.arange(num_steps).repeat(history)
    distribution.update(step_times(steps, num_steps), loss_of_step(steps.double()))
    return distribution


def test_loss_aware_distribution_is_uniform_until_every_step_has_its_history():
    distribution = LossAwareTimesteps(20)
    distribution.update(step_times(torch.arange(20).repeat(9), 20), torch.ones(180))
    assert not distribution.warmed_up
    torch.testing.assert_close(distribution.probabilities(), torch.full((20,), 0.05, dtype=torch.float64))
    distribution.update(step_times(torch.arange(20), 20), torch.ones(20))
    assert distribution.warmed_up


def test_loss_aware_probabilities_follow_root_mean_square_loss():
    distribution = warmed_up(lambda t: 1 + t)
    rms = 1 + torch.arange(20, dtype=torch.float64)
    expected = 0.999 * rms / rms.sum() + 0.001 / 20
    torch.testing.assert_close(distribution.probabilities(), expected, rtol=1e-12, atol=0)


def test_loss_aware_distribution_concentrates_on_high_loss_steps_with_unbiased_weights():
    distribution = warmed_up(lambda t: torch.where(t >= 15, 10.0, 1.0))
    t, weights = distribution.sample(20000, torch.Generator().manual_seed(1))
    steps = time_steps(t, 20)
    high = (steps >= 15).double().mean().item()
    assert high == pytest.approx(50 / 65, abs=0.02)
    assert weights.mean().item() == pytest.approx(1.0, abs=0.03)
    assert weights[steps >= 15].max() < 1 < weights[steps < 15].min()


def test_only_the_most_recent_losses_count():
    distribution = LossAwareTimesteps(2, history=3)
    distribution.update(
        step_times(torch.tensor([0, 0, 0, 1, 1, 1]), 2), torch.tensor([100.0, 100.0, 100.0, 1.0, 1.0, 1.0])
    )
    distribution.update(step_times(torch.tensor([0, 0, 0]), 2), torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(distribution.probabilities(), torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_continuous_uniform_times_fill_their_interval():
    t, weights = UniformTimes(0.01).sample(10000, torch.Generator().manual_seed(2))
    assert 0.01 <= t.min() < 0.02 and 0.99 < t.max() <= 1.0 and torch.equal(weights, torch.ones(10000))
    assert t.mean().item() == pytest.approx(0.505, abs=0.01)


def test_the_registry_builds_each_distribution_for_its_process():
    discrete = DiscreteDDPM.named("linear", 30)
    assert isinstance(TIME_DISTRIBUTIONS["uniform"](discrete), UniformTimesteps)
    assert TIME_DISTRIBUTIONS["loss-second-moment"](discrete).num_steps == 30

    class Continuous:
        num_steps, t_min = None, 0.05

    assert isinstance(TIME_DISTRIBUTIONS["uniform"](Continuous()), UniformTimes)
    with pytest.raises(ValueError, match="needs a discrete process"):
        TIME_DISTRIBUTIONS["loss-second-moment"](Continuous())


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="num_steps"):
        UniformTimesteps(0)
    with pytest.raises(ValueError, match="history"):
        LossAwareTimesteps(10, history=0)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        LossAwareTimesteps(10).update(torch.tensor([0.1, 0.2]), torch.ones(3))
    with pytest.raises(ValueError, match="t_min"):
        UniformTimes(1.0)


def test_loss_aware_state_round_trip_resumes_identical_probabilities():
    a = LossAwareTimesteps(5, history=2)
    for _ in range(3):
        a.update(step_times(torch.arange(5), 5), torch.arange(5, dtype=torch.float64) + 1)
    b = LossAwareTimesteps(5, history=2)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.probabilities(), b.probabilities())
    assert b.warmed_up
