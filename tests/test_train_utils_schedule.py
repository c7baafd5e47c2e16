import math
import pickle

import pytest
import torch

from infdiff.train.loop import make_optimizer
from infdiff.train.schedule import GradientGuard, decay_factor, lr_lambda, should_skip_step, warmup_factor
from infdiff.train.settings import OptimizerSettings


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
    assert guard.skipped == 2
    assert not guard.record(1.0)
    assert guard.skipped == 2
    restored = GradientGuard(clip_norm=1.0, skip_threshold=100.0)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == {"skipped": 2}


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


@pytest.mark.parametrize("weight_decay, fused", [(0.0, True), (0.04, False)])
def test_make_optimizer_builds_the_optimiser_its_settings_describe(weight_decay, fused):
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))
    settings = OptimizerSettings(
        learning_rate=3e-3, adam_beta1=0.8, adam_beta2=0.95, weight_decay=weight_decay, fused=fused
    )
    optimizer = make_optimizer(model, settings)
    assert type(optimizer) is (torch.optim.AdamW if weight_decay else torch.optim.Adam)
    (group,) = optimizer.param_groups
    assert (group["lr"], group["betas"], group["weight_decay"], group["fused"]) == (
        3e-3,
        (0.8, 0.95),
        weight_decay,
        fused,
    )
    assert group["params"] == list(model.parameters())


def test_optimizer_settings_reject_a_decay_fraction_outside_zero_to_one():
    with pytest.raises(ValueError, match=r"optimizer.decay_fraction=1.5: expected a fraction of train.max_steps"):
        OptimizerSettings(decay_fraction=1.5)
    assert OptimizerSettings(gradient_skip=True, gradient_skip_threshold=7.0).skip_threshold == 7.0
    assert OptimizerSettings(gradient_skip_threshold=7.0).skip_threshold is None
