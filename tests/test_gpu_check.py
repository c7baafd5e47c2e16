"""The one prepared GPU run (``benchmarks/gpu_check.sh``) checked here, without a GPU, before GPU time is spent on
it: its dry run collects the GPU tests and has every benchmark it calls parse its arguments and configs."""

import os
import re
import subprocess
import sys

import pytest
import torch

from infdiff.ops.extension import cache_root
from infdiff.train.config import ConfigError
from test_pipeline import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = re.findall(r"^bench (\S+) \d+ benchmarks/(\S+\.py)", SCRIPT.read_text(), flags=re.MULTILINE)


def gpu_check(out, **env):
    """The script with the suite's kernel cache (collecting the kernel tests builds the CPU kernels)."""
    env = dict(os.environ, PYTHON=sys.executable, INFDIFF_EXTENSION_DIR=str(cache_root()), **env)
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=600)


def test_every_step_of_the_prepared_gpu_run_parses_its_arguments_and_configs(tmp_path):
    run = gpu_check(tmp_path, DRY_RUN="1")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert len(STEPS) >= 7
    for name, script in STEPS:
        assert f"dry run: {script} would run" in run.stdout, f"{name}: {run.stdout[-3000:]}"
    assert "tests collected" in run.stdout


def test_a_dry_run_names_a_wrong_key_or_value_of_a_variant(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import stage1_variants

    base = ["--config", str(ROOT / "configs" / "shapes_32_config.py"), "--out", "unused.json", "--dry-run"]
    with pytest.raises(ConfigError, match="loss.pointz: no such key"):
        stage1_variants.main(base + ["--variant", "dense", "loss.pointz=5"])
    with pytest.raises(ConfigError, match=r"--variant.loss.points=-5: expected an integer >= 1"):
        stage1_variants.main(base + ["--variant", "dense", "loss.points=-5"])


def test_a_rerun_runs_only_the_steps_it_names_and_refuses_a_name_the_script_lacks(tmp_path):
    run = gpu_check(tmp_path / "a", DRY_RUN="1", ONLY="knn_gpu")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.count("dry run: ") == 1 and "dry run: knn.py would run" in run.stdout
    assert "tests collected" not in run.stdout
    wrong = gpu_check(tmp_path / "b", DRY_RUN="1", ONLY="knn_gpu stage1_ffhq256")
    assert wrong.returncode == 2 and "dry run" not in wrong.stdout
    assert "ONLY names stage1_ffhq256, which is no step" in wrong.stderr
    assert all(name in wrong.stderr for name, _ in STEPS) and "tests" in wrong.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the real run would start")
def test_the_real_run_stops_at_once_without_a_gpu(tmp_path):
    run = gpu_check(tmp_path)
    assert run.returncode == 1
    assert "no CUDA device here: DRY_RUN=1" in run.stdout
    assert (tmp_path / "log.txt").read_text().startswith("no CUDA device here")
