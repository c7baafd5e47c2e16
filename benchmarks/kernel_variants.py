"""The kernel candidates of :mod:`kernel_candidates` against ``csrc/``'s CUDA kernels, in one process.

Each candidate's edited copy of ``csrc/`` is built as a module of its own (all at once, in parallel
processes; ``--build-only`` stops there, so ``gpu_check.sh`` can build them beside its own kernels) and
registered as a backend of the sparse operators, so the kernels of :mod:`sparse_kernels` run through the
same custom operators for ``csrc/`` (backend ``cuda``) and every candidate.  All calls are timed
interleaved (median after a warm-up); each candidate's outputs are held to ``csrc/``'s first, and one
that differs is reported as such instead of being timed.

    python benchmarks/kernel_variants.py --device cuda --dtype bfloat16 --sizes 256 512 --batch 8 \\
        --out benchmarks/results/kernel_variants_h200.json
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from infdiff.ops import SparseImage, backends, uniform_subset
from infdiff.ops.extension import CUDA_FLAGS, SOURCE_DIR, SOURCES, cache_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import dry_run, environment, interleaved_medians, kernel_seconds, publish_each  # noqa: E402
from kernel_candidates import CANDIDATES, EDITS, candidate_sources  # noqa: E402
from sparse_kernels import add_kernel_options, kernels  # noqa: E402

BASELINE = "cuda"  # csrc/'s kernels
TIMED = (
    "gather_conv",
    "gather_conv_transposed",
    "gather_conv_weight",
    "window_conv",
    "window_conv_transposed",
    "window_conv_weight",
)
TOLERANCE = {"float32": 1e-5, "float64": 1e-10, "bfloat16": 2e-2, "float16": 4e-3}  # of the output's size


@functools.lru_cache(maxsize=None)
def candidate_folder(name: str) -> Path:
    """Where candidate ``name`` is built, keyed by csrc/'s files, the candidate's edits and torch's version;
    its edited sources in ``src/``."""
    digest = hashlib.sha256(torch.__version__.encode() + repr([EDITS[e] for e in CANDIDATES[name]]).encode())
    for path in sorted(p for p in SOURCE_DIR.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    folder = cache_root() / "candidates" / f"{name}_{digest.hexdigest()[:16]}"
    candidate_sources(name, SOURCE_DIR, folder / "src")
    return folder


@functools.lru_cache(maxsize=None)
def load_candidate(name: str):
    """Candidate ``name``'s CUDA kernel module, built on first use."""
    from torch.utils import cpp_extension

    folder = candidate_folder(name)
    return cpp_extension.load(
        f"infdiff_candidate_{folder.name}",
        [str(folder / "src" / source) for source in SOURCES["cuda"]],
        extra_cuda_cflags=CUDA_FLAGS,
        build_directory=str(folder),
        verbose=False,
    )


