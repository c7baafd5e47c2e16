import builtins
import json
import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from infdiff.train.run_logger import RunLogger, read_metrics


def test_log_writes_one_json_line_per_call_and_prints(tmp_path, capsys):
    with RunLogger(tmp_path) as logger:
        logger.log(1, {"loss": torch.tensor(0.5), "lr": 1e-4})
        logger.log(2, {"loss": np.float32(0.25), "images": 16})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["step"] == 1 and first["loss"] == 0.5 and first["lr"] == 1e-4 and "time" in first
    assert json.loads(lines[1])["images"] == 16
    assert "step 2 | loss 0.25 | images 16" in capsys.readouterr().out


def test_lines_are_flushed_before_close(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log(3, {"loss": 1.0})
    assert read_metrics(tmp_path)[0]["step"] == 3
    logger.close()
    logger.close()


def test_reopening_appends(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log(1, {"loss": 1.0})
    with RunLogger(tmp_path) as logger:
        logger.log(2, {"loss": 2.0})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_line_cut_short_by_a_crash_does_not_spoil_the_next(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log(1, {"loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')
    with RunLogger(tmp_path) as logger:
        logger.log(2, {"loss": 2.0})
    with pytest.warns(RuntimeWarning, match="line 2 of"):
        records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]


def test_non_finite_values_round_trip(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log(1, {"loss": float("nan"), "grad_norm": float("inf")})
    record = read_metrics(tmp_path)[0]
    assert math.isnan(record["loss"]) and record["grad_norm"] == math.inf


def test_non_main_process_writes_and_prints_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    with RunLogger(run, is_main=False, tensorboard=True, wandb_project="p") as logger:
        logger.log(1, {"loss": 1.0})
    assert not run.exists()
    assert capsys.readouterr().out == ""


def test_bad_metric_values_are_rejected(tmp_path):
    with RunLogger(tmp_path) as logger:
        with pytest.raises(ValueError, match="'loss'.*shape \\(2,\\)"):
            logger.log(1, {"loss": torch.ones(2)})
        with pytest.raises(TypeError, match="'name'"):
            logger.log(1, {"name": "abc"})
        with pytest.raises(ValueError, match="reserved"):
            logger.log(1, {"step": 1})


def _hide_module(monkeypatch, name):
    real_import = builtins.__import__

    def fake_import(module, *args, **kwargs):
        if module == name or module.startswith(name + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_tensorboard_warns_and_continues(tmp_path, monkeypatch):
    _hide_module(monkeypatch, "torch.utils.tensorboard")
    with pytest.warns(RuntimeWarning, match="tensorboard"):
        logger = RunLogger(tmp_path, tensorboard=True)
    with logger:
        logger.log(1, {"loss": 1.0})
    assert len(read_metrics(tmp_path)) == 1


def test_missing_wandb_warns_and_continues(tmp_path, monkeypatch):
    _hide_module(monkeypatch, "wandb")
    with pytest.warns(RuntimeWarning, match="wandb"):
        logger = RunLogger(tmp_path, wandb_project="infdiff")
    with logger:
        logger.log(1, {"loss": 1.0})
    assert len(read_metrics(tmp_path)) == 1


def test_no_optional_backend_means_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with RunLogger(tmp_path) as logger:
            logger.log(1, {"loss": 1.0})


class _FakeRun:
    def __init__(self, run_id):
        self.id, self.logged, self.finished = run_id, [], False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


def test_wandb_run_gets_config_metrics_and_is_resumed(tmp_path, monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        calls[-1]["run"] = _FakeRun(kwargs["id"] or "abc123")
        return calls[-1]["run"]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    with RunLogger(tmp_path, wandb_project="infdiff", config={"lr": 1e-4}) as logger:
        logger.log(7, {"loss": 0.5})
    assert calls[0]["project"] == "infdiff" and calls[0]["config"] == {"lr": 1e-4} and calls[0]["id"] is None
    assert calls[0]["run"].logged == [(7, {"loss": 0.5})] and calls[0]["run"].finished
    with RunLogger(tmp_path, wandb_project="infdiff"):
        pass
    assert calls[1]["id"] == "abc123"
