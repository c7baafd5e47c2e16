"""One dense decoding step of a config's stage-1 decoder at several sides: time, throughput, peak memory.

A sampler calls the decoder once per step on every pixel of the requested grid.  Above the training
size its depthwise kernels keep their physical support (``k' ≈ r k0`` taps at ``r`` times the
training side, by FFT from ``FFT_MIN_TAPS``), the point-wise layers grow as the side², and the
coarse-grid U-Net stays at ``model.uno_res``; so this step's cost is the sampler's cost per step at
that side.  Precisions: ``fp32`` is what the samplers run; ``bf16`` adds autocast (GPU only).

Each cell (precision, side) is timed alone (median of ``--repeats`` after a warm-up), then its
peak bytes over one more call; a cell that runs out of GPU memory is recorded as such and the run
goes on.  The JSON is rewritten after every cell, so a run cut short keeps what it measured.

With ``--compile MODE`` each cell also runs with a copy of the decoder compiled whole in that mode
(``infdiff.train.compile``, scope ``network``), as precision ``<precision>_compiled`` with its
``ratio_to_eager``: a sampler calls the decoder at one side for every step, so its shapes repeat and
``reduce-overhead`` replays each step as CUDA graphs (one compilation per side and precision,
done in the warm-up; ``cudagraph_skips`` counts the graphs inductor declined to replay).

    python benchmarks/decode_step.py --config configs/ffhq_256_config.py --sides 256 512 1024 \
        --batch 4 --precision fp32 bf16 --out benchmarks/results/decode_step_gpu.json
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from infdiff.data import data_channels
from infdiff.ops import resized_kernel_size
from infdiff.pipeline.autoencoder import build_autoencoder
from infdiff.pipeline.build import train_size
from infdiff.pipeline.cli import one_line_errors, parse_command_line
from infdiff.train.compile import COMPILE_MODES, CUDA_GRAPH_MODES, begin_step, compile_parts
from infdiff.train.config import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (
    add_dry_run,
    cudagraph_skips,
    dry_run,
    environment,
    interleaved_medians,
    peak_bytes,
    positive,
    publish,
)  # noqa: E402  (siblings)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sides", type=positive(int), nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=positive(int), default=1)
    parser.add_argument("--repeats", type=positive(int), default=3)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=sorted(PRECISIONS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="none", help="also time the decoder compiled whole")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)


def measure(decoder, side: int, args, channels: int, z_dim: int, dtype, mode: str = "none") -> dict:
    """Seconds, images·steps per second and peak bytes of one decoding step at ``side``² (``mode``: the
    decoder's compile mode, for marking each step as one for CUDA graphs)."""
    g = torch.Generator(device=args.device).manual_seed(0)
    x = torch.randn(args.batch, channels, side, side, generator=g, device=args.device)
    t = torch.full((args.batch,), 500, device=args.device)
    z = torch.randn(args.batch, z_dim, generator=g, device=args.device)

    def step():
        begin_step(mode)
        with torch.no_grad(), torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
            return decoder(x, t, z)

    graphs = mode in CUDA_GRAPH_MODES and args.device == "cuda"
    try:
        skips = cudagraph_skips({"step": step})["step"] if graphs else None  # also compiles, before the timing
        seconds = interleaved_medians({"step": step}, args.repeats, args.device)["step"]
        # a dispatch mode counts the CPU's tensor bytes, and sees no compiled kernel
        peak = peak_bytes(step, args.device) if mode == "none" or args.device == "cuda" else None
    except torch.cuda.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        return {"out_of_memory": str(error).splitlines()[0]}
    return {
        "seconds_per_step": seconds,
        "image_steps_per_second": args.batch / seconds,
        "peak_bytes": peak,
        "peak_bytes_per_image": None if peak is None else peak / args.batch,
        **({"cudagraph_skips": skips} if graphs else {}),
    }


def markdown(result: dict) -> str:
    lines = [
        f"One dense decoding step of {result['config']} (decoder trained at {result['train_size']}², "
        f"{result['decoder_parameters'] / 1e6:.1f} M parameters), batch {result['batch']}, on "
        f"{result['device_name']} (torch {result['torch']})",
        "",
        "| precision | side | kernel taps | s / step | images·steps / s | ratio to eager | peak GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, cells in result["cells"].items():
        for side, cell in cells.items():
            taps = result["kernel_taps"][side]
            if "out_of_memory" in cell:
                lines.append(f"| {precision} | {side}² | {taps} | out of memory | – | – | – |")
                continue
            ratio = f"{cell['ratio_to_eager']:.3f}" if cell.get("ratio_to_eager") is not None else "–"
            peak = "–" if cell["peak_bytes"] is None else f"{cell['peak_bytes'] / 2**30:.2f}"
            lines.append(
                f"| {precision} | {side}² | {taps} | {cell['seconds_per_step']:.3f} | "
                f"{cell['image_steps_per_second']:.2f} | {ratio} | {peak} |"
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
    decoders = {"": ("none", decoder)}
    if args.compile != "none":
        compiled = copy.deepcopy(decoder)
        compile_parts(compiled, args.compile, "network")
        decoders["_compiled"] = (args.compile, compiled)
    result = {
        **environment("decode_step", args.device),
        "config": config.run.experiment,
        "train_size": size,
        "batch": args.batch,
        "repeats": args.repeats,
        "compile": args.compile,
        "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
        "kernel_taps": {str(side): resized_kernel_size(config.model.kernel_size, side / size) for side in args.sides},
        "cells": {},
    }
    for precision in args.precision:
        for side in args.sides:
            for suffix, (mode, net) in decoders.items():
                cell = measure(
                    net, side, args, data_channels(config.data), config.model.z_dim, PRECISIONS[precision], mode
                )
                eager = result["cells"].get(precision, {}).get(str(side), {})
                if suffix and "seconds_per_step" in cell and "seconds_per_step" in eager:
                    cell["ratio_to_eager"] = cell["seconds_per_step"] / eager["seconds_per_step"]
                result["cells"].setdefault(precision + suffix, {})[str(side)] = cell
                publish(result, markdown, args.out, echo=False)
    publish(result, markdown, args.out)


if __name__ == "__main__":
    with one_line_errors("decode_step.py"):  # a bad config value or override: one line
        main()
