import math
import pickle

import pytest
import torch
from ml_collections import ConfigDict

from infdiff.train.loop import make_optimizer
from infdiff.train.schedule import GradientGuard, decay_factor, lr_lambda, should_skip_step, warmup_factor


def test_warmup_is_linear_then_constant():
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [warmup_factor(step, 0) for step in range(3)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_factor(0, -1)


def test_decay_is_constant_then_linear_towards_zero():
    assert [decay_factor(step, 6, 4) for step in range(6)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [decay_factor(step, 3, 0) for step in range(3)] == [1.0, 1.0, 1.0]
    assert [decay_factor(step, 2, 2) for step in range(2)] == [1.0, 0.5]
    for bad in (-1, 7):
        with pytest.raises(ValueError, match="decay_steps"):
            decay_factor(0, 6, bad)


def test_lr_lambda_drives_lambda_lr_and_pickles():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup_steps=2, max_steps=5, decay_steps=2))
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.5, 1.0, 1.0, 1.0, 0.5]
    assert pickle.loads(pickle.dumps(lr_lambda(2, 5, 2)))(4) == 0.5
    scheduler.load_state_dict(scheduler.state_dict())
    with pytest.raises(ValueError, match="decay_steps"):
        lr_lambda(0, 5, 6)


@pytest.mark.parametrize(
    "norm, threshold, nonfinite, skip",
    [
        (1.0, None, True, False),
        (1e9, None, True, False),
        (math.inf, None, True, True),
        (math.nan, None, True, True),
        (-math.inf, 10.0, True, True),
        (math.nan, None, False, False),
        (10.0, 10.0, True, False),
        (10.5, 10.0, True, True),
    ],
)
def test_skip_decision(norm, threshold, nonfinite, skip):
    assert should_skip_step(norm, threshold, nonfinite) is skip


def _linear_with_grad(value):
    layer = torch.nn.Linear(2, 2, bias=False)
    layer.weight.grad = torch.full((2, 2), value)
    return layer


def test_guard_clips_and_reports_norm_before_clipping():
    layer = _linear_with_grad(3.0)
    norm, skip = GradientGuard(clip_norm=1.0).clip_and_check(layer.parameters())
    assert norm == pytest.approx(6.0) and not skip
    assert layer.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_guard_without_clip_norm_leaves_gradients():
    layer = _linear_with_grad(3.0)
    GradientGuard().clip_and_check(layer.parameters())
    assert torch.equal(layer.weight.grad, torch.full((2, 2), 3.0))


def test_guard_counts_skips_and_round_trips_state():
    guard = GradientGuard(clip_norm=1.0, skip_threshold=100.0)
    assert guard.clip_and_check(_linear_with_grad(100.0).parameters())[1]
    assert guard.clip_and_check(_linear_with_grad(float("nan")).parameters())[1]
    assert (guard.skipped, guard.consecutive_skipped) == (2, 2)
    assert not guard.record(1.0)
    assert (guard.skipped, guard.consecutive_skipped) == (2, 0)
    restored = GradientGuard(clip_norm=1.0, skip_threshold=100.0)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == {"skipped": 2, "consecutive_skipped": 0}


def test_guard_accepts_a_custom_clip_function():
    seen = []

    def clip_fn(parameters, max_norm):
        seen.append(max_norm)
        return torch.tensor(math.inf)

    assert GradientGuard(clip_norm=0.5).clip_and_check([], clip_fn) == (math.inf, True)
    assert seen == [0.5]


def test_invalid_guard_settings_raise():
    with pytest.raises(ValueError, match="skip_threshold"):
        GradientGuard(skip_threshold=0.0)


@pytest.mark.parametrize("weight_decay", [0.0, 0.04])
def test_fused_adam_takes_the_looped_adams_steps(weight_decay):
    def run(fused):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))
        opt = ConfigDict(dict(learning_rate=1e-2, adam_beta1=0.9, adam_beta2=0.99, weight_decay=weight_decay,
                              fused=fused))
        initial = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
        optimizer = make_optimizer(model, opt)
        assert optimizer.defaults["fused"] is fused
        assert isinstance(optimizer, torch.optim.AdamW if weight_decay else torch.optim.Adam)
        for step in range(5):
            x = torch.randn(11, 5, generator=torch.Generator().manual_seed(step))
            model(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        final = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        assert (final - initial).abs().max() > 1e-3
        return final

    torch.testing.assert_close(run(True), run(False), rtol=1e-5, atol=1e-6)
