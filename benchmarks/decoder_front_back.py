"""The decoder's sparse front and back (everything but the coarse-grid U-Net) on a fraction of the pixels
against its dense path on all of them, per backend.

Front and back: lift, the sparse residual blocks before and after the grid, the kNN lift onto the
grid, the bilinear return and the projection.  The U-Net in between is replaced by a pass-through
(its cost does not depend on the pixels kept), so what is timed is exactly the part that training
on a subset should make cheaper.  Forward + backward, interleaved in one process, median after a
warm-up; peak tensor bytes of one step; the computing operators one step dispatches, and on a GPU the
kernels it launches and their busy share of its wall time (from one profiled step): a step whose time
does not follow its pixels, with the GPU idle most of it, is bound by the host launching its operators.

With ``--compile MODE`` every variant also runs compiled whole (``train.compile_scope=network``, as
training compiles it), named with a ``_compiled`` suffix, interleaved with the eager ones: its
``ratio_to_dense`` is to the compiled dense path and ``ratio_to_eager`` to its eager twin.
``reduce-overhead`` replays each forward and backward as CUDA graphs, which removes the host's
per-operator cost.  Operator counts and (on the CPU) peak bytes are left out for compiled variants,
whose fused kernels a dispatch mode does not see.  On a GPU in a CUDA-graph mode each compiled variant
reports ``cudagraph_skips``, the graphs inductor declined to replay as CUDA graphs (0: all of them replay).

Sampling throughput at large sides, with a config's whole decoder, is ``decode_step.py``.

    python benchmarks/decoder_front_back.py --out benchmarks/results/decoder_front_back_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from infdiff.nn import SparseUNet
from infdiff.ops import SparseImage, uniform_subset
from infdiff.train.compile import COMPILE_MODES, CUDA_GRAPH_MODES, begin_step, compile_parts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (
    add_dry_run,
    dry_run,
    backends_for,
    cudagraph_skips,
    environment,
    interleaved_medians,
    peak_bytes,
    publish,
)  # noqa: E402  (sibling modules)
from step_breakdown import dispatched_operators, profiled_fractions  # noqa: E402


class PassThrough(nn.Module):
    """Stands in for the U-Net: returns the grid it is given."""

    def forward(self, x, *args, **kwargs):
        return x


def decoder(size: int, nf: int, blocks: int, device: str, backend: str = "auto") -> SparseUNet:
    torch.manual_seed(0)
    uno = dict(base_channels=64, channel_mults=(1, 2), attn_resolutions=(size // 4,), num_groups=8)
    net = SparseUNet(
        channels=3,
        train_size=size,
        nf=nf,
        time_dim=128,
        z_dim=64,
        num_conv_blocks=blocks,
        uno_res=size // 2,
        uno_channels=64,
        uno=uno,
        backend=backend,
    )
    return net.to(device)


def front_back(args, backends) -> dict:
    size, batch = args.size, args.batch
    g = torch.Generator(device=args.device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g, device=args.device)
    t, z = torch.randint(0, 1000, (batch,), device=args.device), torch.randn(batch, 64, device=args.device)

    def network(backend, mode):
        net = decoder(size, args.nf, args.blocks, args.device, backend)
        net.uno = PassThrough()
        compile_parts(net, mode, "network")  # one network per variant: each compiles for its own shapes
        return net

    def dense(mode):
        net = network(backends[0], mode)

        def run():
            begin_step(mode)
            net.zero_grad(set_to_none=True)  # as a training step: gradients assigned, not accumulated
            net(x, t, z).square().mean().backward()

        return run

    def sparse(name, fraction, mode):
        net = network(name, mode)
        index = uniform_subset(batch, size, int(size * size * fraction), generator=g, device=args.device)

        def run():
            begin_step(mode)
            net.zero_grad(set_to_none=True)
            # a fresh image per call: its neighbour tables and kNN plan are built every step, as in training
            net(SparseImage.from_dense(x, index), t, z).values.square().mean().backward()

        return run

    modes = {"": "none", **({"_compiled": args.compile} if args.compile != "none" else {})}  # suffix -> mode
    fns, mode_of = {}, {}
    for suffix, mode in modes.items():
        fns[f"dense_all_pixels{suffix}"] = dense(mode)
        for fraction in args.fractions:
            fns.update({f"sparse_{name}_{fraction:g}{suffix}": sparse(name, fraction, mode) for name in backends})
        mode_of.update({name: (suffix, mode) for name in fns if name not in mode_of})
    eager = {name: mode == "none" for name, (_, mode) in mode_of.items()}  # a dispatch mode sees no compiled kernel
    graphs = args.device == "cuda" and args.compile in CUDA_GRAPH_MODES
    skips = cudagraph_skips({name: fn for name, fn in fns.items() if not eager[name]}) if graphs else {}
    seconds = interleaved_medians(fns, args.repeats, args.device)
    peaks = {
        name: peak_bytes(fn, args.device) if eager[name] or args.device == "cuda" else None for name, fn in fns.items()
    }
    operators = {name: dispatched_operators(fn)["computing"] if eager[name] else None for name, fn in fns.items()}
    device = torch.device(args.device)
    launches = {name: profiled_fractions(fn, device)[1] if device.type == "cuda" else {} for name, fn in fns.items()}

    def ratio(values, name, to):
        return None if values[name] is None or values[to] is None else values[name] / values[to]

    results = {}
    for name, s in seconds.items():
        suffix, _ = mode_of[name]
        dense_name = f"dense_all_pixels{suffix}"
        results[name] = {
            "median_ms": 1e3 * s,
            "ratio_to_dense": ratio(seconds, name, dense_name),
            "peak_bytes": peaks[name],
            "peak_ratio_to_dense": ratio(peaks, name, dense_name),
            "operators_computing": operators[name],
            **({"ratio_to_eager": ratio(seconds, name, name[: -len(suffix)])} if suffix else {}),
            **({"cudagraph_skips": skips[name]} if name in skips else {}),
            **launches[name],
        }
    return results


def markdown(results: dict) -> str:
    lines = [
        f"Decoder front and back (U-Net skipped), {results['size']}², B={results['batch']}, nf {results['nf']}, "
        f"{results['blocks']} blocks, fwd+bwd, `_compiled`: {results['compile']}, on {results['device_name']} "
        f"(torch {results['torch']})",
        "",
        "| variant | ms | ratio to dense | ratio to eager | peak memory ratio | operators | GPU kernels (busy) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    shown = lambda value, form="{:.3f}": "–" if value is None else form.format(value)  # noqa: E731
    for name, v in results["front_back"].items():
        kernels = f"{v['gpu_kernels']} ({v['gpu_busy']:.2f})" if "gpu_kernels" in v else "–"
        lines.append(
            f"| {name} | {v['median_ms']:.1f} | {v['ratio_to_dense']:.3f} | {shown(v.get('ratio_to_eager'))} | "
            f"{shown(v['peak_ratio_to_dense'])} | {shown(v['operators_computing'], '{}')} | {kernels} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.125])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile", choices=COMPILE_MODES, default="none", help="also run every variant compiled whole in this mode"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)
    args = parser.parse_args()
    if dry_run(args, "decoder_front_back.py", device=args.device, size=args.size, batch=args.batch):
        return
    backends = backends_for(args.device)
    results = {
        **environment("decoder_front_back", args.device),
        **{key: getattr(args, key) for key in ("size", "batch", "nf", "blocks", "compile")},
        "front_back": front_back(args, backends),
    }
    publish(results, markdown, args.out)


if __name__ == "__main__":
    main()
