import pathlib
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from ml_collections import ConfigDict
from torch.utils.data import DataLoader

from infdiff.data import DataError, DataKeyWarning, PDEBenchDataset, build_dataset, data_channels, random_flip
from infdiff.data import pdebench_layout
from infdiff.pipeline.sbdm import pictured  # registers the score SDEs the example config names
from infdiff.pipeline.schema import validate_config
from infdiff.train.config import ConfigError, parse_config_flags
from infdiff.train.images import make_resolution_comparison

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "sbdm_pdebench_config.py"
FLAT_FIELDS = ("density", "pressure", "Vx", "Vy")


def random_fields(shape, seed):
    """Values on a different scale and offset per last axis, so a shared normalisation would show."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * (1 + np.arange(shape[-1])) + 10 * np.arange(shape[-1])).astype(np.float32)


@pytest.fixture
def grouped(tmp_path):
    """3 trajectories × 5 steps × 16×16 × 2 channels in PDEBench's grouped layout, with its grid."""
    h5py = pytest.importorskip("h5py")
    values = random_fields((3, 5, 16, 16, 2), seed=0)
    path = tmp_path / "2D_diff-react_NA_NA.h5"
    with h5py.File(path, "w") as file:
        for n, trajectory in enumerate(values):
            group = file.create_group(f"{n:04d}")
            group["data"] = trajectory
            for axis, length in (("x", 16), ("y", 16), ("t", 5)):
                group[f"grid/{axis}"] = np.linspace(-1, 1, length)
    return path, values


@pytest.fixture
def flat(tmp_path):
    """3 trajectories × 5 steps × 16×16 of four variables in PDEBench's flat (CFD) layout, with coordinates."""
    h5py = pytest.importorskip("h5py")
    values = random_fields((3, 5, 16, 16, 4), seed=1)
    path = tmp_path / "2D_CFD_Rand_M0.1_periodic_16_Train.hdf5"
    with h5py.File(path, "w") as file:
        for c, name in enumerate(FLAT_FIELDS):
            file[name] = values[..., c]
        file["x-coordinate"], file["y-coordinate"] = np.linspace(0, 1, 16), np.linspace(0, 1, 16)
        file["t-coordinate"] = np.linspace(0, 1, 6)
    return path, values


def write(path, **members):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as file:
        for name, value in members.items():
            file[name] = value
    return path


def normalised(values):
    """``values`` (..., C) mapped to [-1, 1] per channel over all of them, as (..., C, X, Y)."""
    low = values.min(axis=(0, 1, 2, 3), keepdims=True).astype(np.float64)
    high = values.max(axis=(0, 1, 2, 3), keepdims=True).astype(np.float64)
    return np.moveaxis(2 * (values - low) / (high - low) - 1, -1, -3)


@pytest.mark.parametrize("layout", ["grouped", "flat"])
def test_samples_are_the_files_values_normalised(layout, request):
    path, values = request.getfixturevalue(layout)
    dataset = PDEBenchDataset(path, test_fraction=0)
    assert dataset.layout.kind == layout and len(dataset) == 15
    assert dataset.fields == (("0", "1") if layout == "grouped" else FLAT_FIELDS)
    assert dataset.channels == values.shape[-1]
    expected = normalised(values)
    samples = torch.stack([dataset[i] for i in range(len(dataset))])
    assert samples.shape == (15, values.shape[-1], 16, 16) and samples.dtype == torch.float32
    for i in range(len(dataset)):
        n, t = dataset.position(i)
        assert (n, t) == divmod(i, 5)
        np.testing.assert_allclose(samples[i].numpy(), expected[n, t], atol=1e-6)
    assert torch.equal(samples.amin(dim=(0, 2, 3)), -torch.ones(values.shape[-1]))
    assert torch.equal(samples.amax(dim=(0, 2, 3)), torch.ones(values.shape[-1]))
    physical = dataset.denormalize(samples.double()).numpy()
    np.testing.assert_allclose(physical, np.moveaxis(values, -1, -3).reshape(physical.shape), rtol=1e-6, atol=1e-5)


