import math

import pytest
import torch
import torch.nn.functional as F

from infdiff.data import DataError, ShapesDataset, render, sample_params
from infdiff.data import shapes
from infdiff.data.shapes import Background, Shape, ShapesSample


def test_samples_are_deterministic_and_distinct():
    a, b = ShapesDataset(32, seed=3), ShapesDataset(32, seed=3)
    assert torch.equal(a[7], b[7])
    assert sample_params(7, seed=3) == sample_params(7, seed=3)
    assert not torch.equal(a[7], a[8])
    assert not torch.equal(a[7], ShapesDataset(32, seed=4)[7])
    assert not torch.equal(a[7], ShapesDataset(32, seed=3, split="test")[7])


def test_max_shapes_bounds_the_count_and_keeps_the_background():
    counts = {
        max_shapes: [len(sample_params(i, max_shapes=max_shapes).shapes) for i in range(60)] for max_shapes in (1, 3)
    }
    assert set(counts[1]) == {1} and set(counts[3]) == {1, 2, 3}
    for i in range(10):
        assert sample_params(i, max_shapes=1).background == sample_params(i).background
    assert ShapesDataset(8, max_shapes=1).params(4).shapes == sample_params(4, max_shapes=1).shapes
    with pytest.raises(DataError, match="max_shapes must be an integer >= 1"):
        sample_params(0, max_shapes=0)


def test_radius_range_rescales_the_same_draws_and_keeps_the_rest():
    low, high = 0.2, 0.32
    for i in range(20):
        default, larger = sample_params(i), sample_params(i, radius_range=(low, high))
        assert larger.background == default.background and len(larger.shapes) == len(default.shapes)
        for a, b in zip(default.shapes, larger.shapes):
            assert (a.kind, a.centre, a.ratio, a.angle, a.colour) == (b.kind, b.centre, b.ratio, b.angle, b.colour)
            assert low <= b.radius <= high
            assert (b.radius - low) / (high - low) == pytest.approx((a.radius - 0.12) / (0.3 - 0.12))
    assert ShapesDataset(8, radius_range=(low, high)).params(3) == sample_params(3, radius_range=(low, high))


@pytest.mark.parametrize("radius_range", [(0.3, 0.2), (0.0, 0.2), (0.1, 0.6), (0.1,), "big", (True, 0.3)])
def test_bad_radius_range_is_an_error(radius_range):
    with pytest.raises(DataError, match=r"radius_range must be two numbers \(a, b\) with 0.0 < a <= b <= 0.5"):
        ShapesDataset(8, radius_range=radius_range)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_range_and_length(channels):
    dataset = ShapesDataset(16, length=5, channels=channels)
    assert len(dataset) == 5 and len(list(dataset)) == 5
    for x in dataset:
        assert x.shape == (channels, 16, 16) and x.dtype == torch.float32
        assert float(x.min()) >= -1 and float(x.max()) <= 1
    with pytest.raises(IndexError):
        dataset[5]


@pytest.mark.parametrize("size", [8, 24, (12, 20)])
def test_rendering_nests_across_resolutions(size):
    h, w = (size, size) if isinstance(size, int) else size
    for index in range(4):
        params = sample_params(index)
        fine = render(params, (2 * h, 2 * w), supersample=2)
        coarse = render(params, (h, w), supersample=4)
        torch.testing.assert_close(F.avg_pool2d(fine[None], 2)[0], coarse, rtol=0, atol=1e-6)
        assert float((fine - coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)).abs().max()) > 0.01


def test_render_sample_gives_the_ground_truth_at_any_resolution():
    dataset = ShapesDataset(16, supersample=4)
    torch.testing.assert_close(
        F.avg_pool2d(dataset.render_sample(3, 64, supersample=1)[None], 4)[0], dataset[3], rtol=0, atol=1e-6
    )


def single_shape(kind, radius=0.25, ratio=0.0, angle=0.3, centre=(0.5, 0.5)):
    black = Background(colours=((0.0,), (0.0,)), angle=0.0, amplitude=0.0, frequency=1.0, wave_angle=0.0, phase=0.0)
    return ShapesSample(black, (Shape(kind, centre, radius, ratio, angle, (1.0,)),))


@pytest.mark.parametrize(
    "kind, ratio, area",
    [
        ("disc", 0.0, math.pi * 0.25**2),
        ("ring", 0.5, math.pi * 0.25**2 * 0.75),
        ("rectangle", 0.6, 4 * 0.25 * 0.25 * 0.6),
        ("triangle", 1.0, 3 * math.sqrt(3) / 4 * 0.25**2),
    ],
)
def test_pixel_values_are_cell_averages(kind, ratio, area):
    coverage = (render(single_shape(kind, ratio=ratio), 64, supersample=8) + 1) / 2
    assert float(coverage.mean()) == pytest.approx(area, abs=2e-3)
    edge_values = coverage[(coverage > 0.01) & (coverage < 0.99)]
    assert edge_values.numel() > 0  # anti-aliased boundary pixels


def test_coordinates_are_row_column_on_the_unit_square():
    coverage = (render(single_shape("disc", radius=0.2, centre=(0.25, 0.75)), 32, supersample=2)[0] + 1) / 2
    assert float(coverage[:16, 16:].sum()) > 0.95 * float(coverage.sum())


def test_shapes_stand_out_from_the_background():
    for index in range(50):
        params = sample_params(index, channels=1)
        assert 1 <= len(params.shapes) <= 3
        assert max(c[0] for c in params.background.colours) + params.background.amplitude < 0.5
        assert all(shape.colour[0] >= 0.7 and 0.12 <= shape.radius <= 0.3 for shape in params.shapes)


def test_rendering_in_bands_of_rows_equals_rendering_at_once(monkeypatch):
    """High resolutions are rendered a band of rows at a time to bound memory; the bands must tile exactly."""
    params = sample_params(5, max_shapes=3)
    whole = render(params, (24, 20), supersample=3)
    monkeypatch.setattr(shapes, "BAND_POINTS", 20 * 9 * 2 + 1)  # two rows of pixels per band, then a ragged last one
    assert torch.equal(render(params, (24, 20), supersample=3), whole)
    monkeypatch.setattr(shapes, "BAND_POINTS", 1)  # fewer points than one row: one row per band
    assert torch.equal(render(params, (24, 20), supersample=3), whole)


def test_items_are_the_unflipped_renderings_and_bad_arguments_are_rejected():
    dataset = ShapesDataset(16)
    assert all(torch.equal(dataset[0], dataset.render_sample(0)) for _ in range(5))
    with pytest.raises(DataError, match="channels"):
        ShapesDataset(16, channels=2)
    with pytest.raises(DataError, match="split"):
        ShapesDataset(16, split="val")
    with pytest.raises(DataError, match="supersample"):
        ShapesDataset(16, supersample=0)
