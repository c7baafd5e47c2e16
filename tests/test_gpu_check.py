"""The one prepared GPU run (``benchmarks/gpu_check.sh``) checked here, without a GPU, before GPU time is spent on
it: its dry run collects the GPU tests and has every benchmark it calls parse its arguments and configs."""

import os
import re
import subprocess
import sys

import pytest

from infdiff.train.config import ConfigError
from test_pipeline import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_every_step_of_the_prepared_gpu_run_parses_its_arguments_and_configs(tmp_path):
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable)
    run = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    steps = re.findall(r"^bench (\S+) \d+ benchmarks/(\S+\.py)", SCRIPT.read_text(), flags=re.MULTILINE)
    assert len(steps) >= 7
    for name, script in steps:
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