def test_one_channel_without_a_channel_axis_and_constant_fields(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "2D_rdb_NA_NA.h5"
    with h5py.File(path, "w") as file:
        for n in range(2):
            file[f"{n:04d}/data"] = np.full((3, 8, 8), 4.0, dtype=np.float32)
    dataset = PDEBenchDataset(path, test_fraction=0)
    assert dataset.fields == ("0",) and dataset[5].shape == (1, 8, 8)
    assert torch.equal(dataset[5], torch.zeros(1, 8, 8)), "a constant field maps to 0"
    assert torch.equal(dataset.denormalize(dataset[5]), torch.full((1, 8, 8), 4.0))


def test_resampling_to_another_size(grouped):
    path, _ = grouped
    native = PDEBenchDataset(path)
    coarse = PDEBenchDataset(path, size=8)
    assert coarse[3].shape == (2, 8, 8)
    pooled = native[3].reshape(2, 8, 2, 8, 2).mean(dim=(2, 4))
    assert torch.allclose(coarse[3], pooled, atol=1e-6), "a divisor of the grid gives exact cell averages"
    for size in (12, 32):
        x = PDEBenchDataset(path, size=size)[3]
        assert x.shape == (2, size, size) and float(x.min()) >= -1 and float(x.max()) <= 1
        assert abs(float(x.mean()) - float(native[3].mean())) < 0.05, "the same field at another resolution"
    assert torch.equal(PDEBenchDataset(path, size=16)[3], native[3])


def test_field_selection(flat, grouped):
    path, _ = flat
    every = PDEBenchDataset(path)
    picked = PDEBenchDataset(path, fields=("pressure", "density"))
    assert picked.fields == ("pressure", "density") and picked.channels == 2
    assert torch.equal(picked[4], every[4][[1, 0]])
    assert PDEBenchDataset(path, fields="Vx, Vy").fields == ("Vx", "Vy")
    path, _ = grouped
    second = PDEBenchDataset(path, fields=1)
    assert second.fields == ("1",) and torch.equal(second[2], PDEBenchDataset(path)[2][1:])
    assert PDEBenchDataset(path, fields=("1", 0)).fields == ("1", "0")


def test_time_selection(grouped):
    path, _ = grouped
    last = PDEBenchDataset(path, time_index=-1, test_fraction=0)
    assert len(last) == 3 and [last.position(i) for i in range(3)] == [(0, 4), (1, 4), (2, 4)]
    assert PDEBenchDataset(path, time_index=2, test_fraction=0).steps == (2,)
    strided = PDEBenchDataset(path, time_stride=2, test_fraction=0)
    assert strided.steps == (0, 2, 4) and len(strided) == 9
    assert torch.equal(strided[4], PDEBenchDataset(path, test_fraction=0)[7]), "trajectory 1, step 2"
    with pytest.raises(DataError, match="data.time_index=-1 and data.time_stride=2 both select snapshots"):
        PDEBenchDataset(path, time_index=-1, time_stride=2)
    with pytest.raises(DataError, match="data.time_index=5 is past the last of the 5 snapshots; expected -5 to 4"):
        PDEBenchDataset(path, time_index=5)
    with pytest.raises(DataError, match="data.time_index must be an integer >= -5, got -6"):
        PDEBenchDataset(path, time_index=-6)
    with pytest.raises(DataError, match="data.time_stride must be an integer >= 1"):
        PDEBenchDataset(path, time_stride=0)


def test_splits_hold_disjoint_trajectories_and_share_the_normalisation(grouped, tmp_path):
    path, _ = grouped
    train, test = (PDEBenchDataset(path, split=split) for split in ("train", "test"))
    assert list(test.trajectories) == [0] and list(train.trajectories) == [1, 2], "PDEBench holds out the first"
    assert (len(train), len(test)) == (10, 5)
    assert np.array_equal(train.low, test.low) and np.array_equal(train.high, test.high)
    assert list(PDEBenchDataset(path, split="test", test_fraction=0.7).trajectories) == [0, 1]
    single = write(tmp_path / "single.h5", **{"0000/data": np.zeros((2, 4, 4))})
    with pytest.raises(DataError, match="data.test_fraction=0.1 holds out 1 of the file's 1 trajectories, leaving"):
        PDEBenchDataset(single)
    assert len(PDEBenchDataset(single, test_fraction=0)) == 2
    with pytest.raises(DataError, match="data.split='test' with data.test_fraction=0"):
        PDEBenchDataset(path, split="test", test_fraction=0)
    with pytest.raises(DataError, match="data.split must be one of train, test"):
        PDEBenchDataset(path, split="valid")


def test_extrema_are_streamed_and_cached(grouped, flat, monkeypatch):
    for path, _ in (grouped, flat):
        whole = PDEBenchDataset(path)
        monkeypatch.setattr(pdebench_layout, "_EXTREMA", {})
        monkeypatch.setattr(pdebench_layout, "CHUNK_VALUES", 300)  # one snapshot row at a time
        streamed = PDEBenchDataset(path)
        assert np.array_equal(whole.low, streamed.low) and np.array_equal(whole.high, streamed.high)
        monkeypatch.setattr(type(whole.layout), "extrema", lambda *args: pytest.fail("extrema read twice"))
        PDEBenchDataset(path, split="test")


def test_missing_and_ambiguous_paths(grouped, tmp_path):
    with pytest.raises(DataError, match="data.root_dir is empty"):
        PDEBenchDataset("")
    with pytest.raises(DataError, match="data.root_dir='.*nowhere.h5' does not exist"):
        PDEBenchDataset(tmp_path / "nowhere.h5")
    path, _ = grouped
    assert PDEBenchDataset(path.parent).path == str(path), "a folder holding one file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty' holds no .h5 / .hdf5 file; point data.root_dir at one"):
        PDEBenchDataset(tmp_path / "empty")
    write(tmp_path / "other.hdf5", x=np.zeros(2))
    with pytest.raises(DataError, match=r"holds 2 HDF5 files \(2D_diff-react_NA_NA.h5, other.hdf5\)"):
        PDEBenchDataset(tmp_path)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="text.h5: cannot be opened as HDF5"):
        PDEBenchDataset(tmp_path / "text.h5")


