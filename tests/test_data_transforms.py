import io

import numpy as np
import pytest
import torch
from PIL import Image

from infdiff.data import DataError, UnreadableImageError, load_image, flip_batch, resize_center_crop, to_pil, to_tensor
from infdiff.data.transforms import convert_channels


def encoded(image, fmt="PNG"):
    stream = io.BytesIO()
    image.save(stream, format=fmt)
    return stream.getvalue()


def test_tensor_round_trip_is_exact_and_in_range():
    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    x = to_tensor(Image.fromarray(array))
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0
    assert np.array_equal(np.asarray(to_pil(x)), array)
    grey = to_tensor(Image.fromarray(array[:, :, 0]))
    assert grey.shape == (1, 4, 5)
    assert np.array_equal(np.asarray(to_pil(grey)), array[:, :, 0])


def test_to_pil_clamps_and_rejects_bad_shapes():
    assert np.asarray(to_pil(torch.full((3, 2, 2), 5.0))).min() == 255
    with pytest.raises(ValueError, match="C, H, W"):
        to_pil(torch.zeros(2, 4, 4))


def test_load_image_from_bytes_and_channel_conversion():
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8))
    assert load_image(encoded(rgb), 3).mode == "RGB"
    grey = load_image(encoded(rgb), 1)
    assert grey.mode == "L" and grey.size == (2, 1)
    assert np.asarray(grey)[0, 0] == round(0.299 * 255)


def test_transparency_is_composited_over_black():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255
    out = np.asarray(load_image(encoded(Image.fromarray(rgba)), 3))
    assert out[0, 0].tolist() == [200, 200, 200] and out[1, 1].tolist() == [0, 0, 0]


def test_palette_and_16_bit_images_are_converted():
    palette = Image.fromarray(np.array([[0, 1]], dtype=np.uint8)).convert("P")
    assert load_image(encoded(palette), 3).mode == "RGB"
    deep = Image.fromarray(np.array([[0, 65535, 32896]], dtype=np.uint16))
    out = np.asarray(load_image(encoded(deep), 1))
    assert out.tolist() == [[0, 255, 128]]


def test_unreadable_image_error_names_the_source(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UnreadableImageError, match="broken.png"):
        load_image(bad, 3)
    with pytest.raises(UnreadableImageError, match="my-key"):
        load_image(b"\x89PNG garbage", 3, name="my-key")
    with pytest.raises(DataError, match="channels"):
        load_image(bad, 2)


def test_resize_center_crop_keeps_the_centre():
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, :20, 0] = 255
    wide[:, 20:40, 1] = 255
    wide[:, 40:, 2] = 255
    out = resize_center_crop(Image.fromarray(wide), 8)
    assert out.size == (8, 8)
    centre = np.asarray(out)[:, 2:6]
    assert (centre[..., 1] >= 250).all() and (centre[..., [0, 2]] <= 5).all()
    square = Image.fromarray(wide[:, 20:40])
    assert resize_center_crop(square, 20) is square


def test_flip_batch_mirrors_each_image_along_its_width_with_probability_p():
    x = torch.arange(6.0).reshape(1, 1, 2, 3).repeat(200, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(flip_batch(x, g, p=1.0), x.flip(-1))
    assert torch.equal(flip_batch(x, g, p=0.0), x)
    flipped = flip_batch(x, g)
    mirrored = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(flipped, x)])
    assert (mirrored | kept).all() and 60 < int(mirrored.sum()) < 140
    assert torch.equal(flip_batch(x, torch.Generator().manual_seed(1)), flip_batch(x, torch.Generator().manual_seed(1)))


def test_convert_channels_rejects_unknown_counts():
    with pytest.raises(DataError, match="1 .greyscale. or 3"):
        convert_channels(Image.new("RGB", (2, 2)), 4)
