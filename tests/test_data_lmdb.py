import io
import json
import pickle
import subprocess
import sys

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from infdiff.data import DataError, LMDBDataset, UnreadableImageWarning, load_image, resize_center_crop, to_tensor
from infdiff.data import lmdb_keys, prepare
from infdiff.data.lmdb_format import META_KEY


def random_image(seed, height, width, mode="RGB"):
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def encoded(image, fmt, **save_args):
    stream = io.BytesIO()
    image.save(stream, format=fmt, **save_args)
    return stream.getvalue()


def expected_tensor(source, size, channels=3):
    return to_tensor(resize_center_crop(load_image(source, channels), size))


def write_lsun_db(path, values):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key, value)
    env.close()


@pytest.fixture
def lsun_values():
    return {
        b"f3a0c6b1e2": encoded(random_image(0, 12, 16), "WEBP", quality=90),
        b"0b77d1c2aa": encoded(random_image(1, 16, 10), "JPEG", quality=90),
        b"9c00ffee11": encoded(random_image(2, 8, 8), "PNG"),
    }


def test_lsun_layout_is_read_in_key_order(tmp_path, lsun_values):
    write_lsun_db(tmp_path / "church", lsun_values)
    dataset = LMDBDataset(tmp_path / "church", 8)
    assert len(dataset) == 3
    for x, key in zip(dataset, sorted(lsun_values)):
        assert x.shape == (3, 8, 8)
        assert torch.equal(x, expected_tensor(lsun_values[key], 8))


