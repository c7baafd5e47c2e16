import numpy as np
import pytest
import torch
from PIL import Image

from infdiff.train.images import (
    make_grid,
    make_resolution_comparison,
    save_image_grid,
    save_images,
    save_resolution_comparison,
    to_uint8,
)


def _two_rgb_images():
    """Image 0 black (-1), image 1 white (+1), both 2x3 pixels."""
    return torch.stack([torch.full((3, 2, 3), -1.0), torch.full((3, 2, 3), 1.0)])


def test_to_uint8_maps_range_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, float("nan")]).view(1, 1, 1, 6)
    assert to_uint8(x).ravel().tolist() == [0, 0, 128, 255, 255, 128]


def test_grid_of_two_known_images_has_exact_pixels():
    grid = make_grid(_two_rgb_images(), nrow=2, padding=1)
    assert grid.shape == (1 + 2 + 1, 1 + 3 + 1 + 3 + 1, 3) and grid.dtype == np.uint8
    expected = np.zeros((4, 9), np.uint8)
    expected[1:3, 5:8] = 255
    for channel in range(3):
        assert np.array_equal(grid[..., channel], expected)


def test_grid_default_is_square_and_fills_rows_first():
    images = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 1, 2, 2)
    grid = make_grid(images, padding=0)
    assert grid.shape == (4, 6, 1)  # ceil(sqrt(5)) = 3 per row, 2 rows
    assert grid[0, 2, 0] == to_uint8(images)[1, 0, 0, 0] and grid[2, 0, 0] == to_uint8(images)[3, 0, 0, 0]


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        make_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"got \(3, 4, 4\)"):
        make_grid(torch.zeros(3, 4, 4))


def test_saved_grid_is_a_readable_png(tmp_path):
    path = save_image_grid(_two_rgb_images(), tmp_path / "samples" / "grid.png", nrow=2, padding=1)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), make_grid(_two_rgb_images(), nrow=2, padding=1))


def test_single_channel_is_saved_greyscale(tmp_path):
    path = save_image_grid(torch.zeros(4, 1, 5, 5), tmp_path / "grey.png")
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (2 + 2 * 7, 2 + 2 * 7)


def test_save_images_writes_numbered_files(tmp_path):
    paths = save_images(_two_rgb_images(), tmp_path, prefix="sample_", start_index=10)
    assert [p.name for p in paths] == ["sample_00010.png", "sample_00011.png"]
    with Image.open(paths[1]) as image:
        assert image.size == (3, 2) and np.asarray(image).min() == 255


def test_resolution_comparison_lines_up_samples(tmp_path):
    low = torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).view(1, 1, 2, 2).expand(2, 3, 2, 2)
    high = torch.zeros(2, 3, 4, 4)
    image = make_resolution_comparison([(None, low), (None, high)], padding=1)
    assert image.size == (1 + 2 * 5, 1 + 2 * 5)
    pixels = np.asarray(image)[..., 0]
    expected_low = np.array([[0, 0, 255, 255], [0, 0, 255, 255], [255, 255, 0, 0], [255, 255, 0, 0]])
    assert np.array_equal(pixels[1:5, 1:5], expected_low) and np.array_equal(pixels[1:5, 6:10], expected_low)
    assert (pixels[6:10, 1:10:5] == 128).all()


def test_resolution_comparison_labels_add_a_column(tmp_path):
    rows = [("32x32", torch.zeros(3, 1, 8, 8)), ("64x64", torch.zeros(3, 1, 16, 16))]
    path = save_resolution_comparison(rows, tmp_path / "compare.png")
    with Image.open(path) as image:
        assert image.mode == "L"
        assert image.height == 2 + 2 * 18 and image.width > 2 + 3 * 18
        label_column = np.asarray(image)[:, : image.width - (2 + 3 * 18)]
        assert label_column.max() > 200  # the (anti-aliased) text is drawn


def test_resolution_comparison_needs_matching_batches():
    with pytest.raises(ValueError, match="same number of images"):
        make_resolution_comparison([("a", torch.zeros(2, 3, 4, 4)), ("b", torch.zeros(3, 3, 8, 8))])
