"""Sparse depthwise convolution (forward + backward) against the dense masked route.

All variants run in one process, interleaved round-robin, on the same data: B images with C
channels keep ``density`` of their pixels; a k×k depthwise kernel is applied with the
∞-Diff Monte-Carlo normalisation.  Variants:

* ``sparse``: :func:`infdiff.ops.sparse_depthwise_conv` (loop over offsets, gathers recomputed
  in backward);
* ``dense_masked``: scatter the points into a zero grid, channels-last depthwise ``F.conv2d``
  on the full grid plus the normalising conv, gather back (what a dense implementation must do);
* ``dense_conv_only``: the dense conv alone on a ready channels-last grid (a lower bound for
  the dense route, ignoring its scatter/gather);
* ``gather_nkc``: the naive sparse route that materialises an ``(N, k², C)`` neighbour tensor.

Reported per variant: median wall time, ratio to ``dense_masked`` and the bytes autograd
keeps for backward (counted with saved-tensor hooks: deterministic, device-independent).
On a GPU, peak allocated memory is reported too.

    python benchmarks/sparse_conv.py --sizes 64 128 --out benchmarks/results/sparse_conv_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from infdiff.ops import SparseImage, dense_depthwise_conv, neighbour_table, sparse_depthwise_conv, uniform_subset


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves while running ``fn`` (shared storages counted once)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def make_variants(sparse: SparseImage, weight: torch.Tensor):
    c = sparse.channels
    k = weight.shape[-1]
    values = sparse.values.clone().requires_grad_()

    def sparse_route():
        out = sparse_depthwise_conv(sparse.with_values(values), weight)
        return out.values

    def dense_masked():
        dense = sparse.with_values(values).to_dense()
        out = dense_depthwise_conv(dense * sparse.mask(), weight)
        masked_norm = F.conv2d(sparse.mask(), torch.ones(1, 1, k, k, device=dense.device), padding=k // 2)
        full_norm = F.conv2d(
            torch.ones_like(sparse.mask()), torch.ones(1, 1, k, k, device=dense.device), padding=k // 2
        )
        out = out * (full_norm / masked_norm.clamp_min(1))
        return out.flatten(2).gather(2, sparse.index.unsqueeze(1).expand(-1, c, -1))

    grid = sparse.to_dense().contiguous(memory_format=torch.channels_last).requires_grad_()

    def dense_conv_only():
        return F.conv2d(grid, weight.unsqueeze(1), padding=k // 2, groups=c)

    table = neighbour_table(sparse, (k, k)).long()

    def gather_nkc():
        padded = torch.cat((values.reshape(-1, c), values.new_zeros(1, c)))
        neighbours = padded[table.t()]
        return (neighbours * weight.reshape(c, -1).t()).sum(1)

    return {
        "sparse": sparse_route,
        "dense_masked": dense_masked,
        "dense_conv_only": dense_conv_only,
        "gather_nkc": gather_nkc,
    }


def run(size: int, batch: int, channels: int, kernel: int, density: float, repeats: int, device: str):
    g = torch.Generator(device=device).manual_seed(0)
    n = int(size * size * density)
    x = torch.randn(batch, channels, size, size, generator=g, device=device)
    sparse = SparseImage.from_dense(x, uniform_subset(batch, size, n, generator=g, device=device))
    weight = torch.randn(channels, kernel, kernel, generator=g, device=device, requires_grad=True)
    variants = make_variants(sparse, weight)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(fn):
        out = fn()
        out.backward(torch.ones_like(out))

    times = {name: [] for name in variants}
    peaks = {}
    for name, fn in variants.items():
        step(fn)
    for _ in range(repeats):
        for name, fn in variants.items():
            sync()
            start = time.perf_counter()
            step(fn)
            sync()
            times[name].append(time.perf_counter() - start)
    for name, fn in variants.items():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step(fn)
            peaks[name] = torch.cuda.max_memory_allocated() - base
    baseline = statistics.median(times["dense_masked"])
    return {
        "size": size,
        "batch": batch,
        "channels": channels,
        "kernel": kernel,
        "density": density,
        "points": n,
        "variants": {
            name: {
                "median_ms": 1e3 * statistics.median(t),
                "ratio_to_dense_masked": statistics.median(t) / baseline,
                "autograd_saved_bytes": saved_bytes(variants[name]),
                **({"peak_cuda_bytes": peaks[name]} if name in peaks else {}),
            }
            for name, t in times.items()
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--density", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    results = {
        "benchmark": "sparse_depthwise_conv_fwd_bwd",
        "device": args.device,
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "runs": [
            run(s, args.batch, args.channels, args.kernel, args.density, args.repeats, args.device) for s in args.sizes
        ],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
