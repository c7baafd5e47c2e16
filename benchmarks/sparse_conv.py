"""Sparse depthwise convolution (forward + backward) against the dense routes, per backend.

All variants run in one process, interleaved round-robin, on the same data: B images with C
channels keep ``density`` of their pixels; a k×k depthwise kernel is applied with the
∞-Diff Monte-Carlo normalisation.  Variants:

* ``sparse_<backend>``: :func:`infdiff.ops.sparse_depthwise_conv` with each backend that runs on
  the device (``torch``: the reference looping over offsets; ``cpp`` / ``cuda``: ``csrc/``), over
  the neighbour table cached on the image (built once per batch and shared by a network's convs);
* ``sparse_<backend>_table_per_call`` (compiled backends): the same, building the table every call
  (a lone convolution);
* ``sparse_<backend>_window`` (compiled backends): neighbours looked up in the index map inside the
  kernels (``neighbours="window"``: no table at all);
* ``sparse_<backend>_separate_normaliser`` (compiled backends): the cached-table route with the
  Monte-Carlo normaliser applied as its own elementwise pass, forward and backward, instead of
  inside the kernels (how it was done before they took it as a row scale);
* ``dense_masked``: scatter the points into a zero grid, channels-last depthwise ``F.conv2d``
  on the full grid plus the normalising conv, gather back (what a dense implementation must do);
* ``dense_conv_only``: the dense conv alone on a ready channels-last grid (a lower bound for
  the dense route, ignoring its scatter/gather);
* ``gather_nkc`` (``--naive``): the naive sparse route materialising an ``(N, k², C)`` tensor.

Reported per variant: median wall time, its ratios to ``dense_masked`` and ``dense_conv_only``
and the bytes autograd keeps for backward (counted with saved-tensor hooks: deterministic,
device-independent), in all and beyond the neighbour table, which a network builds once per
batch and shares between all its convolutions; on a GPU also peak allocated memory and, for the sparse kernels, the
achieved bandwidth of their compulsory traffic (values, output, gradients and table, each once)
as a fraction of the device's peak, and from one profiled call each the kernels it launched
(``gpu_kernels``) and the share of its wall time they ran (``gpu_busy``: well below 1, the host's
launches bound the call).  A Markdown table is written next to the JSON.

    python benchmarks/sparse_conv.py --sizes 64 128 256 --densities 1 0.5 0.25 0.125 \
        --out benchmarks/results/sparse_conv_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from infdiff.ops import (
    SparseImage,
    dense_depthwise_conv,
    neighbour_table,
    sparse_depthwise_conv,
    uniform_subset,
)
from infdiff.ops import backends as ops
from infdiff.ops.sparse_conv import inverse_normaliser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402  (sibling modules)
    add_dry_run,
    dry_run,
    backends_for,
    environment,
    interleaved_medians,
    peak_bandwidth,
    peak_bytes,
    publish_each,
)
from step_breakdown import profiled_fractions  # noqa: E402


def saved_bytes(fn, shared=()) -> int:
    """Bytes of the tensors autograd saves while running ``fn`` (shared storages counted once), leaving
    out the storages of ``shared`` (the cached neighbour table, one for every conv of a network)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(
        size for pointer, size in seen.items() if pointer not in {t.untyped_storage().data_ptr() for t in shared}
    )


