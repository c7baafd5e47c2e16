"""The kernel candidates (``benchmarks/kernel_candidates.py``) and their A/B benchmark
(``benchmarks/kernel_variants.py``), checked without a GPU: every candidate still applies to ``csrc/``,
a stale one is refused by name, the edited kernels compute the reference's convolution on the emulated
GPU, and the benchmark's comparison times what agrees and reports what does not."""

import argparse
import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infdiff.ops import SparseImage, backends, sparse_depthwise_conv
from infdiff.ops.extension import SOURCE_DIR, SOURCES, ExtensionUnavailable, load_kernels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kernel_candidates  # noqa: E402
import kernel_variants  # noqa: E402
from kernel_candidates import CANDIDATES, EDITS, candidate_sources  # noqa: E402


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_candidate_still_applies_to_csrc(name, tmp_path):
    folder = candidate_sources(name, SOURCE_DIR, tmp_path / name)
    edited = (folder / kernel_candidates.CUDA_FILE).read_text()
    assert edited != (SOURCE_DIR / kernel_candidates.CUDA_FILE).read_text()
    for edit_set in CANDIDATES[name]:
        assert edit_set in EDITS
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in SOURCE_DIR.iterdir() if p.is_file())


def test_promoting_a_candidate_writes_its_edits_into_the_sources_and_nothing_else(tmp_path):
    sources = tmp_path / "csrc"
    shutil.copytree(SOURCE_DIR, sources)
    expected = candidate_sources("grouped_loads", SOURCE_DIR, tmp_path / "expected")
    assert kernel_candidates.promote("grouped_loads", sources) == [kernel_candidates.CUDA_FILE]
    for file in sources.iterdir():
        assert file.read_bytes() == (expected / file.name).read_bytes()
    with pytest.raises(ValueError, match="holds 0 copies"):
        kernel_candidates.promote("grouped_loads", sources)  # applied already: its old text is gone
    for file in sources.iterdir():
        assert file.read_bytes() == (expected / file.name).read_bytes(), "a refused promotion writes nothing"
    assert (sources / "sparse_ops_cpu.cpp").read_bytes() == (SOURCE_DIR / "sparse_ops_cpu.cpp").read_bytes()


def test_a_stale_candidate_is_refused_with_its_name_file_and_edit(tmp_path, monkeypatch):
    stale = [(kernel_candidates.CUDA_FILE, "a line csrc/ no longer has\n", "anything\n")]
    monkeypatch.setitem(EDITS, "stale", stale)
    monkeypatch.setitem(CANDIDATES, "stale_candidate", ("grouped_loads", "stale"))
    with pytest.raises(ValueError, match=r"'stale_candidate', edit 'stale': sparse_ops_cuda.cu holds 0 copies of "):
        candidate_sources("stale_candidate", SOURCE_DIR, tmp_path / "x")
    with pytest.raises(ValueError, match=r"unknown kernel candidate 'nope'; expected one of \['grouped_loads'"):
        candidate_sources("nope", SOURCE_DIR, tmp_path / "y")


@contextlib.contextmanager
def emulated_candidate(name):
    """Candidate ``name``'s sources run by the emulated GPU, registered as the backend ``candidate_emulated``.
    The sources lie where ``kernel_variants`` builds them (a folder keyed by their content), so the emulated
    build is compiled once, not once per test."""
    from cuda_emulation import build, compiler_at_hand

    sources = kernel_variants.candidate_folder(name) / "src"
    try:
        module = build(
            f"infdiff_candidate_{name}_emulated", [sources / s for s in SOURCES["cuda"]], "bindings.cpp", False, sources
        )
    except ExtensionUnavailable as why:
        if compiler_at_hand():
            raise  # the candidate's sources do not build: its fault, not the machine's
        pytest.skip(str(why))
    backends.BACKENDS.register("candidate_emulated", backends.Backend("emulated candidate", ("cpu",), lambda: module))
    backends.forget_resolved()
    try:
        yield module
    finally:
        backends.BACKENDS.unregister("candidate_emulated")
        backends.forget_resolved()