def test_lsun_keys_are_cached_in_a_sidecar_and_refreshed_when_stale(tmp_path, lsun_values, monkeypatch):
    write_lsun_db(tmp_path / "church", lsun_values)
    LMDBDataset(tmp_path / "church", 8)
    assert (tmp_path / "church" / "data.mdb.keys.npz").is_file()

    def no_enumeration(keys):
        raise AssertionError("keys should come from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(lmdb_keys.KeyTable, "from_keys", classmethod(no_enumeration))
        assert len(LMDBDataset(tmp_path / "church", 8)) == 3
    write_lsun_db(tmp_path / "church", {b"new-key": lsun_values[b"9c00ffee11"]})
    assert len(LMDBDataset(tmp_path / "church", 8)) == 4


def test_corrupt_lsun_value_is_warned_and_skipped(tmp_path, lsun_values):
    write_lsun_db(tmp_path / "church", {**lsun_values, b"0c-broken": b"\x00" * 50})
    dataset = LMDBDataset(tmp_path / "church", 8)
    with pytest.warns(UnreadableImageWarning, match="0c-broken"):
        x = dataset[1]
    assert torch.equal(x, dataset[2])


def test_dataset_pickles_and_reopens_in_worker_processes(tmp_path, lsun_values):
    write_lsun_db(tmp_path / "church", lsun_values)
    dataset = LMDBDataset(tmp_path / "church", 8)
    first = dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._env is None and torch.equal(clone[0], first)
    batches = list(DataLoader(dataset, batch_size=3, num_workers=2))
    assert torch.equal(torch.cat(batches), torch.stack(list(dataset)))


class HandleProbe(torch.utils.data.Dataset):
    """Reads through ``dataset`` and tells whether this process uses a handle other than the creator's."""

    def __init__(self, dataset):
        self.dataset, self.creator_handle = dataset, id(dataset._environment())

    def __len__(self):
        return 2

    def __getitem__(self, index):
        self.dataset[index]
        return torch.tensor(id(self.dataset._env) != self.creator_handle)


def test_worker_processes_open_their_own_handle(tmp_path, lsun_values):
    write_lsun_db(tmp_path / "church", lsun_values)
    probe = HandleProbe(LMDBDataset(tmp_path / "church", 8))
    assert not bool(probe[0])
    assert bool(torch.cat(list(DataLoader(probe, num_workers=1))).all())


def test_not_an_lmdb_raises(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="data.root_dir=.*cannot be opened as LMDB"):
        LMDBDataset(tmp_path / "plain", 8)
    with pytest.raises(DataError, match="data.root_dir=.*does not exist"):
        LMDBDataset(tmp_path / "nothing", 8)


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    random_image(0, 20, 30).save(src / "a.png")
    random_image(1, 24, 16).save(src / "sub" / "b.jpg", quality=90)
    random_image(2, 16, 16, mode="L").save(src / "c.png")
    random_image(3, 18, 18).save(src / "d.webp")
    random_image(4, 9, 12).save(src / "e.bmp")
    return src


def sources(src):
    return [src / "a.png", src / "c.png", src / "d.webp", src / "e.bmp", src / "sub" / "b.jpg"]


def test_prepare_round_trip_equals_resized_sources(tmp_path, source):
    meta = prepare.prepare_lmdb(source, tmp_path / "out.lmdb", 8, progress=False)
    assert meta["complete"] and meta["length"] == 5 and meta["skipped"] == []
    dataset = LMDBDataset(tmp_path / "out.lmdb", 8)
    assert dataset.meta["size"] == 8 and len(dataset) == 5
    for x, path in zip(dataset, sources(source)):
        assert torch.equal(x, expected_tensor(path, 8))


def test_prepare_greyscale(tmp_path, source):
    prepare.prepare_lmdb(source, tmp_path / "grey.lmdb", 6, channels=1, progress=False)
    dataset = LMDBDataset(tmp_path / "grey.lmdb", 6, channels=1)
    assert torch.equal(dataset[0], expected_tensor(source / "a.png", 6, channels=1))


def test_prepare_skips_and_records_corrupt_sources(tmp_path, source):
    (source / "bad.png").write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.warns(UnreadableImageWarning, match="bad.png"):
        meta = prepare.prepare_lmdb(source, tmp_path / "out.lmdb", 8, progress=False)
    assert meta["skipped"] == ["bad.png"] and meta["length"] == 5
    assert len(LMDBDataset(tmp_path / "out.lmdb", 8)) == 5


def read_meta(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        meta = json.loads(txn.get(META_KEY))
    env.close()
    return meta


def crash_after(monkeypatch, calls):
    """Make the PNG encoder raise on call number ``calls + 1``; returns the call counter."""
    real, count = prepare.png_bytes, [0]

    def encode(img):
        count[0] += 1
        if count[0] > calls:
            raise RuntimeError("simulated crash")
        return real(img)

    monkeypatch.setattr(prepare, "png_bytes", encode)
    return count


def test_interrupted_prepare_is_rejected_then_resumed(tmp_path, source, monkeypatch):
    dst = tmp_path / "out.lmdb"
    with monkeypatch.context() as patch:
        crash_after(patch, 3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            prepare.prepare_lmdb(source, dst, 8, batch_size=2, progress=False)
    meta = read_meta(dst)
    assert meta["complete"] is False and meta["processed"] == 2 and meta["length"] == 2
    with pytest.raises(DataError, match=r"incomplete .*2 of 5.*re-run `python -m infdiff.data.prepare .*--size 8"):
        LMDBDataset(dst, 8)

    count = crash_after(monkeypatch, 100)
    meta = prepare.prepare_lmdb(source, dst, 8, batch_size=2, progress=False)
    assert count[0] == 3 and meta["complete"] and meta["length"] == 5
    dataset = LMDBDataset(dst, 8)
    for x, path in zip(dataset, sources(source)):
        assert torch.equal(x, expected_tensor(path, 8))
    del dataset  # releases this process's read handle, so the db can be opened for writing
    assert prepare.prepare_lmdb(source, dst, 8, progress=False)["length"] == 5
    assert count[0] == 3


def test_resume_detects_changed_sources_and_options(tmp_path, source, monkeypatch):
    dst = tmp_path / "out.lmdb"
    with monkeypatch.context() as patch:
        crash_after(patch, 1)
        with pytest.raises(RuntimeError):
            prepare.prepare_lmdb(source, dst, 8, batch_size=1, progress=False)
    with pytest.raises(DataError, match="--size 8 but --size 16"):
        prepare.prepare_lmdb(source, dst, 16, progress=False)
    random_image(9, 8, 8).save(source / "z.png")
    with pytest.raises(DataError, match=r"changed since .*1 files added, 0 removed, e.g. 'z.png'"):
        prepare.prepare_lmdb(source, dst, 8, progress=False)


def test_map_size_grows_when_full(tmp_path, source):
    random_image(5, 64, 64).save(source / "big.png")
    prepare.prepare_lmdb(source, tmp_path / "out.lmdb", 32, batch_size=6, map_size=1 << 15, progress=False)
    env = lmdb.open(str(tmp_path / "out.lmdb"), readonly=True, lock=False)
    assert env.info()["map_size"] > 1 << 15
    env.close()
    assert len(LMDBDataset(tmp_path / "out.lmdb", 32)) == 6


def test_prepare_refuses_foreign_destinations(tmp_path, source, lsun_values):
    write_lsun_db(tmp_path / "church", lsun_values)
    with pytest.raises(DataError, match="without an infdiff __meta__"):
        prepare.prepare_lmdb(source, tmp_path / "church", 8, progress=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("keep me")
    with pytest.raises(DataError, match="non-empty directory without data.mdb"):
        prepare.prepare_lmdb(source, tmp_path / "docs", 8, progress=False)


def test_cli(tmp_path, source, capsys):
    assert prepare.main([str(source), str(tmp_path / "cli.lmdb"), "--size", "8", "--quiet"]) == 0
    assert "5 images of 8x8" in capsys.readouterr().out
    assert len(LMDBDataset(tmp_path / "cli.lmdb", 8)) == 5
    assert prepare.main([str(tmp_path / "missing"), str(tmp_path / "x.lmdb"), "--size", "8", "--quiet"]) == 1
    assert "SRC=" in capsys.readouterr().err


@pytest.fixture
def prepared(tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        random_image(i, 16, 16).save(src / f"{i:02d}.png")
    prepare.prepare_lmdb(src, tmp_path / "db.lmdb", 16, progress=False)
    return tmp_path / "db.lmdb"


READ_ALL = """
import sys, warnings
from infdiff.data import DataError, LMDBDataset
try:
    dataset = LMDBDataset(sys.argv[1], 16)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        count = sum(1 for _ in dataset)
    print("read", count, "warned", len(seen), *(str(w.message) for w in seen[:1]))
except DataError as error:
    print("DataError", error)
"""


def read_all(db):
    """Read every image of ``db`` in a child process, so a crash (SIGBUS) shows as its exit status."""
    result = subprocess.run([sys.executable, "-c", READ_ALL, str(db)], capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("kept", [0.9, 0.5, 0.1, 8192])
def test_a_truncated_database_is_refused_before_it_is_mapped(prepared, kept):
    data = prepared / "data.mdb"
    size = data.stat().st_size
    data.write_bytes(data.read_bytes()[: int(size * kept) if kept < 1 else kept])
    status, output = read_all(prepared)
    assert status == 0, f"the reader died with status {status}: {output}"
    assert output.startswith("DataError data.root_dir=") and str(data) in output
    assert "truncated" in output or "does not start with an LMDB meta page" in output


def test_a_damaged_page_names_the_database_and_key_and_the_other_images_still_load(prepared):
    data = prepared / "data.mdb"
    content = bytearray(data.read_bytes())
    pages = len(content) // 4096
    middle = (pages // 2) * 4096
    content[middle : middle + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    data.write_bytes(bytes(content))
    status, output = read_all(prepared)
    assert status == 0 and "Traceback" not in output, output
    if output.startswith("DataError"):
        assert "data.root_dir=" in output and "damaged" in output
    else:
        read, warned = int(output.split()[1]), int(output.split()[3])
        assert read == 40 and warned >= 1 and "of " + str(prepared) in output, output


def test_a_record_count_that_disagrees_with_the_meta_record_is_refused(prepared):
    env = lmdb.open(str(prepared))
    with env.begin(write=True) as txn:
        txn.delete(b"00000007")
    env.close()
    with pytest.raises(DataError, match=r"holds 41 records but its __meta__ says 40 images"):
        LMDBDataset(prepared, 16)
