"""The kernel benchmarks run end to end at toy sizes and write their JSON and Markdown tables."""

import json
import subprocess
import sys

import pytest

from test_pipeline import ROOT


@pytest.mark.parametrize(
    "script, args, check",
    [
        (
            "sparse_conv.py",
            ["--sizes", "16", "--densities", "1", "0.25", "--repeats", "1", "--channels", "4", "--kernel", "3"],
            lambda r: {"sparse_torch", "dense_masked", "dense_conv_only"} <= set(r["runs"][1]["variants"]),
        ),
        ("knn.py", ["--sizes", "16", "32", "--repeats", "1"], lambda r: len(r["runs"]) == 2),
        (
            "dense_conv_fft.py",
            ["--sizes", "16", "--kernels", "3", "33", "--sides", "16", "32", "--repeats", "1"],
            lambda r: set(r["decoding"]["growth_exponent"]) == {"fft", "direct"} and len(r["ops"]) == 2,
        ),
    ],
)
def test_a_kernel_benchmark_writes_its_results(tmp_path, script, args, check):
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)], check=True, timeout=300
    )
    assert check(json.loads(out.read_text()))
    assert out.with_suffix(".md").read_text().count("|") > 8