def test_unknown_fields_list_the_available_ones(flat, grouped):
    with pytest.raises(DataError, match="data.fields: 'u' not in .*; available fields: density, pressure, Vx, Vy$"):
        PDEBenchDataset(flat[0], fields=("density", "u"))
    with pytest.raises(DataError, match=r"'2' not in .*; available fields: 0, 1 \(the channels of each"):
        PDEBenchDataset(grouped[0], fields=2)
    with pytest.raises(DataError, match="names a field twice"):
        PDEBenchDataset(flat[0], fields="Vx,Vx")
    with pytest.raises(DataError, match="data.fields must be field names"):
        PDEBenchDataset(flat[0], fields=(1.5,))


def test_files_of_another_layout_are_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    one_d = write(tmp_path / "1D_Advection.hdf5", tensor=np.zeros((4, 3, 8)), **{"x-coordinate": np.zeros(8)})
    with pytest.raises(DataError, match=r"not a PDEBench-style file of 2-D fields.*found top-level 'tensor' \(dataset"):
        PDEBenchDataset(one_d)
    with h5py.File(tmp_path / "grouped.h5", "w") as file:
        file["0000/data"] = np.zeros((3, 8, 8, 2))
        file.create_group("meta")
    with pytest.raises(DataError, match="group 'meta' has no dataset 'data'"):
        PDEBenchDataset(tmp_path / "grouped.h5")
    with h5py.File(tmp_path / "grouped.h5", "w") as file:
        file["0000/data"] = np.zeros((3, 8, 8, 2))
        file["0001/data"] = np.zeros((3, 8, 8, 1))
    with pytest.raises(DataError, match=r"'0001/data' has shape \(3, 8, 8, 1\) but '0000/data' \(3, 8, 8, 2\)"):
        PDEBenchDataset(tmp_path / "grouped.h5")
    with h5py.File(tmp_path / "1D_diff-sorp.h5", "w") as file:
        file["0000/data"], file["0000/grid/x"] = np.zeros((3, 8, 1)), np.zeros(8)
    with pytest.raises(DataError, match="'0000/grid' has no 'y'; expected a file of 2-D fields"):
        PDEBenchDataset(tmp_path / "1D_diff-sorp.h5")
    shapes = write(tmp_path / "shapes.h5", a=np.zeros((2, 3, 8, 8)), b=np.zeros((2, 3, 4, 4)))
    with pytest.raises(DataError, match="the field datasets have different shapes"):
        PDEBenchDataset(shapes)
    broken = np.zeros((2, 3, 8, 8))
    broken[1, 2, 3, 4] = np.nan
    with pytest.raises(DataError, match="field 'u' holds NaN or infinite values"):
        PDEBenchDataset(write(tmp_path / "nan.h5", u=broken))


def test_pickles_and_loads_in_worker_processes(grouped):
    path, _ = grouped
    dataset = PDEBenchDataset(path, size=8)
    expected = torch.stack([dataset[i] for i in range(len(dataset))])  # the parent's handle is open now
    handle = dataset._file()
    dataset._pid = -1  # as in a forked worker: the file is opened again there
    assert dataset._file() is not handle
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._handle is None and torch.equal(copy[7], expected[7])
    loaded = torch.cat(list(DataLoader(dataset, batch_size=4, num_workers=2)))
    assert torch.equal(loaded, expected)
    dataset.close()
    assert dataset._handle is None and torch.equal(dataset[0], expected[0])


