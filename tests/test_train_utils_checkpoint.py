import os
import subprocess
import sys

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

    state = {"python": random.getstate(), "nested": {"lr": 1e-4, "betas": (0.9, 0.99)}, "name": "x", "none": None}
    CheckpointManager(tmp_path).save(0, state)
    assert CheckpointManager(tmp_path).newest_loadable()[1] == state


class Payload:
    """Unpickling this object calls ``open(marker, "w")``: code a checkpoint must never get to run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_planted_checkpoint_is_refused_without_running_its_code(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"step": 1})
    torch.save({"step": 99999999, "model": Payload(tmp_path / "ran")}, manager.path_for(99999999))
    with pytest.warns(RuntimeWarning, match=r"refusing .*checkpoint-99999999.pt holds objects other than tensors"):
        path, state = manager.newest_loadable()
    assert state == {"step": 1} and not (tmp_path / "ran").exists()


def test_checkpoints_of_older_runs_with_numpy_rng_state_still_load(tmp_path):
    import numpy as np

    state = np.random.get_state()
    torch.save({"rng": [{"numpy": state}]}, CheckpointManager(tmp_path).path_for(5))
    loaded = CheckpointManager(tmp_path).newest_loadable()[1]["rng"][0]["numpy"]
    assert loaded[0] == state[0] and np.array_equal(loaded[1], state[1]) and loaded[2:] == state[2:]


def test_invalid_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)
    with pytest.raises(ValueError, match="step"):
        CheckpointManager(tmp_path).save(-1, {})


def test_partial_writes_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"step": 1})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f".checkpoint-00000002.pt.{dead.pid}.0badc0de.tmp"
    live = tmp_path / f".checkpoint-00000002.pt.{os.getpid()}.0badc0de.tmp"
    for path in (killed, live):
        path.write_bytes(b"PK half a checkpoint")
    assert manager.remove_partial_writes() == [killed]
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "checkpoint-00000001.pt"]
