"""What every benchmark script here shares: the device's name, the kernel backends that run on it,
interleaved median timing, peak memory of one call, the header of every result (device, versions,
date, commit), and writing the results as JSON with a Markdown table beside it."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import torch

from infdiff.io import atomic_write_text
from infdiff.ops import BACKENDS, resolve_backend


def positive(kind: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type: ``kind`` of the text, which must be above zero (sizes, counts, repeats)."""

    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number above zero, got {text}")
        return value

    return parse


def fraction(text: str) -> float:
    """An argparse type: a fraction of the pixels, in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def odd_side(text: str) -> int:
    """An argparse type: an odd kernel side of at least 1."""
    value = int(text)
    if value < 1 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd kernel side, got {text}")
    return value


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    """``--dry-run``: check the arguments (and configs), say what would run, run nothing: how
    ``gpu_check.sh`` is checked on a machine without a GPU before GPU time is spent on it."""
    parser.add_argument("--dry-run", action="store_true", help="check the arguments, say what would run, run nothing")


def dry_run(args: argparse.Namespace, script: str, **plan) -> bool:
    """With ``--dry-run``: one line of what ``script`` would run; True when the caller should stop there."""
    if not args.dry_run:
        return False
    print(f"dry run: {script} would run " + ", ".join(f"{key}={value}" for key, value in plan.items()))
    return True


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``) and core count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}  # bytes/s of the SXM parts (HBM)


def peak_bandwidth(device: str) -> Optional[float]:
    """The memory bandwidth the device's data sheet gives (bytes/s), for the GPUs in ``PEAK_BANDWIDTH``."""
    name = device_name(device)
    return next((v for key, v in PEAK_BANDWIDTH.items() if device == "cuda" and key in name), None)


def backends_for(device: str) -> list:
    """The backends that run on ``device`` here (a compiled one only when it builds)."""
    usable = []
    for name in BACKENDS.names():
        try:
            usable.append(resolve_backend(name, torch.device(device).type))
        except (ValueError, RuntimeError):
            pass
    return usable


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def interleaved_medians(fns: Dict[str, Callable[[], object]], repeats: int, device: str) -> Dict[str, float]:
    """Median seconds of each call after one warm-up, the variants taking turns, so drifts of a shared
    machine touch all of them alike.  Each round runs them in a fresh order (seeded, so runs repeat):
    in a fixed one, each variant would always find the caches as the same predecessor left them."""
    sync = synchronizer(device)
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    order = random.Random(0)
    for _ in range(repeats):
        for name, fn in order.sample(list(fns.items()), len(fns)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def cuda_kernel_events(profile) -> list:
    """The device's records in a finished ``torch.profiler`` profile: every kernel, copy and fill the
    GPU ran, with its start and end on the GPU's clock (CUPTI's), apart from the host's calls and from
    the GPU-side spans of ``record_function`` ranges, which cover kernels already counted."""
    return [
        e
        for e in profile.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
    ]


def kernel_seconds(fn: Callable[[], object], device: str, calls: int = 5) -> Optional[float]:
    """Seconds per call that the GPU spends running ``fn``'s kernels (and copies), from a profile of
    ``calls`` calls after a warm-up; ``None`` off a GPU.  Neither the host's launches nor the GPU's idle
    gaps between kernels count, so traffic over this time is what the kernels themselves achieve, where
    a wall-clock time around a small call measures mostly its launch and synchronisation."""
    if device != "cuda":
        return None
    fn()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return sum(e.time_range.elapsed_us() for e in cuda_kernel_events(profile)) / 1e6 / calls


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak bytes allocated during one call: CUDA's allocator statistics, or on the CPU the tensors'
    own (:class:`infdiff.pipeline.memory.PeakTensorBytes`)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base
    from infdiff.pipeline.memory import PeakTensorBytes

    with PeakTensorBytes() as peak:
        fn()
    return peak.peak


def cudagraph_skips(fns: Dict[str, Callable[[], object]]) -> Dict[str, int]:
    """Call each of ``fns`` once (a warm-up, which compiles a compiled one) and count the graphs inductor
    then declined to replay as CUDA graphs (``counters["inductor"]["cudagraph_skips"]``; its log says
    why): 0 for a variant in a CUDA-graph mode means all of it replays, so its time is the graphs'."""
    from torch._dynamo.utils import counters

    skips = {}
    for name, fn in fns.items():
        before = counters["inductor"]["cudagraph_skips"]
        fn()
        skips[name] = counters["inductor"]["cudagraph_skips"] - before
    return skips


def source_commit() -> str:
    """The commit measured: ``$COMMIT`` when set (a copy of the tree without its git directory, as on a
    device machine), else this checkout's ``HEAD``, marked ``+changes`` when tracked files differ from it."""
    if os.environ.get("COMMIT"):
        return os.environ["COMMIT"]
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")


def environment(benchmark: str, device: str) -> dict:
    """The header of every result: which benchmark, on what, with which torch and thread count, when
    and at which commit."""
    return {
        "benchmark": benchmark,
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "commit": source_commit(),
    }


def publish(results: dict, table: Callable[[dict], str], out: Optional[Path], echo: bool = True) -> None:
    """Print the Markdown table (with the date and commit of an :func:`environment` header under it; not
    with ``echo=False``) and, with ``out``, write the JSON there and the table beside it (``.md``), each
    atomically: a run stopped by a time limit leaves the last complete results, never half a file."""
    text = table(results)
    if "commit" in results:
        text += f"\nMeasured {results['date']} at commit {results['commit']}.\n"
    if echo:
        print(text)
    if out:
        atomic_write_text(json.dumps(results, indent=2) + "\n", out, fsync=False)
        atomic_write_text(text, out.with_suffix(".md"), fsync=False)


def publish_each(results: dict, runs: Iterable[dict], table: Callable[[dict], str], out: Optional[Path]) -> None:
    """Append each of ``runs`` (computed one at a time) to ``results["runs"]`` and rewrite the JSON and table
    after each, so a benchmark cut short by a time limit keeps what it measured; the table is echoed at the end."""
    results["runs"] = []
    for run in runs:
        results["runs"].append(run)
        publish(results, table, out, echo=False)
    publish(results, table, out)
