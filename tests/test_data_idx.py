import gzip
import struct

import numpy as np
import pytest
import torch

from infdiff.data import DataError, IDXDataset
from infdiff.data.idx import read_idx_images


def write_idx(path, images, magic=0x00000803, gz=False):
    payload = struct.pack(">4I", magic, *images.shape) + images.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)
    return path


@pytest.fixture
def digits(tmp_path):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8), rng.integers(0, 256, (3, 6, 7), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", train)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test, gz=True)
    return tmp_path, train, test


def test_reads_plain_and_gzipped_splits(digits):
    root, train, test = digits
    for split, images in (("train", train), ("test", test)):
        dataset = IDXDataset(root, split=split)
        assert len(dataset) == len(images)
        for x, image in zip(dataset, images):
            assert x.shape == (1, 6, 7)
            assert torch.equal(x[0], torch.from_numpy(image).float() / 127.5 - 1)


def test_resize_and_channels(digits):
    root, train, _ = digits
    x = IDXDataset(root, size=16, channels=3)[0]
    assert x.shape == (3, 16, 16)
    assert torch.equal(x[0], x[2]) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_bad_magic_names_the_file(tmp_path):
    labels = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 3, 3)), magic=0x00000801)
    with pytest.raises(DataError, match=rf"{labels}: magic number 0x00000801, expected 0x00000803"):
        IDXDataset(tmp_path)


def test_truncated_and_short_files(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 3, 3)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="x-idx3-ubyte: header announces 4 images of 3x3 .* truncated"):
        read_idx_images(str(path))
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="shorter than an IDX3 header"):
        read_idx_images(str(path))


def test_missing_files_and_bad_split(digits, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data.root_dir=.*empty' has no train-images-idx3-ubyte or .*\.gz"):
        IDXDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="split must be one of"):
        IDXDataset(digits[0], split="valid")


def test_a_cut_off_gzip_file_is_named(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot be read \(EOFError.*truncated or corrupt"):
        IDXDataset(tmp_path)
