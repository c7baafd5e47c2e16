"""Each kernel of the sparse convolution alone, at a training step's shapes: where its time goes.

A convolution's forward and backward run three kernels: the forward gather, the transposed gather
(the values' gradient, ``flip``) and the weight gradient, each with the normaliser's inverse as a
row scale; once per image, shared by a network's convolutions, the neighbour table is built.  With
``neighbours=window`` the three look neighbours up in the index map instead.  Each is timed alone
(interleaved, median after a warm-up) with the compiled backend of the device, beside a copy of the
values (the same bytes read and written once: what the memory system gives such an array here).

For each kernel, the bytes it has to move at least: every input read once and every output written
once (values or gradients ``M C``, the int32 table ``k² M`` or the index map, the float32 scale
``M``), and that traffic's rate, also as a fraction of the device's peak bandwidth on a GPU; for the
three convolutions also their arithmetic rate, ``2 k² M C`` floating-point operations (a multiply
and an add per tap, point and channel).  A kernel far from both ceilings is bound by something
else (its gathers' cache misses, latency, the table's rows re-read per channel block).

On a GPU the median of one call is a wall-clock time around a launch and a synchronise, tens of
microseconds of the host's that a kernel of about as long cannot hide (the H200's copy of the values
reached 13-29 % of the bandwidth that way), so each kernel is also profiled (``kernel_ms``: the GPU's
own time in its kernels, :func:`bench_common.kernel_seconds`) and its traffic over that time is the
bandwidth it reaches (``kernel_bandwidth_fraction``), the figure the issue's 50 % target means.
Beside it, for the three convolutions, the bytes a direct gather moves through the caches
(``gathered_bytes``: a row per present neighbour, a lookup per tap, the output rows; about ``k² d``
times the compulsory bytes at density ``d``) and their rate: a kernel that reads its neighbours from
L2 is bound by that traffic over L2's bandwidth long before DRAM's.

    python benchmarks/sparse_kernels.py --sizes 128 256 --density 0.25 \
        --out benchmarks/results/sparse_kernels_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

from infdiff.ops import SparseImage, neighbour_table, resolve_backend, uniform_subset
from infdiff.ops import backends as ops
from infdiff.ops.backends import COMPILED_FOR
from infdiff.ops.sparse_conv import inverse_normaliser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402  (sibling modules)
    add_dry_run,
    dry_run,
    environment,
    fraction,
    interleaved_medians,
    kernel_seconds,
    peak_bandwidth,
    odd_side,
    positive,
    publish_each,
)


def gathered_bytes(sparse: SparseImage, table: torch.Tensor, dtype: torch.dtype) -> int:
    """The bytes a direct gather of one convolution moves through the caches: a row of ``C`` values for
    every present (point, tap) pair, every tap's neighbour lookup (4 bytes) and every output row.  Each
    present row is gathered by up to ``k²`` points, so this exceeds the compulsory bytes about ``k² d``
    times (``d`` the density); DRAM need serve only the compulsory ones, L2 or L1 the rest, so a kernel
    reading its neighbours from L2 is bound by this traffic over L2's bandwidth."""
    m, c, e = table.shape[1], sparse.channels, torch.finfo(dtype).bits // 8
    present = int((table < m).sum())
    return present * c * e + 4 * table.numel() + m * c * e


