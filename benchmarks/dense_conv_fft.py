"""Large kernels on the dense path: FFT against the direct depthwise conv, and what it does to decoding.

Sampling above the training size resizes each 7-tap kernel to keep its physical support (27 taps
at 4×, 55 at 8×), so the direct conv's cost grows as side² × taps ≈ side⁴.  Two parts, each
interleaved in one process (median of ``--repeats`` after a warm-up):

* ``ops``: one forward of a 64-channel depthwise conv, direct (channels-last ``F.conv2d``) against
  :func:`infdiff.ops.sparse_conv.fft_depthwise_conv`, over image sizes and kernel sizes: where the
  break-even lies (``FFT_MIN_TAPS``);
* ``decoding``: the dense forward of a decoder trained at 64² (nf 64, 7 taps, 3 blocks per side)
  at 64²..512², batch 1, with the FFT route as shipped and with it switched off; the exponent
  ``d log t / d log side`` (least squares over the sweep) says how decoding time grows with the side.

    python benchmarks/dense_conv_fft.py --out benchmarks/results/dense_conv_fft_cpu.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from infdiff.nn import SparseUNet
from infdiff.ops import sparse_conv
from infdiff.ops.sparse_conv import fft_depthwise_conv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import environment, interleaved_medians, publish  # noqa: E402  (a sibling module)


def ops(sizes, kernels, repeats, device) -> list:
    rows = []
    for size in sizes:
        x = torch.randn(1, 64, size, size, device=device)
        for k in kernels:
            w = torch.randn(64, k, k, device=device)
            direct = lambda: F.conv2d(
                x.contiguous(memory_format=torch.channels_last), w[:, None], padding=k // 2, groups=64
            )  # noqa: E731
            seconds = interleaved_medians({"direct": direct, "fft": lambda: fft_depthwise_conv(x, w)}, repeats, device)
            rows.append(dict(size=size, taps=k, **{f"{n}_ms": 1e3 * s for n, s in seconds.items()}))
            rows[-1]["fft_ratio_to_direct"] = seconds["fft"] / seconds["direct"]
    return rows


def decoding(sides, steps, repeats, device) -> dict:
    torch.manual_seed(0)
    uno = dict(base_channels=64, channel_mults=(1, 2), attn_resolutions=(16,), num_groups=8)
    decoder = SparseUNet(channels=3, train_size=64, nf=64, time_dim=128, z_dim=64, uno_res=32, uno_channels=64, uno=uno)
    decoder = decoder.to(device).eval()
    z, t = torch.randn(1, 64, device=device), torch.tensor([500], device=device)

    def decode(side, route):
        def run():
            shipped = sparse_conv.FFT_MIN_TAPS
            sparse_conv.FFT_MIN_TAPS = shipped if route == "fft" else 10**9
            try:
                x = torch.randn(1, 3, side, side, device=device)
                for _ in range(steps):
                    x = decoder(x, t, z)
            finally:
                sparse_conv.FFT_MIN_TAPS = shipped

        return run

    with torch.no_grad():
        fns = {f"{route}_{side}": decode(side, route) for side in sides for route in ("fft", "direct")}
        seconds = interleaved_medians(fns, repeats, device)

    def exponent(route):  # least-squares slope of log time against log side
        xs = [math.log(side) for side in sides]
        ys = [math.log(seconds[f"{route}_{side}"]) for side in sides]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)

    return {
        "steps": steps,
        "seconds": seconds,
        "growth_exponent": {route: exponent(route) for route in ("fft", "direct")},
    }


def markdown(results: dict) -> str:
    lines = [
        f"Dense depthwise conv, forward, 64 channels, on {results['device_name']} (torch {results['torch']}); ms",
        "",
        "| size | taps | direct | FFT | FFT / direct |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results["ops"]:
        lines.append(
            f"| {r['size']}² | {r['taps']} | {r['direct_ms']:.1f} | {r['fft_ms']:.1f} | {r['fft_ratio_to_direct']:.2f} |"
        )
    d = results["decoding"]
    sides = sorted({int(k.split("_")[1]) for k in d["seconds"]})
    lines += [
        "",
        f"Decoder dense forward ({d['steps']} steps, batch 1, trained at 64²), seconds",
        "",
        "| route | " + " | ".join(f"{s}²" for s in sides) + " | growth exponent |",
        "| --- | " + " | ".join("---" for _ in sides) + " | --- |",
    ]
    for route in ("fft", "direct"):
        cells = " | ".join(f"{d['seconds'][f'{route}_{s}']:.2f}" for s in sides)
        lines.append(f"| {route} | {cells} | {d['growth_exponent'][route]:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--kernels", type=int, nargs="+", default=[7, 15, 21, 27, 31, 41, 55])
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    args = parser.parse_args()
    with torch.no_grad():
        op_rows = ops(args.sizes, args.kernels, args.repeats, args.device)
    results = {
        **environment("dense_conv_fft", args.device),
        "fft_min_taps": sparse_conv.FFT_MIN_TAPS,
        "ops": op_rows,
        "decoding": decoding(args.sides, args.steps, args.repeats, args.device),
    }
    publish(results, markdown, args.out)


if __name__ == "__main__":
    main()
