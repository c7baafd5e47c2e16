"""A norm followed by FiLM, forward + backward: the norm's affine map folded into FiLM's
(:meth:`infdiff.nn.film.FiLM.normalised`, what the networks run), from PyTorch's operators and, for
the LayerNorm, as the compiled modulated layer norm of each backend that runs on the device
(``kernel_cpp``, ``kernel_cuda``), against the two applied one after the other as they were before
(the affine norm, then ``h (1 + s_t) + b_t``, then ``· (1 + s_z)``).  Interleaved in one process,
median after a warm-up, and the bytes autograd keeps.

Two shapes of the networks: a LayerNorm over the channels of ``(B, N, C)`` point features (the
sparse residual blocks, N pixels kept of each image) and a GroupNorm of ``(B, C, H, W)`` grid
features (the U-Net's residual blocks).

And the conditioning alone (``conditioning``): the folded ``(scale, shift)`` of ``--films`` (FiLM,
LayerNorm) pairs, as a decoder's sparse blocks need them (12 in the paper's: 3 blocks before and 3 after
the grid, two each), each pair projecting ``e_t`` and ``z`` on its own (:meth:`FiLM.folded_affine`)
against all of them at once (:func:`infdiff.nn.film.folded_affines`, what the decoder runs): forward +
backward time and the operators each dispatches, the host's cost on a GPU.

    python benchmarks/norm_film.py --out benchmarks/results/norm_film_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from infdiff.nn.film import FiLM, folded_affines

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_dry_run, dry_run, backends_for, environment, interleaved_medians, publish  # noqa: E402  (sibling modules)
from sparse_conv import saved_bytes  # noqa: E402
from step_breakdown import dispatched_operators  # noqa: E402


def one_after_the_other(norm: nn.Module, film: FiLM, h, t_emb, z):
    """The composition as the networks computed it before the fold: four passes over ``h``."""
    h = norm(h)
    scale, shift = film.time(t_emb).chunk(2, dim=-1)
    h = h * (1 + film._per_channel(scale, h)) + film._per_channel(shift, h)
    return h * (1 + film._per_channel(film.latent(z), h))


def folded(backend=None):
    """``FiLM.normalised`` on ``backend``: one normalisation without affine and one ``addcmul``
    from PyTorch's operators (``None``), or the compiled modulated layer norm."""
    return lambda norm, film, h, t_emb, z: film.normalised(norm, h, t_emb, z, backend)


def case(kind: str, shape, device: str, dtype: torch.dtype, repeats: int, kernels) -> dict:
    torch.manual_seed(0)
    channels_last = kind == "layer_norm"
    channels = shape[-1] if channels_last else shape[1]
    norm = nn.LayerNorm(channels) if channels_last else nn.GroupNorm(8, channels)
    film = FiLM(channels, time_dim=128, z_dim=64, channels_last=channels_last)
    norm, film = norm.to(device, dtype), film.to(device, dtype)
    h = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    t_emb = torch.randn(shape[0], 128, device=device, dtype=dtype)
    z = torch.randn(shape[0], 64, device=device, dtype=dtype)
    grad = torch.randn_like(h)
    forwards = {"one_after_the_other": one_after_the_other, "folded": folded()}
    if channels_last:  # the compiled operator is a layer norm's
        forwards.update({f"kernel_{name}": folded(name) for name in kernels})

    def step(forward):
        return lambda: forward(norm, film, h, t_emb, z).backward(grad)

    fns = {name: step(forward) for name, forward in forwards.items()}
    seconds = interleaved_medians(fns, repeats, device)
    saved = {name: saved_bytes(fn) for name, fn in fns.items()}
    base = "one_after_the_other"
    return {
        "kind": kind,
        "shape": list(shape),
        "variants": {
            name: {
                "median_ms": 1e3 * s,
                "ratio": s / seconds[base],
                "autograd_saved_bytes": saved[name],
                "saved_ratio": saved[name] / saved[base],
            }
            for name, s in seconds.items()
        },
    }


def conditioning(films: int, batch: int, channels: int, device: str, dtype: torch.dtype, repeats: int) -> dict:
    torch.manual_seed(0)
    pairs = [
        (FiLM(channels, 256, 1024).to(device, dtype), nn.LayerNorm(channels).to(device, dtype)) for _ in range(films)
    ]
    t_emb = torch.randn(batch, 256, device=device, dtype=dtype, requires_grad=True)
    z = torch.randn(batch, 1024, device=device, dtype=dtype, requires_grad=True)

    def step(affines):
        def run():
            total = sum(scale.sum() + shift.sum() for scale, shift in affines())
            total.backward()

        return run

    fns = {
        "each_own": step(lambda: [film.folded_affine(norm, t_emb, z) for film, norm in pairs]),
        "together": step(lambda: folded_affines(pairs, t_emb, z)),
    }
    seconds = interleaved_medians(fns, repeats, device)
    return {
        "films": films,
        "variants": {
            name: {
                "median_ms": 1e3 * s,
                "ratio": s / seconds["each_own"],
                "operators_computing": dispatched_operators(fns[name])["computing"],
            }
            for name, s in seconds.items()
        },
    }


def markdown(results: dict) -> str:
    lines = [
        f"Norm + FiLM, forward + backward, {results['dtype']}, on {results['device_name']} (torch {results['torch']})",
        "",
        "| norm | shape | variant | ms | ratio | autograd bytes ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in results["runs"]:
        for name, v in run["variants"].items():
            shape = "×".join(map(str, run["shape"]))
            lines.append(
                f"| {run['kind']} | {shape} | {name} | {v['median_ms']:.2f} | {v['ratio']:.3f} | {v['saved_ratio']:.3f} |"
            )
    films = results["conditioning"]
    lines += [
        "",
        f"The folded FiLM of {films['films']} (FiLM, LayerNorm) pairs alone, B={results['batch']}, forward + backward",
        "",
        "| variant | ms | ratio | operators |",
        "| --- | --- | --- | --- |",
    ]
    for name, v in films["variants"].items():
        lines.append(f"| {name} | {v['median_ms']:.3f} | {v['ratio']:.3f} | {v['operators_computing']} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--points", type=int, nargs="+", default=[1024, 4096, 16384], help="N of (B, N, C)")
    parser.add_argument("--grids", type=int, nargs="+", default=[32, 64], help="sides of (B, 2C, H, W)")
    parser.add_argument("--films", type=int, default=12, help="(FiLM, LayerNorm) pairs of the conditioning run")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)
    args = parser.parse_args()
    if dry_run(args, "norm_film.py", device=args.device, dtype=args.dtype, points=args.points, batch=args.batch):
        return
    dtype = getattr(torch, args.dtype)
    compiled = [name for name in backends_for(args.device) if name != "torch"]
    shapes = [("layer_norm", (args.batch, n, args.channels)) for n in args.points]
    shapes += [("group_norm", (args.batch, 2 * args.channels, side, side)) for side in args.grids]
    results = {
        **environment("norm_film", args.device),
        "dtype": args.dtype,
        "batch": args.batch,
        "runs": [case(kind, shape, args.device, dtype, args.repeats, compiled) for kind, shape in shapes],
        "conditioning": conditioning(args.films, args.batch, args.channels, args.device, dtype, args.repeats),
    }
    publish(results, markdown, args.out)


if __name__ == "__main__":
    main()