def kernels(sparse: SparseImage, kernel: int, backend: str, dtype: torch.dtype) -> dict:
    """``name: (call, compulsory bytes)`` for every kernel of one convolution on ``sparse``."""
    m, c = sparse.batch * sparse.num_points, sparse.channels
    (h, w), taps, e = sparse.size, kernel * kernel, torch.finfo(dtype).bits // 8
    g = torch.Generator(device=sparse.values.device).manual_seed(1)
    values = sparse.values.reshape(m, c).to(dtype).contiguous()
    grad = torch.randn(m, c, generator=g, device=values.device).to(dtype)
    weight = torch.randn(c, taps, generator=g, device=values.device).to(dtype)
    table = neighbour_table(sparse, (kernel, kernel), backend)
    scale = inverse_normaliser(sparse, (kernel, kernel), (kernel, kernel))
    index, index_map = sparse.index.to(torch.int32), sparse.index_map().to(torch.int32)
    window = (index, index_map, h, w, kernel, kernel)
    rows, by_table, by_window = 2 * m * c * e, 4 * taps * m + 4 * m, 4 * m + 4 * sparse.batch * h * w
    return {
        "values_copy": (values.clone, rows),
        "gather_conv": (lambda: ops.gather_conv(values, weight, table, scale, False, backend), rows + by_table),
        "gather_conv_transposed": (lambda: ops.gather_conv(grad, weight, table, scale, True, backend), rows + by_table),
        "gather_conv_weight": (
            lambda: ops.gather_conv_weight(grad, values, table, scale, False, backend),
            rows + by_table,
        ),
        "window_conv": (lambda: ops.window_conv(values, weight, *window, scale, False, backend), rows + by_window),
        "window_conv_transposed": (
            lambda: ops.window_conv(grad, weight, *window, scale, True, backend),
            rows + by_window,
        ),
        "window_conv_weight": (
            lambda: ops.window_conv_weight(grad, values, *window, scale, False, backend),
            rows + by_window,
        ),
        "neighbour_table": (
            lambda: ops.neighbour_table(sparse.index, sparse.index_map(), h, w, kernel, kernel, backend),
            8 * m + 8 * sparse.batch * h * w + 4 * taps * m,
        ),
    }


def arithmetic(name: str, points: int, channels: int, kernel: int) -> int:
    """Floating-point operations of a convolution kernel (none for the copy and the table)."""
    return 2 * kernel * kernel * points * channels if "conv" in name else 0


def run(size: int, args, backend: str) -> dict:
    g = torch.Generator(device=args.device).manual_seed(0)
    n = int(size * size * args.density)
    x = torch.randn(args.batch, args.channels, size, size, generator=g, device=args.device)
    sparse = SparseImage.from_dense(x, uniform_subset(args.batch, size, n, generator=g, device=args.device))
    dtype = getattr(torch, args.dtype)
    calls = kernels(sparse, args.kernel, backend, dtype)
    gathered = gathered_bytes(sparse, neighbour_table(sparse, (args.kernel, args.kernel), backend), dtype)
    seconds = interleaved_medians({name: call for name, (call, _) in calls.items()}, args.repeats, args.device)
    on_gpu = {name: kernel_seconds(call, args.device) for name, (call, _) in calls.items()}
    peak = peak_bandwidth(args.device)
    rows = {}
    for name, (_, traffic) in calls.items():
        rate = traffic / seconds[name]
        rows[name] = {
            "median_ms": 1e3 * seconds[name],
            "compulsory_bytes": traffic,
            "bytes_per_second": rate,
            "ratio_to_values_copy": seconds[name] / seconds["values_copy"],
            "flops_per_second": arithmetic(name, args.batch * n, args.channels, args.kernel) / seconds[name],
            **({"bandwidth_fraction": rate / peak} if peak else {}),
            **kernel_rates(traffic, on_gpu[name], on_gpu["values_copy"], peak),
            **(gather_rates(gathered, seconds[name], on_gpu[name]) if "conv" in name else {}),
        }
    return {"size": size, "points": n, "kernels": rows}


def gather_rates(gathered: int, seconds: float, kernel_seconds: Optional[float]) -> dict:
    """The gathered bytes (:func:`gathered_bytes`) per second of a convolution kernel, over its wall time
    and, on a GPU, over its kernels' own time: to hold against the bandwidth of the cache that serves them."""
    rates = {"gathered_bytes": gathered, "gathered_bytes_per_second": gathered / seconds}
    if kernel_seconds:
        rates["kernel_gathered_bytes_per_second"] = gathered / kernel_seconds
    return rates