def build_all(names) -> None:
    """Build every candidate at once, each in its own process (one compiler each per file)."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); from kernel_variants import load_candidate; load_candidate(sys.argv[2])"
    jobs = {n: subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), n]) for n in names}
    failed = [n for n, job in jobs.items() if job.wait() != 0]
    if failed:
        raise SystemExit(f"kernel_variants.py: the candidates {failed} did not build (their compiler output is above)")


def run(size: int, args, names, device: str = "cuda") -> dict:
    """Every :data:`TIMED` kernel of every backend in ``names`` at one size; ``names[0]`` is the baseline."""
    g = torch.Generator(device=device).manual_seed(0)
    n = int(size * size * args.density)
    x = torch.randn(args.batch, args.channels, size, size, generator=g, device=device)
    sparse = SparseImage.from_dense(x, uniform_subset(args.batch, size, n, generator=g, device=device))
    dtype, baseline = getattr(torch, args.dtype), names[0]
    calls = {v: {k: c for k, (c, _) in kernels(sparse, args.kernel, v, dtype).items() if k in TIMED} for v in names}
    timed = {f"{baseline}/{k}": call for k, call in calls[baseline].items()}
    for v in names[1:]:
        for k, call in calls[v].items():
            ours, theirs = call().double(), calls[baseline][k]().double()
            difference = ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item()
            if difference <= TOLERANCE[args.dtype]:
                timed[f"{v}/{k}"] = call
            else:
                print(f"{size}²: {v} computes {k} {difference:.3g} (relative) away from {baseline}", file=sys.stderr)
    seconds = interleaved_medians(timed, args.repeats, device)
    on_gpu = {name: kernel_seconds(call, device) for name, call in timed.items()}
    rows = {}
    for k in TIMED:
        rows[k] = {
            v: timings(seconds, on_gpu, f"{v}/{k}", f"{baseline}/{k}")
            if f"{v}/{k}" in seconds
            else {"differs_from_csrc": True}
            for v in names
        }
    return {"size": size, "points": n, "kernels": rows}


def timings(seconds: dict, on_gpu: dict, name: str, baseline: str) -> dict:
    """One call's median wall time and, on a GPU, its kernels' own time (what a kernel change alters: the
    host's launch and synchronise, the same for every variant, would dilute the wall-time ratio), each
    with its ratio to ``csrc/``'s."""
    row = {"median_ms": 1e3 * seconds[name], "ratio_to_csrc": seconds[name] / seconds[baseline]}
    if on_gpu[name] and on_gpu[baseline]:
        row.update(kernel_ms=1e3 * on_gpu[name], kernel_ratio_to_csrc=on_gpu[name] / on_gpu[baseline])
    return row


def markdown(results: dict) -> str:
    names = results["variants"]
    lines = [
        f"CUDA kernel candidates against csrc/ ({results['dtype']}), B={results['batch']}, C={results['channels']}, "
        f"k={results['kernel']}, {results['density']:.3g} of the pixels, on {results['device_name']} "
        f"(torch {results['torch']}); median ms of a call (ratio to csrc/), and on a GPU the kernels' own ms "
        "in a profile (ratio to csrc/'s)",
        "",
        "| size | kernel | " + " | ".join("csrc/" if i == 0 else v for i, v in enumerate(names)) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for run_ in results["runs"]:
        for k, row in run_["kernels"].items():
            cells = ["differs" if "differs_from_csrc" in row[v] else _cell(row[v]) for v in names]
            lines.append(f"| {run_['size']}² | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(timing: dict) -> str:
    cell = f"{timing['median_ms']:.3f} ({timing['ratio_to_csrc']:.2f}×)"
    if "kernel_ms" in timing:
        cell += f"; kernels {timing['kernel_ms']:.3f} ({timing['kernel_ratio_to_csrc']:.2f}×)"
    return cell


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=sorted(CANDIDATES), choices=sorted(CANDIDATES))
    add_kernel_options(parser, sizes=[256, 512], batch=8, repeats=25)
    parser.add_argument("--dtype", choices=sorted(TOLERANCE), default="bfloat16")
    parser.add_argument("--device", default="cuda", choices=["cuda"], help="the candidates are CUDA kernels")
    parser.add_argument("--build-only", action="store_true", help="build the candidates, time nothing")
    args = parser.parse_args()
    try:  # every candidate must still apply to csrc/, also in a dry run
        with tempfile.TemporaryDirectory() as scratch:
            for name in args.candidates:
                candidate_sources(name, SOURCE_DIR, Path(scratch) / name)
    except ValueError as why:
        parser.error(str(why))
    if dry_run(args, "kernel_variants.py", candidates=args.candidates, sizes=args.sizes, dtype=args.dtype):
        return
    if not torch.cuda.is_available():
        parser.error("no CUDA device here: the candidates are CUDA kernels (--dry-run checks the arguments)")
    build_all(args.candidates)
    if args.build_only:
        return
    for name in args.candidates:
        backends.BACKENDS.register(
            name, backends.Backend(f"kernel candidate {name}", ("cuda",), lambda n=name: load_candidate(n))
        )
    names = [BASELINE, *args.candidates]
    results = {
        **environment("kernel_variants", "cuda"),
        **{key: getattr(args, key) for key in ("batch", "channels", "kernel", "density", "dtype")},
        "variants": names,
    }
    publish_each(results, (run(size, args, names) for size in args.sizes), markdown, args.out)


if __name__ == "__main__":
    main()