def test_build_dataset_from_a_config_section(grouped):
    path, _ = grouped
    data = ConfigDict(
        dict(name="pdebench", root_dir=str(path), img_size=8, channels=None, split="test", test_fraction=0.4)
    )
    data.update(fields=None, time_index=None, time_stride=2, num_workers=2, random_flip=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = build_dataset(data)
    assert isinstance(dataset, PDEBenchDataset) and (len(dataset), dataset.steps) == (3, (0, 2, 4))
    assert dataset[0].shape == (2, 8, 8) and data_channels(data) == 2 and not random_flip(data)
    data.fields = (1,)
    assert data_channels(data) == 1 and build_dataset(data)[0].shape == (1, 8, 8)
    assert data_channels({"name": "pdebench", "root_dir": "/nowhere", "fields": "Vx,Vy"}) == 2, "no file read"
    data.channels = 3
    with pytest.warns(DataKeyWarning, match="data.channels does not apply to the 'pdebench' data set"):
        build_dataset(data)
    assert data_channels(data) == 1, "the fields, not data.channels"
    with pytest.warns(DataKeyWarning, match="mirrors 'pdebench' images, which are not mirror-symmetric"):
        random_flip({"name": "pdebench", "random_flip": True})


def test_the_example_config_trains_on_a_file_given_on_the_command_line(grouped):
    path, _ = grouped
    configs, _, _ = parse_config_flags(["--config", str(CONFIG), f"--config.data.root_dir={path}"])
    config = configs["config"]
    validate_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = build_dataset(config.data)
    assert dataset[0].shape == (2, 32, 32) and data_channels(config.data) == 2 and config.model.arch == "fno"
    configs, _, _ = parse_config_flags(
        ["--config", str(CONFIG), "--config.data.fields=0", "--config.data.time_index=-1"]
    )
    assert (configs["config"].data.fields, configs["config"].data.time_index) == (0, -1)
    validate_config(configs["config"])
    configs, _, _ = parse_config_flags(["--config", str(CONFIG), "--config.data.time_stride=0"])
    with pytest.raises(ConfigError, match="data.time_stride=0"):
        validate_config(configs["config"])


def test_without_h5py_infdiff_imports_and_the_data_set_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "x.h5").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    with pytest.raises(DataError, match=r"h5py, which is not installed: pip install infdiff\[pde\]$"):
        build_dataset(ConfigDict(dict(name="pdebench", root_dir=str(tmp_path / "x.h5"))))
    script = "import sys; sys.modules['h5py'] = None; import infdiff, infdiff.data, infdiff.pipeline.schema"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_pictures_show_each_channel_of_a_pde_sample_in_grey():
    samples = torch.rand(3, 2, 4, 4) * 2 - 1
    shown = pictured(samples)
    assert shown.shape == (6, 1, 4, 4) and torch.equal(shown[3, 0], samples[1, 1])
    grey, colour = samples[:, :1], torch.zeros(1, 3, 4, 4)
    assert pictured(grey) is grey and pictured(colour) is colour
    make_resolution_comparison([("1x", shown), ("2x", pictured(torch.zeros(3, 2, 8, 8)))])


def test_a_score_model_trains_on_two_channel_fields_and_pictures_its_samples(grouped, tmp_path):
    """The shipped PDEBench config end to end: 2 steps of the score model on the 2-channel fields at 16², its
    samples drawn natively at 16² and 32² and pictured channel by channel."""
    import json

    from test_pipeline import flags, script

    path, _ = grouped
    overrides = [
        f"data.root_dir={path}",
        "data.img_size=16",
        "train.batch_size=4",
        "train.max_steps=2",
        "train.checkpoint_steps=2",
        "train.plot_samples_steps=2",
        "train.sample_size=1",
        "sampler.steps=2",
        "model.width=8",
        "model.modes=4",
        "model.fourier_layers=1",
        "model.time_dim=8",
        f"run.output_dir={tmp_path}",
        "run.experiment=pde",
    ]
    script("experiments/train_sbdm.py").main(flags("config", CONFIG.name, overrides))
    samples = tmp_path / "pde" / "samples"
    assert {"sample_std_1x", "sample_std_2x"} <= set(json.loads((samples / "samples_00000002.json").read_text()))
    assert (samples / "samples_00000002.png").is_file()
