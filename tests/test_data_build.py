import struct
import warnings

import numpy as np
import pytest
from ml_collections import ConfigDict
from PIL import Image

from infdiff.data import (
    DATASETS,
    DataError,
    DataKeyWarning,
    IDXDataset,
    ImageFolderDataset,
    LMDBDataset,
    ShapesDataset,
    build_dataset,
    data_channels,
    random_flip,
)
from infdiff.data.prepare import prepare_lmdb


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    (base / "folder").mkdir()
    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(base / "folder" / f"{i}.png")
    prepare_lmdb(base / "folder", base / "db.lmdb", 8, progress=False)
    (base / "idx").mkdir()
    header = struct.pack(">4I", 0x803, 2, 28, 28)
    (base / "idx" / "train-images-idx3-ubyte").write_bytes(header + bytes(2 * 28 * 28))
    return {"folder": str(base / "folder"), "lmdb": str(base / "db.lmdb"), "idx": str(base / "idx")}


EXPECTED = {
    "shapes": (ShapesDataset, None),
    "image_folder": (ImageFolderDataset, "folder"),
    "ffhq": (ImageFolderDataset, "folder"),
    "celeba": (ImageFolderDataset, "folder"),
    "celebahq": (ImageFolderDataset, "folder"),
    "lmdb": (LMDBDataset, "lmdb"),
    "churches": (LMDBDataset, "lmdb"),
    "lsun": (LMDBDataset, "lmdb"),
    "mnist": (IDXDataset, "idx"),
    "fashion_mnist": (IDXDataset, "idx"),
}


ELSEWHERE = {"pdebench"}  # tests/test_data_pdebench.py (it needs h5py)


def test_every_registered_name_is_covered():
    assert set(EXPECTED) | ELSEWHERE == set(DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_name_builds(name, roots):
    dataset_class, root = EXPECTED[name]
    data = ConfigDict({"name": name, "img_size": 8, **({"root_dir": roots[root]} if root else {"num_samples": 4})})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = build_dataset(data)
    assert isinstance(dataset, dataset_class)
    channels = 1 if dataset_class is IDXDataset else 3
    assert dataset[0].shape == (channels, 8, 8)


def test_defaults_and_overrides(roots):
    shapes = build_dataset(ConfigDict({"name": "shapes", "img_size": 8}))
    assert len(shapes) == 50_000 and shapes.seed == 0 and shapes.split == "train"
    assert not random_flip({"name": "shapes"}) and random_flip({"name": "shapes", "random_flip": True})
    assert len(build_dataset(ConfigDict({"name": "shapes", "img_size": 8, "num_samples": 0}))) == 50_000
    shapes = build_dataset(
        ConfigDict(
            {
                "name": "shapes",
                "img_size": 8,
                "num_samples": 7,
                "seed": 2,
                "split": "test",
                "channels": 1,
                "random_flip": True,
            }
        )
    )
    assert (len(shapes), shapes.seed, shapes.split, shapes.channels) == (7, 2, "test", 1)
    assert shapes.max_shapes == 3
    assert build_dataset(ConfigDict({"name": "shapes", "img_size": 8, "max_shapes": 1})).max_shapes == 1
    larger = build_dataset(ConfigDict({"name": "shapes", "img_size": 8, "radius_range": (0.2, 0.32)}))
    assert larger.radius_range == (0.2, 0.32) and shapes.radius_range == (0.12, 0.3)
    assert random_flip({"name": "ffhq", "random_flip": None})
    mnist = build_dataset(ConfigDict({"name": "mnist", "root_dir": roots["idx"], "channels": None}))
    assert mnist[0].shape == (1, 28, 28) and not random_flip({"name": "mnist"})


def test_channels_come_from_the_data_set_unless_set():
    assert [data_channels({"name": name}) for name in ("shapes", "ffhq", "lsun", "mnist")] == [3, 3, 3, 1]
    assert data_channels({"name": "mnist", "channels": 3}) == 3 and data_channels({"name": "ffhq", "channels": 1}) == 1


def test_keys_that_do_not_apply_to_the_data_set_warn(roots):
    data = ConfigDict(
        {
            "name": "mnist",
            "root_dir": roots["idx"],
            "img_size": 8,
            "max_shapes": 1,
            "radius_range": (0.2, 0.3),
            "num_workers": 2,
            "random_flip": False,
        }
    )
    with pytest.warns(DataKeyWarning, match=r"data.max_shapes, data.radius_range do not apply to the 'mnist'"):
        build_dataset(data)
    with pytest.warns(DataKeyWarning, match="mirrors 'mnist' images, which are not mirror-symmetric"):
        assert random_flip({"name": "mnist", "random_flip": True})


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DataError, match=r"data.name='imagenet' is not a known dataset; expected one of: .*shapes"):
        build_dataset(ConfigDict({"name": "imagenet", "img_size": 8}))
    with pytest.raises(DataError, match="data.name=None"):
        build_dataset(ConfigDict({"img_size": 8}))


@pytest.mark.parametrize("name", ["ffhq", "churches", "mnist"])
def test_missing_root_names_the_key(name, tmp_path):
    with pytest.raises(DataError, match="data.root_dir is empty"):
        build_dataset(ConfigDict({"name": name, "img_size": 8}))
    with pytest.raises(DataError, match="data.root_dir='.*nowhere' does not exist"):
        build_dataset(ConfigDict({"name": name, "img_size": 8, "root_dir": str(tmp_path / "nowhere")}))


def test_a_bad_flip_setting_names_its_key():
    with pytest.raises(DataError, match="data.random_flip must be true or false"):
        random_flip({"name": "shapes", "random_flip": "yes"})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("img_size", None, "data.img_size must be an integer >= 1, got None"),
        ("img_size", -4, "data.img_size must be an integer >= 1"),
        ("channels", 4, "data.channels must be 1 .greyscale. or 3"),
        ("split", "val", "data.split must be one of train, test"),
        ("num_samples", -3, "data.num_samples must be an integer >= 1"),
        ("max_shapes", 0, "data.max_shapes must be an integer >= 1"),
        ("radius_range", (0.3, 0.2), r"data.radius_range must be two numbers \(a, b\) with 0.0 < a <= b <= 0.5"),
    ],
)
def test_bad_values_name_their_key(key, value, message):
    data = ConfigDict({"name": "shapes", "img_size": 8})
    data[key] = value
    with pytest.raises(DataError, match=message):
        build_dataset(data)
