"""The host's cost of an eager call of the compiled operators: their C++ autograd against the
``torch.library`` operators' Python autograd, side by side in one process.

On inputs small enough that the kernels' own work is a few microseconds, what a call costs is the
host's dispatch and autograd bookkeeping; a GPU step made of such calls is bound by it (the GPU idles
between launches).  Per operator (the table and window convolutions, the modulated layer norm), per
call, forward + backward and the forward alone under ``no_grad``:

* ``operator``: the ``torch.library`` operator and its Python autograd formula (inside
  :func:`infdiff.ops.backends.through_operators`; the path every eager call took before
  ``csrc/autograd_ops.h``, and the one ``torch.compile`` traces);
* ``eager``: the same kernels under the same formulas in C++ (:func:`~infdiff.ops.backends.differentiable`,
  the default of eager code);
* ``kernels``: the forward and backward kernels called directly, no autograd at all (the floor);

plus the whole route a model takes (``sparse_depthwise_conv``, the table cached on the image) and the
decoder's sparse front and back (``decoder_front_back.py``'s network with the U-Net skipped, a fresh
image per step), under each autograd.  Each timed call runs ``--calls`` times in a row (microsecond
calls are below the timer's noise); medians of interleaved rounds.

    python benchmarks/op_overhead.py --out benchmarks/results/op_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

from infdiff.ops import SparseImage, backends, sparse_depthwise_conv, uniform_subset
from infdiff.ops.backends import COMPILED_FOR, kernels, through_operators
from infdiff.ops.sparse_conv import inverse_normaliser, neighbour_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402  (sibling modules)
    add_dry_run,
    dry_run,
    environment,
    fraction,
    interleaved_medians,
    odd_side,
    positive,
    publish,
)
from decoder_front_back import PassThrough, decoder  # noqa: E402

AUTOGRADS = {"operator": through_operators, "eager": contextlib.nullcontext}


def repeated(fn, calls: int, autograd: str = "eager", grad: bool = True):
    def run():
        with AUTOGRADS[autograd](), torch.set_grad_enabled(grad):
            for _ in range(calls):
                fn()

    return run


def op_variants(side, batch, density, channels, kernel, backend, device, calls):
    """``name: run`` for every operator x path (``fwd_bwd`` and ``fwd``), one ``calls``-long burst each."""
    g = torch.Generator(device=device).manual_seed(0)
    points = max(1, int(side * side * density))
    index = uniform_subset(batch, side, points, generator=g, device=device)
    values = torch.randn(batch, points, channels, generator=g, device=device, requires_grad=True)
    weight = torch.randn(channels, kernel, kernel, generator=g, device=device, requires_grad=True)
    sparse = SparseImage(values, index, (side, side))
    flat, taps = values.detach().reshape(-1, channels).requires_grad_(), weight.detach().reshape(channels, -1)
    taps.requires_grad_()
    table = neighbour_table(sparse, (kernel, kernel), backend)
    scale = inverse_normaliser(sparse, (kernel, kernel), (kernel, kernel))
    window = (index.int(), sparse.index_map().int(), side, side, kernel, kernel)
    x = torch.randn(batch, points, channels, generator=g, device=device, requires_grad=True)
    affine = [torch.randn(batch, channels, generator=g, device=device, requires_grad=True) for _ in range(2)]
    module = kernels(backend)
    calls_of = {
        "gather_conv": lambda: backends.differentiable("gather_conv", backend)(flat, taps, table, scale, False),
        "window_conv": lambda: backends.differentiable("window_conv", backend)(flat, taps, *window, scale, False),
        "modulated_layer_norm": lambda: backends.differentiable("modulated_layer_norm", backend)(x, *affine, 1e-5)[0],
        "sparse_depthwise_conv": lambda: sparse_depthwise_conv(sparse, weight, backend=backend).values,
    }
    grads = {
        name: torch.randn(out.shape, generator=g, device=device)
        for name, out in ((n, f()) for n, f in calls_of.items())
    }
    floors = {  # the same kernels, no autograd: forward, then the backward's kernels
        "gather_conv": lambda: (
            module.gather_conv(flat, taps, table, scale, False),
            module.gather_conv(grads["gather_conv"], taps, table, scale, True),
            module.gather_conv_weight(grads["gather_conv"], flat, table, scale, False),
        ),
        "window_conv": lambda: (
            module.window_conv(flat, taps, *window, scale, False),
            module.window_conv(grads["window_conv"], taps, *window, scale, True),
            module.window_conv_weight(grads["window_conv"], flat, *window, scale, False),
        ),
        "modulated_layer_norm": lambda: module.modulated_layer_norm_backward(
            grads["modulated_layer_norm"], x, affine[0], *module.modulated_layer_norm(x, *affine, 1e-5)[1:]
        ),
    }
    variants = {}
    for name, call in calls_of.items():
        for autograd in AUTOGRADS:
            variants[f"{name}/fwd_bwd/{autograd}"] = repeated(
                lambda call=call, name=name: call().backward(grads[name]), calls, autograd
            )
            variants[f"{name}/fwd/{autograd}"] = repeated(call, calls, autograd, grad=False)
        if name in floors:
            variants[f"{name}/fwd_bwd/kernels"] = repeated(floors[name], calls, grad=False)
    return variants


def ops_table(args, backend) -> dict:
    cases = {}
    for side, batch in args.op_cases:
        variants = op_variants(side, batch, args.density, args.channels, args.kernel, backend, args.device, args.calls)
        seconds = interleaved_medians(variants, args.repeats, args.device)
        by_op = {}
        for name, s in seconds.items():
            op, direction, path = name.split("/")
            by_op.setdefault(op, {}).setdefault(direction, {})[path] = 1e6 * s / args.calls
        for directions in by_op.values():
            for timings in directions.values():
                timings["eager_over_operator"] = timings["eager"] / timings["operator"]
        cases[f"{side}x{side}_b{batch}"] = {"side": side, "batch": batch, "microseconds_per_call": by_op}
        print(f"{side}² batch {batch}: " + ", ".join(f"{k} {1e6 * v / args.calls:.1f} us" for k, v in seconds.items()))
    return cases


def front_back_table(args, backend) -> dict:
    size, batch = args.size, args.batch
    g = torch.Generator(device=args.device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g, device=args.device)
    t, z = torch.randint(0, 1000, (batch,), device=args.device), torch.randn(batch, 64, device=args.device)
    net = decoder(size, args.nf, args.blocks, args.device, backend)
    net.uno = PassThrough()
    index = uniform_subset(batch, size, int(size * size * args.fraction), generator=g, device=args.device)

    def step():
        net.zero_grad(set_to_none=True)
        net(SparseImage.from_dense(x, index), t, z).values.square().mean().backward()

    fns = {autograd: repeated(step, 1, autograd) for autograd in AUTOGRADS}
    seconds = interleaved_medians(fns, args.repeats, args.device)
    return {
        "size": size,
        "batch": batch,
        "fraction": args.fraction,
        "nf": args.nf,
        "blocks": args.blocks,
        "median_ms": {k: 1e3 * v for k, v in seconds.items()},
        "eager_over_operator": seconds["eager"] / seconds["operator"],
    }


def markdown(results: dict) -> str:
    lines = [
        f"Host cost of eager calls, backend {results['backend']}, on {results['device_name']} (torch "
        f"{results['torch']}, {results['threads']} threads), C={results['channels']}, k={results['kernel']}, "
        f"density {results['density']:g}; µs per call (eager over operator)",
        "",
        "| case | operator | direction | operator (Python autograd) | eager (C++ autograd) | kernels alone |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case, run in results["ops"].items():
        for op, directions in run["microseconds_per_call"].items():
            for direction, t in directions.items():
                floor = f"{t['kernels']:.1f}" if "kernels" in t else "–"
                lines.append(
                    f"| {case} | {op} | {direction} | {t['operator']:.1f} | {t['eager']:.1f} "
                    f"({t['eager_over_operator']:.2f}×) | {floor} |"
                )
    fb = results["front_back"]
    lines += [
        "",
        f"Decoder front and back (U-Net skipped), {fb['size']}², B={fb['batch']}, {fb['fraction']:g} of the pixels, "
        f"nf {fb['nf']}, {fb['blocks']} blocks, fwd+bwd: operator {fb['median_ms']['operator']:.2f} ms, eager "
        f"{fb['median_ms']['eager']:.2f} ms ({fb['eager_over_operator']:.3f}×)",
    ]
    return "\n".join(lines) + "\n"


def case(text: str):
    side, batch = (positive(int)(part) for part in text.split("x"))
    return side, batch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op-cases", type=case, nargs="+", default=[(8, 1), (64, 4)], help="SIDExBATCH")
    parser.add_argument("--density", type=fraction, default=0.25)
    parser.add_argument("--channels", type=positive(int), default=64)
    parser.add_argument("--kernel", type=odd_side, default=7)
    parser.add_argument("--calls", type=positive(int), default=20, help="calls per timed burst")
    parser.add_argument("--size", type=positive(int), default=32, help="the front/back's side")
    parser.add_argument("--batch", type=positive(int), default=1)
    parser.add_argument("--fraction", type=fraction, default=0.25)
    parser.add_argument("--nf", type=positive(int), default=64)
    parser.add_argument("--blocks", type=positive(int), default=3)
    parser.add_argument("--repeats", type=positive(int), default=30)
    parser.add_argument(
        "--device", choices=sorted(COMPILED_FOR), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)
    args = parser.parse_args()
    backend = COMPILED_FOR[args.device]
    if dry_run(args, "op_overhead.py", device=args.device, backend=backend, cases=args.op_cases, size=args.size):
        return
    results = {
        **environment("eager_call_host_cost", args.device),
        "backend": backend,
        "density": args.density,
        "channels": args.channels,
        "kernel": args.kernel,
        "calls_per_burst": args.calls,
        "ops": ops_table(args, backend),
        "front_back": front_back_table(args, backend),
    }
    publish(results, markdown, args.out)


if __name__ == "__main__":
    main()