def make_variants(sparse: SparseImage, weight: torch.Tensor, backends, naive: bool):
    c = sparse.channels
    k = weight.shape[-1]
    values = sparse.values.clone().requires_grad_()

    def sparse_route(backend, neighbours="table", fresh=False):
        def route():
            image = SparseImage(values, sparse.index, sparse.size) if fresh else sparse.with_values(values)
            return sparse_depthwise_conv(image, weight, backend=backend, neighbours=neighbours).values

        return route

    def separate_normaliser(backend):
        def route():
            image = sparse.with_values(values)
            table = neighbour_table(image, (k, k), backend)
            out = ops.gather_conv(values.reshape(-1, c), weight.reshape(c, k * k), table, None, False, backend)
            return out * inverse_normaliser(image, (k, k), (k, k)).unsqueeze(1).to(out.dtype)

        return route

    def dense_masked():
        dense = sparse.with_values(values).to_dense()
        out = dense_depthwise_conv(dense * sparse.mask(), weight)
        masked_norm = F.conv2d(
            sparse.mask(), torch.ones(1, 1, k, k, device=dense.device, dtype=dense.dtype), padding=k // 2
        )
        full_norm = F.conv2d(
            torch.ones_like(sparse.mask()),
            torch.ones(1, 1, k, k, device=dense.device, dtype=dense.dtype),
            padding=k // 2,
        )
        out = out * (full_norm / masked_norm.clamp_min(1))
        return out.flatten(2).gather(2, sparse.index.unsqueeze(1).expand(-1, c, -1))

    grid = sparse.to_dense().contiguous(memory_format=torch.channels_last).requires_grad_()

    def dense_conv_only():
        return F.conv2d(grid, weight.unsqueeze(1), padding=k // 2, groups=c)

    table = neighbour_table(sparse, (k, k), "torch").long()

    def gather_nkc():
        padded = torch.cat((values.reshape(-1, c), values.new_zeros(1, c)))
        neighbours = padded[table.t()]
        return (neighbours * weight.reshape(c, -1).t()).sum(1)

    variants = {f"sparse_{name}": sparse_route(name) for name in backends}
    for name in (b for b in backends if b != "torch"):
        variants[f"sparse_{name}_table_per_call"] = sparse_route(name, fresh=True)
        variants[f"sparse_{name}_window"] = sparse_route(name, "window")
        variants[f"sparse_{name}_separate_normaliser"] = separate_normaliser(name)
    variants.update(dense_masked=dense_masked, dense_conv_only=dense_conv_only)
    if naive:
        variants["gather_nkc"] = gather_nkc
    return variants


def compulsory_bytes(points: int, channels: int, kernel: int, element: int) -> int:
    """Forward and backward each read their inputs and write their outputs once: values, output,
    grad out, grad in (``4 M C`` elements), the table twice (``2 k² M`` int32) and the weights."""
    return element * (4 * points * channels + 2 * kernel * kernel * channels) + 4 * 2 * kernel * kernel * points


def run(size, batch, channels, kernel, density, repeats, device, backends, naive=False, dtype=torch.float32):
    g = torch.Generator(device=device).manual_seed(0)
    n = int(size * size * density)
    x = torch.randn(batch, channels, size, size, generator=g, device=device).to(dtype)
    sparse = SparseImage.from_dense(x, uniform_subset(batch, size, n, generator=g, device=device))
    weight = torch.randn(channels, kernel, kernel, generator=g, device=device).to(dtype).requires_grad_()
    variants = make_variants(sparse, weight, backends, naive)
    table = neighbour_table(sparse, (kernel, kernel), "torch")

    def step(fn):
        def run_step():
            out = fn()
            out.backward(torch.ones_like(out))

        return run_step

    steps = {name: step(fn) for name, fn in variants.items()}
    seconds = interleaved_medians(steps, repeats, device)
    peaks = {name: peak_bytes(fn, device) for name, fn in steps.items()} if device == "cuda" else {}
    # what one call launches and how much of its wall time the GPU computes (one profiled call each)
    launches = {
        name: profiled_fractions(fn, torch.device(device))[1] if device == "cuda" else {} for name, fn in steps.items()
    }
    baseline, bare = seconds["dense_masked"], seconds["dense_conv_only"]
    peak = peak_bandwidth(device)
    traffic = compulsory_bytes(batch * n, channels, kernel, x.element_size())

    def bandwidth(name, seconds):
        if peak is None or not name.startswith("sparse_"):
            return {}
        return {"achieved_bandwidth_fraction": traffic / seconds / peak}

    return {
        "size": size,
        "batch": batch,
        "channels": channels,
        "kernel": kernel,
        "density": density,
        "points": n,
        "variants": {
            name: {
                "median_ms": 1e3 * t,
                "ratio_to_dense_masked": t / baseline,
                "ratio_to_dense_conv_only": t / bare,
                "autograd_saved_bytes": saved_bytes(variants[name]),
                "autograd_saved_bytes_beyond_the_shared_table": saved_bytes(variants[name], shared=[table]),
                **({"peak_cuda_bytes": peaks[name]} if name in peaks else {}),
                **launches[name],
                **bandwidth(name, t),
            }
            for name, t in seconds.items()
        },
    }


def markdown(results: dict) -> str:
    """One row per (size, density): each variant's median ms and its ratio to the bare dense conv."""
    names = list(results["runs"][0]["variants"])
    lines = [
        f"Sparse depthwise conv fwd+bwd, {results['dtype']}, on {results['device_name']} ({results['device']}, "
        f"torch {results['torch']}, "
        f"{results['threads']} threads), B={results['runs'][0]['batch']}, C={results['runs'][0]['channels']}, "
        f"k={results['runs'][0]['kernel']}; median ms (ratio to dense_conv_only)",
        "",
        "| size | density | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for run_ in results["runs"]:
        cells = [f"{v['median_ms']:.2f} ({v['ratio_to_dense_conv_only']:.2f}×)" for v in run_["variants"].values()]
        lines.append(f"| {run_['size']}² | {run_['density']:.3g} | " + " | ".join(cells) + " |")
    if "gpu_kernels" in results["runs"][0]["variants"][names[0]]:
        lines += ["", "Kernels one call launches (the GPU's busy share of that call's wall time)", ""]
        lines += [
            "| size | density | " + " | ".join(names) + " |",
            "| --- | --- | " + " | ".join("---" for _ in names) + " |",
        ]
        for run_ in results["runs"]:
            cells = [f"{v['gpu_kernels']} ({v['gpu_busy']:.2f})" for v in run_["variants"].values()]
            lines.append(f"| {run_['size']}² | {run_['density']:.3g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.125])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--naive", action="store_true", help="also time the (N, k², C) gather (slow, large)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)
    args = parser.parse_args()
    if dry_run(
        args, "sparse_conv.py", device=args.device, dtype=args.dtype, sizes=args.sizes, densities=args.densities
    ):
        return
    backends = backends_for(args.device)

    def runs():
        for size in args.sizes:
            for density in args.densities:
                options = (args.batch, args.channels, args.kernel, density, args.repeats, args.device, backends)
                result = run(size, *options, args.naive, getattr(torch, args.dtype))
                times = ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in result["variants"].items())
                print(f"{size}² at {density:.3g}: {times}")
                yield result

    header = {**environment("sparse_depthwise_conv_fwd_bwd", args.device), "dtype": args.dtype}
    publish_each(header, runs(), markdown, args.out)


if __name__ == "__main__":
    main()
