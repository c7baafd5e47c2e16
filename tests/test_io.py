"""Crash-safe writes and the one tensor → 8-bit picture → PNG conversion."""

import os

import numpy as np
import pytest
import torch

from PIL import Image

import infdiff.io
from infdiff.io import atomic_torch_save, atomic_write_bytes, atomic_write_text, png_bytes, to_pil, to_uint8


def _half_write_then_crash(obj, f):
    f.write(b"PK\x03\x04 half of a checkpoint")
    raise RuntimeError("simulated crash during torch.save")


def test_atomic_torch_save_round_trips(tmp_path):
    path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "a.pt")
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert os.listdir(tmp_path) == ["a.pt"]


def test_crash_inside_torch_save_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.pt"
    atomic_torch_save({"version": 1}, path)
    monkeypatch.setattr(torch, "save", _half_write_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_torch_save({"version": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"version": 1}
    assert os.listdir(tmp_path) == ["a.pt"]


def test_crash_in_replace_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = atomic_write_text("old", tmp_path / "note.txt")

    def failing_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(infdiff.io.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(b"new", path)
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["note.txt"]


def test_atomic_write_creates_parent_directories(tmp_path):
    path = atomic_write_bytes(b"\x00\x01", tmp_path / "a" / "b" / "c.bin", fsync=False)
    assert path.read_bytes() == b"\x00\x01"


def test_one_conversion_from_tensors_to_pictures_and_png(tmp_path):
    x = torch.tensor([[[-1.0, 0.0], [1.0, 0.5]]])
    assert to_uint8(x[None]).ravel().tolist() == [0, 128, 255, 191]
    picture = to_pil(x)
    assert picture.mode == "L" and np.asarray(picture).ravel().tolist() == [0, 128, 255, 191]
    (tmp_path / "a.png").write_bytes(png_bytes(picture))
    with Image.open(tmp_path / "a.png") as read:
        assert np.asarray(read).ravel().tolist() == [0, 128, 255, 191]
    assert to_pil(torch.zeros(3, 2, 2)).mode == "RGB"
