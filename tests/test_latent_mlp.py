"""DiffAE MLPSkipNet latent denoiser."""

import pytest
import torch

from infdiff.nn.latent_mlp import LatentMLP


def test_output_shape():
    torch.manual_seed(0)
    model = LatentMLP(12, hidden=32, num_layers=4, time_dim=16)
    assert model(torch.randn(3, 12), torch.tensor([0.0, 10.0, 999.0])).shape == (3, 12)


@pytest.mark.parametrize("skip", [True, False])
def test_skip_concatenates_input(skip):
    torch.manual_seed(0)
    model = LatentMLP(12, hidden=32, num_layers=4, time_dim=16, skip=skip)
    later_in = 32 + 12 if skip else 32
    assert model.layers[0].linear.in_features == 12
    assert all(layer.linear.in_features == later_in for layer in model.layers[1:])
    assert model.out.in_features == later_in
    inputs = []
    model.out.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    z_t = torch.randn(3, 12)
    model(z_t, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(inputs[0][:, 32:], z_t) == skip


def test_time_conditions_the_output():
    torch.manual_seed(0)
    model = LatentMLP(12, hidden=32, num_layers=3, time_dim=16)
    z_t = torch.randn(2, 12)
    early = model(z_t, torch.tensor([1.0, 1.0]))
    late = model(z_t, torch.tensor([500.0, 500.0]))
    assert not torch.allclose(early, late)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = LatentMLP(12, hidden=32, num_layers=5, time_dim=16, dropout=0.1)
    model(torch.randn(4, 12), torch.rand(4) * 1000).square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_invalid_layer_count():
    with pytest.raises(ValueError, match="num_layers"):
        LatentMLP(12, num_layers=1)
