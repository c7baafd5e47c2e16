import os

import pytest
import torch

from infdiff.train.checkpoint import CheckpointManager, checkpoint_step


def _half_write_then_crash(obj, f):
    f.write(b"PK\x03\x04 half of a checkpoint")
    raise RuntimeError("simulated crash during torch.save")


def test_checkpoint_step_parses_only_checkpoint_names():
    assert checkpoint_step("run/checkpoint-00000120.pt") == 120
    assert checkpoint_step("checkpoint-123456789.pt") == 123456789
    assert checkpoint_step(".checkpoint-00000120.pt.1.abcd.tmp") is None
    assert checkpoint_step("model.pt") is None


def test_manager_keeps_newest_k_sorted_by_step(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (5, 10, 100, 1000):
        manager.save(step, {"step": step})
    assert [p.name for p in manager.checkpoints()] == ["checkpoint-00000100.pt", "checkpoint-00001000.pt"]
    path, state = manager.newest_loadable()
    assert path == tmp_path / "checkpoint-00001000.pt" and state["step"] == 1000


def test_step_beyond_eight_digits_sorts_numerically(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    manager.save(123456789, {"step": 123456789})
    manager.save(99999999, {"step": 99999999})
    assert manager.newest_loadable()[1]["step"] == 123456789


def test_latest_skips_truncated_newest_with_warning(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(1, {"step": 1, "w": torch.ones(100)})
    newest = manager.save(2, {"step": 2, "w": torch.ones(100)})
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="checkpoint-00000002.pt"):
        path, state = manager.newest_loadable()
    assert path == tmp_path / "checkpoint-00000001.pt" and state["step"] == 1


def test_failed_save_does_not_prune(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save(1, {"step": 1})
    monkeypatch.setattr(torch, "save", _half_write_then_crash)
    with pytest.raises(RuntimeError):
        manager.save(2, {"step": 2})
    monkeypatch.undo()
    assert [p.name for p in manager.checkpoints()] == ["checkpoint-00000001.pt"]
    assert os.listdir(tmp_path) == ["checkpoint-00000001.pt"]


def test_a_directory_without_checkpoints_has_none_to_load(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    assert manager.checkpoints() == [] and manager.newest_loadable() is None


def test_checkpoints_hold_non_tensor_training_state(tmp_path):
    import random

    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "nested": {"lr": 1e-4}}
    CheckpointManager(tmp_path).save(0, state)
    loaded = CheckpointManager(tmp_path).newest_loadable()[1]
    assert loaded["python"] == state["python"]
    assert np.array_equal(loaded["numpy"][1], state["numpy"][1])


def test_invalid_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)
    with pytest.raises(ValueError, match="step"):
        CheckpointManager(tmp_path).save(-1, {})