def kernel_rates(traffic: int, seconds: Optional[float], copy_seconds: Optional[float], peak: Optional[float]) -> dict:
    """The compulsory traffic's rate over the GPU's own time in the kernels (:func:`kernel_seconds`), where a
    profile gave one: the bandwidth the kernels reach, apart from the launch and synchronisation that a
    wall-clock median of one call includes."""
    if not seconds:
        return {}
    return {
        "kernel_ms": 1e3 * seconds,
        **({"kernel_ratio_to_values_copy": seconds / copy_seconds} if copy_seconds else {}),
        **({"kernel_bandwidth_fraction": traffic / seconds / peak} if peak else {}),
    }


def markdown(results: dict) -> str:
    lines = [
        f"Sparse-convolution kernels alone ({results['backend']}, {results['dtype']}), B={results['batch']}, "
        f"C={results['channels']}, k={results['kernel']}, {results['density']:.3g} of the pixels, on "
        f"{results['device_name']} (torch {results['torch']}); median ms of a call, compulsory traffic's rate, "
        "time over a copy of the values; on a GPU also the kernels' own time in a profile, and the same over it",
        "",
        "| size | kernel | ms | GB/s | × the copy | fraction of peak bandwidth | GFLOP/s "
        "| kernels' ms | × the copy's | fraction of peak | gathered GB/s (kernels' time) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run_ in results["runs"]:
        for name, v in run_["kernels"].items():
            flops = f"{v['flops_per_second'] / 1e9:.1f}" if v["flops_per_second"] else "–"
            cells = [
                f"{v['median_ms']:.3f}",
                f"{v['bytes_per_second'] / 1e9:.1f}",
                f"{v['ratio_to_values_copy']:.1f}",
                _cell(v, "bandwidth_fraction", ".2f"),
                flops,
                _cell(v, "kernel_ms", ".3f"),
                _cell(v, "kernel_ratio_to_values_copy", ".1f"),
                _cell(v, "kernel_bandwidth_fraction", ".2f"),
                _gathered(v),
            ]
            lines.append(f"| {run_['size']}² | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "–"


def _gathered(row: dict) -> str:
    if "gathered_bytes_per_second" not in row:
        return "–"
    cell = f"{row['gathered_bytes_per_second'] / 1e9:.1f}"
    if "kernel_gathered_bytes_per_second" in row:
        cell += f" ({row['kernel_gathered_bytes_per_second'] / 1e9:.1f})"
    return cell


def add_kernel_options(parser: argparse.ArgumentParser, sizes, batch: int, repeats: int) -> None:
    """The options of a kernel-by-kernel benchmark (this one and ``kernel_variants.py``)."""
    parser.add_argument("--sizes", type=positive(int), nargs="+", default=sizes)
    parser.add_argument("--density", type=fraction, default=0.25)
    parser.add_argument("--batch", type=positive(int), default=batch)
    parser.add_argument("--channels", type=positive(int), default=64)
    parser.add_argument("--kernel", type=odd_side, default=7, help="odd kernel side")
    parser.add_argument("--repeats", type=positive(int), default=repeats)
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_kernel_options(parser, sizes=[128, 256], batch=4, repeats=21)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=sorted(COMPILED_FOR)
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = parser.parse_args()
    if dry_run(args, "sparse_kernels.py", device=args.device, dtype=args.dtype, sizes=args.sizes, batch=args.batch):
        return
    try:
        backend = resolve_backend(COMPILED_FOR[args.device], args.device)
    except (RuntimeError, ValueError) as why:  # the kernels do not build here
        parser.error(str(why))
    results = {
        **environment("sparse_kernels", args.device),
        **{key: getattr(args, key) for key in ("batch", "channels", "kernel", "density", "dtype")},
        "backend": backend,
    }
    publish_each(results, (run(size, args, backend) for size in args.sizes), markdown, args.out)


if __name__ == "__main__":
    main()
