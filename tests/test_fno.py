"""The FNO score network runs natively at any resolution and on non-square grids, and is one operator."""

import math

import pytest
import torch
import torch.nn.functional as F

from infdiff.nn import ARCHS, FNOScoreNet
from infdiff.ops import grid_coords


def smooth_field(h, w, channels=1):
    """A smooth periodic field sampled at the cell centres of an ``h×w`` grid."""
    u, v = grid_coords((h, w), dtype=torch.float32).T.reshape(2, h, w)
    field = torch.sin(2 * math.pi * u) * torch.cos(2 * math.pi * v) + 0.5 * torch.cos(4 * math.pi * v)
    return field.expand(1, channels, h, w).clone()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FNOScoreNet(channels=1, width=16, modes=6, fourier_layers=3, time_dim=32).eval()


@pytest.mark.parametrize("size", [(28, 28), (56, 56), (28, 40), (12, 12)])
def test_it_runs_at_any_size_and_keeps_the_shape(net, size):
    x = torch.randn(2, 1, *size, dtype=torch.float32)
    out = net(x, torch.tensor([10.0, 900.0], dtype=torch.float32))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_it_is_resolution_consistent_on_a_smooth_input(net):
    """The output at 56², averaged over 2×2 cells, is the output at 28² (the cell averages of a smooth
    function are its values at the coarse centres up to O(h²))."""
    t = torch.tensor([300.0], dtype=torch.float32)
    with torch.no_grad():
        coarse = net(smooth_field(28, 28), t)
        fine = net(smooth_field(56, 56), t)
        other = net(smooth_field(28, 28).flip(-1).roll(5, -2), t)
    error = (F.avg_pool2d(fine, 2) - coarse).norm() / coarse.norm()
    assert float(error) < 0.01, float(error)  # measured 0.0018
    unrelated = (coarse - other).norm() / coarse.norm()
    assert float(unrelated) > 10 * float(error), "the check can tell different outputs apart"


def test_a_grid_too_coarse_for_its_modes_is_named(net):
    with pytest.raises(ValueError, match=r"modes \(6, 6\) needs grids of at least 12x12, got input grid 8x8"):
        net(torch.randn(1, 1, 8, 8, dtype=torch.float32), torch.tensor([1.0], dtype=torch.float32))


def test_it_is_registered_and_checks_its_settings():
    assert ARCHS["fno"] is FNOScoreNet
    with pytest.raises(ValueError, match=r"modes=0"):
        FNOScoreNet(channels=1, modes=0)
    with pytest.raises(ValueError, match=r"modes=12: a 8x8 training grid holds at most 4 Fourier modes per side"):
        FNOScoreNet(channels=1, modes=12, train_size=8)
