"""One dense decoding step of a config's stage-1 decoder at several sides: time, throughput, peak memory.

A sampler calls the decoder once per step on every pixel of the requested grid.  Above the training
size its depthwise kernels keep their physical support (``k' ≈ r k0`` taps at ``r`` times the
training side, by FFT from ``FFT_MIN_TAPS``), the point-wise layers grow as the side², and the
coarse-grid U-Net stays at ``model.uno_res``; so this step's cost is the sampler's cost per step at
that side.  Precisions: ``fp32`` is what the samplers run; ``bf16`` adds autocast (GPU only).

Each cell (precision, side) is timed alone (median of ``--repeats`` after a warm-up), then its
peak bytes over one more call; a cell that runs out of GPU memory is recorded as such and the run
goes on.  The JSON is rewritten after every cell, so a run cut short keeps what it measured.

    python benchmarks/decode_step.py --config configs/ffhq_256_config.py --sides 256 512 1024 \
        --batch 4 --precision fp32 bf16 --out benchmarks/results/decode_step_gpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from infdiff.data import data_channels
from infdiff.ops import resized_kernel_size
from infdiff.pipeline.autoencoder import build_autoencoder
from infdiff.pipeline.build import train_size
from infdiff.pipeline.cli import one_line_errors, parse_command_line
from infdiff.train.config import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_dry_run, dry_run, environment, interleaved_medians, peak_bytes, positive, publish  # noqa: E402  (siblings)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sides", type=positive(int), nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=positive(int), default=1)
    parser.add_argument("--repeats", type=positive(int), default=3)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=sorted(PRECISIONS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)


def measure(decoder, side: int, args, channels: int, z_dim: int, dtype) -> dict:
    """Seconds, images·steps per second and peak bytes of one decoding step at ``side``²."""
    g = torch.Generator(device=args.device).manual_seed(0)
    x = torch.randn(args.batch, channels, side, side, generator=g, device=args.device)
    t = torch.full((args.batch,), 500, device=args.device)
    z = torch.randn(args.batch, z_dim, generator=g, device=args.device)

    def step():
        with torch.no_grad(), torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
            return decoder(x, t, z)

    try:
        seconds = interleaved_medians({"step": step}, args.repeats, args.device)["step"]
        peak = peak_bytes(step, args.device)
    except torch.cuda.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        return {"out_of_memory": str(error).splitlines()[0]}
    return {
        "seconds_per_step": seconds,
        "image_steps_per_second": args.batch / seconds,
        "peak_bytes": peak,
        "peak_bytes_per_image": peak / args.batch,
    }


def markdown(result: dict) -> str:
    lines = [
        f"One dense decoding step of {result['config']} (decoder trained at {result['train_size']}², "
        f"{result['decoder_parameters'] / 1e6:.1f} M parameters), batch {result['batch']}, on "
        f"{result['device_name']} (torch {result['torch']})",
        "",
        "| precision | side | kernel taps | s / step | images·steps / s | peak GiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for precision, cells in result["cells"].items():
        for side, cell in cells.items():
            taps = result["kernel_taps"][side]
            if "out_of_memory" in cell:
                lines.append(f"| {precision} | {side}² | {taps} | out of memory | – | – |")
                continue
            lines.append(
                f"| {precision} | {side}² | {taps} | {cell['seconds_per_step']:.3f} | "
                f"{cell['image_steps_per_second']:.2f} | {cell['peak_bytes'] / 2**30:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    configs, args = parse_command_line(__doc__, ["config"], options, argv)
    with one_line_errors("decode_step.py"):
        run(configs["config"], args)


def run(config, args) -> None:
    if args.device != "cuda" and args.precision != ["fp32"]:
        raise ConfigError(f"--precision {' '.join(args.precision)}: only fp32 runs on {args.device}")
    if dry_run(args, "decode_step.py", config=config.run.experiment, sides=args.sides, precision=args.precision):
        return
    size = train_size(config)
    torch.manual_seed(0)
    decoder = build_autoencoder(config).decoder.to(args.device).eval()
    result = {
        **environment("decode_step", args.device),
        "config": config.run.experiment,
        "train_size": size,
        "batch": args.batch,
        "repeats": args.repeats,
        "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
        "kernel_taps": {str(side): resized_kernel_size(config.model.kernel_size, side / size) for side in args.sides},
        "cells": {},
    }
    for precision in args.precision:
        cells = result["cells"].setdefault(precision, {})
        for side in args.sides:
            cells[str(side)] = measure(
                decoder, side, args, data_channels(config.data), config.model.z_dim, PRECISIONS[precision]
            )
            publish(result, markdown, args.out, echo=False)
    publish(result, markdown, args.out)


if __name__ == "__main__":
    with one_line_errors("decode_step.py"):  # a bad config value or override: one line
        main()
