"""The decoder's sparse front and back (everything but the coarse-grid U-Net) on a fraction of the pixels
against its dense path on all of them, per backend.

Front and back: lift, the sparse residual blocks before and after the grid, the kNN lift onto the
grid, the bilinear return and the projection.  The U-Net in between is replaced by a pass-through
(its cost does not depend on the pixels kept), so what is timed is exactly the part that training
on a subset should make cheaper.  Forward + backward, interleaved in one process, median after a
warm-up; peak tensor bytes of one step; the computing operators one step dispatches, and on a GPU the
kernels it launches and their busy share of its wall time (from one profiled step): a step whose time
does not follow its pixels, with the GPU idle most of it, is bound by the host launching its operators.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_dry_run, dry_run, backends_for, environment, interleaved_medians, peak_bytes, publish  # noqa: E402  (sibling modules)
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
    nets = {name: decoder(size, args.nf, args.blocks, args.device, name) for name in backends}
    for net in nets.values():
        net.uno = PassThrough()

    def dense():
        nets[backends[0]](x, t, z).square().mean().backward()

    def sparse(name, fraction):
        index = uniform_subset(batch, size, int(size * size * fraction), generator=g, device=args.device)
        # a fresh image per call: its neighbour tables and kNN plan are built every step, as in training
        return lambda: nets[name](SparseImage.from_dense(x, index), t, z).values.square().mean().backward()

    fns = {"dense_all_pixels": dense}
    for fraction in args.fractions:
        fns.update({f"sparse_{name}_{fraction:g}": sparse(name, fraction) for name in backends})
    seconds = interleaved_medians(fns, args.repeats, args.device)
    peaks = {name: peak_bytes(fn, args.device) for name, fn in fns.items()}
    operators = {name: dispatched_operators(fn)["computing"] for name, fn in fns.items()}
    device = torch.device(args.device)
    launches = {name: profiled_fractions(fn, device)[1] if device.type == "cuda" else {} for name, fn in fns.items()}
    return {
        name: {
            "median_ms": 1e3 * s,
            "ratio_to_dense": s / seconds["dense_all_pixels"],
            "peak_bytes": peaks[name],
            "peak_ratio_to_dense": peaks[name] / peaks["dense_all_pixels"],
            "operators_computing": operators[name],
            **launches[name],
        }
        for name, s in seconds.items()
    }


def markdown(results: dict) -> str:
    lines = [
        f"Decoder front and back (U-Net skipped), {results['size']}², B={results['batch']}, nf {results['nf']}, "
        f"{results['blocks']} blocks, fwd+bwd, on {results['device_name']} (torch {results['torch']})",
        "",
        "| variant | ms | ratio to dense | peak memory ratio | operators | GPU kernels (busy) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in results["front_back"].items():
        kernels = f"{v['gpu_kernels']} ({v['gpu_busy']:.2f})" if "gpu_kernels" in v else "–"
        lines.append(
            f"| {name} | {v['median_ms']:.1f} | {v['ratio_to_dense']:.3f} | {v['peak_ratio_to_dense']:.3f} | "
            f"{v['operators_computing']} | {kernels} |"
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
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)
    args = parser.parse_args()
    if dry_run(args, "decoder_front_back.py", device=args.device, size=args.size, batch=args.batch):
        return
    backends = backends_for(args.device)
    results = {
        **environment("decoder_front_back", args.device),
        **{key: getattr(args, key) for key in ("size", "batch", "nf", "blocks")},
        "front_back": front_back(args, backends),
    }
    publish(results, markdown, args.out)


if __name__ == "__main__":
    main()
