"""The kernel and score-network benchmarks run end to end at toy sizes and write their JSON and Markdown tables."""

import json
import subprocess
import sys

import pytest
import torch

from test_pipeline import ROOT, TINY_AE, flags


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
            "op_overhead.py",
            ["--op-cases", "8x1", "--calls", "2", "--repeats", "1", "--size", "16", "--nf", "8", "--blocks", "1"],
            lambda r: (
                set(r["ops"]["8x8_b1"]["microseconds_per_call"]["gather_conv"]["fwd_bwd"])
                == {"operator", "eager", "kernels", "eager_over_operator"}
                and r["front_back"]["median_ms"]["eager"] > 0
            ),
        ),
        (
            "sparse_kernels.py",
            ["--sizes", "16", "--channels", "4", "--kernel", "3", "--repeats", "1"],
            lambda r: (
                r["runs"][0]["kernels"]["gather_conv"]["flops_per_second"] > 0
                and r["runs"][0]["kernels"]["neighbour_table"]["flops_per_second"] == 0
            ),
        ),
        (
            "decoder_front_back.py",
            ["--size", "16", "--batch", "2", "--nf", "8", "--blocks", "1", "--repeats", "1"],
            lambda r: (
                r["front_back"]["dense_all_pixels"]["ratio_to_dense"] == 1
                and all(v["operators_computing"] > 20 for v in r["front_back"].values())
            ),
        ),
        (
            "decode_step.py",
            flags("config", "shapes_32_config.py", TINY_AE) + ["--sides", "16", "32", "--repeats", "1"],
            lambda r: (
                r["kernel_taps"] == {"16": 3, "32": 7}
                and all(cell["peak_bytes"] > 0 for cell in r["cells"]["fp32"].values())
            ),
        ),
        (
            "dense_conv_fft.py",
            ["--sizes", "16", "--kernels", "3", "33", "--sides", "16", "32", "--repeats", "1"],
            lambda r: set(r["decoding"]["growth_exponent"]) == {"fft", "direct"} and len(r["ops"]) == 2,
        ),
        (
            "norm_film.py",
            ["--batch", "2", "--channels", "8", "--points", "16", "--grids", "4", "--repeats", "1", "--films", "3"],
            lambda r: (
                [run["kind"] for run in r["runs"]] == ["layer_norm", "group_norm"]
                and all(run["variants"]["folded"]["saved_ratio"] < 1 for run in r["runs"])
                and r["conditioning"]["variants"]["together"]["operators_computing"]
                < r["conditioning"]["variants"]["each_own"]["operators_computing"]
            ),
        ),
        (
            "sbdm_speed.py",
            ["--sizes", "28", "--batch", "2", "--sample_batch", "1", "--steps", "2", "--repeats", "1"],
            lambda r: set(r["runs"][0]["sample"]) == {"fno", "cno", "unet"} and r["runs"][0]["route"] == "native",
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--density", "0"], "expected a fraction in (0, 1], got 0"),
        (["--kernel", "4"], "expected an odd kernel side, got 4"),
        (["--op-cases", "8"], "invalid case value: '8'"),
        (["--device", "mps"], "invalid choice: 'mps'"),
    ],
)
def test_the_host_cost_benchmark_refuses_bad_arguments_in_one_line(args, message):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "op_overhead.py"), *args, "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_a_kernels_own_gpu_time_gives_the_bandwidth_it_reaches_in_the_table():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import sparse_kernels

    rates = sparse_kernels.kernel_rates(traffic=4e9, seconds=2e-3, copy_seconds=1e-3, peak=4e12)
    assert rates == pytest.approx(
        {"kernel_ms": 2.0, "kernel_ratio_to_values_copy": 2.0, "kernel_bandwidth_fraction": 0.5}
    )
    assert "kernel_bandwidth_fraction" not in sparse_kernels.kernel_rates(4e9, 2e-3, 1e-3, peak=None)
    assert sparse_kernels.kernel_rates(4e9, None, None, 4e12) == {}  # no profile off a GPU
    wall = {"median_ms": 3.0, "bytes_per_second": 1.3e12, "ratio_to_values_copy": 1.5, "flops_per_second": 1e12}
    results = dict(backend="cuda", dtype="bfloat16", batch=8, channels=64, kernel=7, density=0.25)
    results.update(device_name="GPU", torch="x", runs=[{"size": 256, "kernels": {"gather_conv": {**wall, **rates}}}])
    row = next(line for line in sparse_kernels.markdown(results).splitlines() if "gather_conv" in line)
    assert row.endswith("| 2.000 | 2.0 | 0.50 | – |")
    del results["runs"][0]["kernels"]["gather_conv"]["kernel_ms"]
    results["runs"][0]["kernels"]["gather_conv"] = wall
    row = next(line for line in sparse_kernels.markdown(results).splitlines() if "gather_conv" in line)
    assert row.endswith("| – | – | – | – |")
    results["runs"][0]["kernels"]["gather_conv"] = {**wall, **rates, **sparse_kernels.gather_rates(8e9, 4e-3, 2e-3)}
    row = next(line for line in sparse_kernels.markdown(results).splitlines() if "gather_conv" in line)
    assert row.endswith("| 0.50 | 2000.0 (4000.0) |")


def test_the_gathered_bytes_count_a_row_per_present_neighbour_a_lookup_per_tap_and_the_outputs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import sparse_kernels

    from infdiff.ops import SparseImage, neighbour_table

    every_pixel = torch.arange(16).expand(2, 16)  # two 4x4 images, every pixel present
    sparse = SparseImage.from_dense(torch.randn(2, 5, 4, 4), every_pixel)
    table = neighbour_table(sparse, (3, 3), "torch")
    # per image, 3x3 neighbours inside a 4x4 grid: 4 corners x 4 + 8 edges x 6 + 4 inside x 9 = 100
    present, lookups, outputs = 2 * 100 * 5 * 2, 4 * 9 * 32, 32 * 5 * 2
    assert sparse_kernels.gathered_bytes(sparse, table, torch.bfloat16) == present + lookups + outputs