def test_the_grouped_loads_compute_the_reference_convolution_on_the_emulated_gpu():
    """The candidate with every structural edit (the others change constants only): its forward, transposed
    and weight kernels, by table and by window, in float32 and bfloat16, with a tap count (49) that leaves
    a partial group, absent neighbours and one batch item almost empty."""
    from test_kernels import assert_close_to_size, conv, sparse_image

    with emulated_candidate("grouped_loads_bounded"):
        for case in (dict(batch=2, size=(16, 12), points=40, clustered=True), dict(batch=2, size=(9, 7), points=63)):
            for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
                cpu = sparse_image(**case, channels=6, dtype=torch.float64)
                exact_weight = torch.randn(6, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
                sparse = SparseImage(cpu.values.to(dtype), cpu.index, cpu.size)
                weight = exact_weight.to(dtype)
                reference = conv(
                    SparseImage(sparse.values.double(), sparse.index, sparse.size), weight.double(), "torch"
                )
                for neighbours in ("table", "window"):
                    for ours, expected in zip(conv(sparse, weight, "candidate_emulated", neighbours), reference):
                        assert_close_to_size(ours, expected, tolerance)


TILED_CASES = {
    "several tiles each way, a quarter": dict(batch=2, size=(40, 29), points=290),
    "every pixel": dict(batch=2, size=(9, 7), points=63),
    "one point": dict(batch=2, size=(8, 8), points=1),
    "different occupancies": dict(batch=2, size=(16, 12), points=40, clustered=True),
}


@pytest.mark.parametrize("case", list(TILED_CASES))
@pytest.mark.parametrize(
    "dtype, kernel_size",
    [
        (torch.bfloat16, (7, 7)),
        (torch.float32, (7, 7)),
        (torch.float32, (5, 3)),
        (torch.float32, (11, 11)),  # a 6-pixel interior: tiles still
        (torch.float64, (11, 11)),  # no interior of 4 pixels in an 11-pixel halo: csrc's gather kernel instead
    ],
    ids=str,
)
def test_the_tiled_window_kernels_compute_what_csrc_does_on_the_emulated_gpu(case, dtype, kernel_size):
    """The forward and transposed convolutions sum their taps in csrc's order with csrc's arithmetic, so their
    outputs are csrc's bits; the weight gradient, summed tile by tile, agrees with csrc's to rounding.  Both
    with the Monte-Carlo normaliser's scale on either side, 37 channels (a partial second slice) and images
    that are no multiple of the tile."""
    from cuda_emulation import load_emulated_kernels
    from test_kernels import assert_close_to_size, sparse_image

    cpu = sparse_image(**TILED_CASES[case], channels=37, dtype=torch.float64)
    sparse = SparseImage(cpu.values.to(dtype), cpu.index, cpu.size)
    weight = torch.randn(37, *kernel_size, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(dtype)
    backends.BACKENDS.register("csrc_emulated", backends.Backend("csrc, emulated", ("cpu",), load_emulated_kernels))
    try:
        with emulated_candidate("tiled_window") as module:
            launches = module.launches()
            tiled = _window_conv(sparse, weight, kernel_size, "candidate_emulated")
            assert module.launches() > launches
            csrc = _window_conv(sparse, weight, kernel_size, "csrc_emulated")
    finally:
        backends.BACKENDS.unregister("csrc_emulated")
        backends.forget_resolved()
    assert torch.equal(tiled[0], csrc[0]) and torch.equal(tiled[1], csrc[1])  # forward, transposed
    assert_close_to_size(tiled[2], csrc[2], {torch.bfloat16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype])


def _window_conv(sparse, weight, kernel_size, backend):
    """Output, values' gradient and weight's gradient of the window lookup's convolution, normalised for a
    kernel trained at 3x3 (so the row scale is there, on the output rows forward and the gathered ones back)."""
    values = sparse.values.clone().requires_grad_(True)
    kernel = weight.clone().requires_grad_(True)
    image = SparseImage(values, sparse.index, sparse.size)
    out = sparse_depthwise_conv(image, kernel, (3, 3), backend=backend, neighbours="window").values
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out))
    return out.detach(), values.grad, kernel.grad


class _Doubled:
    """The C++ kernels with a forward that is twice what it should be: a candidate that does not agree."""

    def __getattr__(self, name):
        kernel = getattr(load_kernels("cpu"), name)
        return (lambda *args: 2 * kernel(*args)) if name == "gather_conv" else kernel


def test_the_comparison_times_what_agrees_and_reports_what_differs():
    try:
        load_kernels("cpu")
    except ExtensionUnavailable as why:
        pytest.skip(str(why))
    registered = {"same": lambda: load_kernels("cpu"), "doubled": _Doubled}
    for name, load in registered.items():
        backends.BACKENDS.register(name, backends.Backend(name, ("cpu",), load))
    backends.forget_resolved()
    args = argparse.Namespace(density=0.25, batch=2, channels=4, kernel=3, dtype="float32", repeats=2)
    try:
        result = kernel_variants.run(12, args, ["cpp", "same", "doubled"], device="cpu")
    finally:
        for name in registered:
            backends.BACKENDS.unregister(name)
        backends.forget_resolved()
    rows = result["kernels"]
    assert set(rows) == set(kernel_variants.TIMED)
    assert rows["gather_conv"]["doubled"] == {"differs_from_csrc": True}
    assert rows["gather_conv_transposed"]["doubled"] == {"differs_from_csrc": True}  # the same kernel, flipped
    assert rows["gather_conv_weight"]["doubled"]["median_ms"] > 0
    assert all(rows[k]["same"]["median_ms"] > 0 and rows[k]["cpp"]["ratio_to_csrc"] == 1.0 for k in rows)
    table = kernel_variants.markdown(
        dict(result, variants=["cpp", "same", "doubled"], runs=[result], device_name="cpu", torch="x", **vars(args))
    )
    forward = next(line for line in table.splitlines() if line.startswith("| 12² | gather_conv | "))
    assert forward.endswith("| differs |") and "(1.00×)" in forward


def test_on_a_gpu_each_variant_also_reports_its_kernels_own_time_against_csrc():
    seconds = {"cuda/k": 2e-3, "fast/k": 1e-3}
    row = kernel_variants.timings(seconds, {"cuda/k": 1e-3, "fast/k": 2.5e-4}, "fast/k", "cuda/k")
    assert row == pytest.approx(
        {"median_ms": 1.0, "ratio_to_csrc": 0.5, "kernel_ms": 0.25, "kernel_ratio_to_csrc": 0.25}
    )
    assert kernel_variants.timings(seconds, {"cuda/k": None, "fast/k": None}, "fast/k", "cuda/k") == pytest.approx(
        {"median_ms": 1.0, "ratio_to_csrc": 0.5}
    )
    assert kernel_variants._cell(row) == "1.000 (0.50×); kernels 0.250 (0.25×)"


def test_the_candidates_compile_check_without_nvcc_ends_in_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, str(Path(kernel_candidates.__file__)), "--compile-check"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},  # no nvcc there
        timeout=60,
    )
    assert run.returncode == 2 and "needs nvcc (the CUDA toolkit) on PATH" in run.stderr
    assert "Traceback" not in run.stderr
