import pytest
import torch
from torch import nn

from infdiff.train.ema import EMA, unwrap_model


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.register_buffer("count", torch.zeros(()))


def _fill(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
        model.count.fill_(value)


class _Wrapper(nn.Module):
    """Stands in for DDP / accelerate: the wrapped model is its only child, as ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_ema_copy_is_frozen_eval_and_independent():
    net = _Net()
    net.linear.weight.grad = torch.ones_like(net.linear.weight)
    ema = EMA(net)
    assert not ema.model.training
    assert all(not p.requires_grad and p.grad is None for p in ema.model.parameters())
    _fill(net, 5.0)
    assert not torch.equal(ema.model.linear.weight, net.linear.weight)


def test_update_math_is_exact():
    net = _Net()
    _fill(net, 1.0)
    ema = EMA(net, decay=0.75, update_every=1)
    _fill(net, 3.0)
    assert ema.update(net, step=1)
    # 0.75 * 1 + 0.25 * 3 = 1.5; then 0.75 * 1.5 + 0.25 * 3 = 1.875
    assert torch.equal(ema.model.linear.weight, torch.full((1, 2), 1.5))
    ema.update(net, step=2)
    assert torch.equal(ema.model.linear.bias, torch.full((1,), 1.875))
    assert ema.model.count.item() == 3.0  # buffers are copied, not averaged


def test_update_every_is_respected():
    net = _Net()
    _fill(net, 0.0)
    ema = EMA(net, decay=0.5, update_every=10)
    _fill(net, 8.0)
    assert [ema.update(net, step) for step in range(1, 21)].count(True) == 2
    assert torch.equal(ema.model.linear.bias, torch.full((1,), 6.0))  # 0 -> 4 -> 6


def test_wrapped_model_is_unwrapped():
    net = _Net()
    _fill(net, 1.0)
    wrapped = _Wrapper(_Wrapper(net))
    assert unwrap_model(wrapped) is net
    ema = EMA(wrapped, decay=0.5, update_every=1)
    assert isinstance(ema.model, _Net)
    _fill(net, 3.0)
    ema.update(wrapped, step=1)
    assert torch.equal(ema.model.linear.weight, torch.full((1, 2), 2.0))


def test_model_that_merely_names_a_submodule_module_is_not_unwrapped():
    with_parameter = _Wrapper(nn.Linear(2, 2))
    with_parameter.scale = nn.Parameter(torch.ones(()))
    with_second_child = _Wrapper(nn.Linear(2, 2))
    with_second_child.head = nn.Linear(2, 1)
    assert unwrap_model(with_parameter) is with_parameter
    assert unwrap_model(with_second_child) is with_second_child


def test_state_dict_round_trip():
    net = _Net()
    ema = EMA(net, decay=0.5, update_every=1)
    _fill(net, 7.0)
    ema.update(net, step=1)
    restored = EMA(_Net())
    restored.load_state_dict(ema.state_dict())
    for a, b in zip(ema.model.state_dict().values(), restored.model.state_dict().values()):
        assert torch.equal(a, b)


def test_mismatched_model_is_a_clear_error():
    ema = EMA(_Net(), update_every=1)
    with pytest.raises(ValueError, match="missing"):
        ema.update(nn.Linear(2, 1), step=1)


def test_invalid_hyperparameters_raise():
    with pytest.raises(ValueError, match="decay"):
        EMA(_Net(), decay=1.5)
