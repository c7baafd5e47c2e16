import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from infdiff.data import (
    DataError,
    ImageFolderDataset,
    UnreadableImageWarning,
    UpsampledImageWarning,
    load_image,
    resize_center_crop,
    to_tensor,
)


def write_image(path, array, **save_args):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_args)
    return path


def gradient(height, width):
    """An RGB image whose left and right halves differ (so flips are visible)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack(
        [cols * 255 // max(width - 1, 1), rows * 255 // max(height - 1, 1), np.full_like(rows, 60)], axis=-1
    ).astype(np.uint8)


def test_discovery_is_recursive_sorted_and_filters_by_extension(tmp_path):
    for name in ("b/deep/x.png", "a.JPG", "c.webp", "b/y.Jpeg", "d.bmp", "e.gif", "f.tif", "g.TIFF"):
        write_image(tmp_path / name, gradient(6, 6))
    (tmp_path / "notes.txt").write_text("not an image")
    write_image(tmp_path / ".hidden.png", gradient(6, 6))
    dataset = ImageFolderDataset(tmp_path, 4)
    assert dataset.files == ["a.JPG", "b/deep/x.png", "b/y.Jpeg", "c.webp", "d.bmp", "e.gif", "f.tif", "g.TIFF"]
    assert len(dataset) == 8
    for x in dataset:
        assert x.shape == (3, 4, 4) and x.dtype == torch.float32
        assert float(x.min()) >= -1 and float(x.max()) <= 1


@pytest.mark.parametrize(
    "name, save_args",
    [
        ("img.png", {}),
        ("img.jpg", {"quality": 95, "subsampling": 0}),
        ("img.webp", {"lossless": True}),
    ],
)
def test_formats_decode_to_the_source_pixels(tmp_path, name, save_args):
    array = gradient(8, 8)
    write_image(tmp_path / name, array, **save_args)
    x = ImageFolderDataset(tmp_path, 8)[0]
    expected = torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1
    tolerance = 0.1 if name.endswith("jpg") else 1e-6
    assert float((x - expected).abs().max()) <= tolerance


def test_greyscale_and_channel_counts(tmp_path):
    write_image(tmp_path / "grey.png", gradient(8, 8)[:, :, 0])
    rgb = ImageFolderDataset(tmp_path, 8, channels=3)[0]
    assert rgb.shape == (3, 8, 8)
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
    grey = ImageFolderDataset(tmp_path, 8, channels=1)[0]
    assert grey.shape == (1, 8, 8) and torch.equal(grey[0], rgb[0])


def test_non_square_images_are_resized_and_centre_cropped(tmp_path):
    tall = np.zeros((60, 20, 3), dtype=np.uint8)
    tall[20:40] = (255, 255, 0)
    write_image(tmp_path / "tall.png", tall)
    x = ImageFolderDataset(tmp_path, 10)[0]
    assert x.shape == (3, 10, 10)
    assert float(x[:2, 2:8].min()) > 0.95 and float(x[2].max()) < -0.95


def test_corrupt_file_is_warned_once_and_skipped(tmp_path):
    write_image(tmp_path / "a.png", gradient(6, 6))
    (tmp_path / "b.png").write_bytes(np.random.default_rng(0).bytes(300))
    write_image(tmp_path / "c.png", 255 - gradient(6, 6))
    dataset = ImageFolderDataset(tmp_path, 6)
    with pytest.warns(UnreadableImageWarning, match="b.png"):
        x = dataset[1]
    expected = to_tensor(resize_center_crop(load_image(tmp_path / "c.png", 3), 6))
    assert torch.equal(x, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(dataset[1], expected)
        assert torch.equal(dataset[2], expected)


def test_all_corrupt_files_raise(tmp_path):
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"garbage" * 10)
    dataset = ImageFolderDataset(tmp_path, 6)
    with pytest.warns(UnreadableImageWarning), pytest.raises(DataError, match="none of its 2 images"):
        dataset[0]


def test_bad_roots_raise_data_errors_naming_the_key(tmp_path):
    with pytest.raises(DataError, match="data.root_dir='.*missing' does not exist"):
        ImageFolderDataset(tmp_path / "missing", 8)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="data.root_dir=.* is not a directory"):
        ImageFolderDataset(tmp_path / "file.png", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="my.key=.* contains no image files"):
        ImageFolderDataset(tmp_path / "empty", 8, key="my.key")
    with pytest.raises(DataError, match="data.root_dir is empty"):
        ImageFolderDataset("", 8)


def test_index_out_of_range(tmp_path):
    write_image(tmp_path / "a.png", gradient(4, 4))
    dataset = ImageFolderDataset(tmp_path, 4)
    with pytest.raises(IndexError):
        dataset[1]


def test_images_smaller_than_the_size_warn_once_naming_the_first_and_the_key(tmp_path):
    write_image(tmp_path / "big.png", gradient(40, 40))
    write_image(tmp_path / "small.png", gradient(24, 20))
    write_image(tmp_path / "smaller.png", gradient(10, 10))
    dataset = ImageFolderDataset(tmp_path, 32)
    with pytest.warns(UpsampledImageWarning) as seen:
        images = [dataset[i] for i in range(len(dataset))]
    assert len(seen) == 1 and "small.png is 20×24 px, smaller than 32 px (data.img_size)" in str(seen[0].message)
    assert all(x.shape == (3, 32, 32) for x in images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageFolderDataset(tmp_path, 20)[0]
