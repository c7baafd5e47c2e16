"""Stage-1 step time against the pixels the decoder's loss and the encoder see (``mc_integral``).

Variants, each a training step (forward, backward, Adam) of a config's autoencoder on the same
batch of embedded shapes, interleaved round-robin in one process:

* ``quarter_quarter``: the paper, a quarter of the pixels for the loss and a fresh quarter for
  the encoder (the baseline of the ratios);
* ``quarter_all``: the demo's recipe, the encoder on every pixel (its dense path);
* ``all_all``: both on every pixel (both dense paths).

    python benchmarks/pixel_counts.py --config configs/shapes_32_config.py \\
        --out benchmarks/results/pixel_counts_cpu.json

Reported per variant: median seconds per step and its ratio to ``quarter_quarter``.  On these
shared 2-core machines only the ratios mean something.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from infdiff.pipeline.autoencoder import build_autoencoder
from infdiff.pipeline.build import build_unflipped_dataset
from infdiff.pipeline.cli import parse_command_line


def variants(pixels: int):
    """``name -> (q_sample, encoder_q_sample)`` for a grid of ``pixels`` pixels."""
    quarter = pixels // 4
    return {"quarter_quarter": (quarter, quarter), "quarter_all": (quarter, pixels), "all_all": (pixels, pixels)}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)

    def options(parser: argparse.ArgumentParser):
        parser.add_argument("--out", required=True, help="JSON file to write")
        parser.add_argument("--repeats", type=int, default=10)

    configs, args = parse_command_line(__doc__, ["config"], options, argv)
    config = configs["config"]
    batch = torch.stack([build_unflipped_dataset(config)[i] for i in range(config.train.batch_size)])
    steps = {}
    for name, (points, encoder_points) in variants(config.data.img_size ** 2).items():
        variant = config.copy_and_resolve_references()
        variant.mc_integral.q_sample, variant.mc_integral.encoder_q_sample = points, encoder_points
        torch.manual_seed(0)
        model = build_autoencoder(variant)
        steps[name] = (model, torch.optim.Adam(model.parameters(), config.optimizer.learning_rate))

    def step(model, optimizer):
        t = torch.randint(0, config.diffusion.steps, (batch.shape[0],))
        model(batch, t)["loss"].mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = {name: [] for name in steps}
    for name in steps:
        step(*steps[name])
    for _ in range(args.repeats):
        for name in steps:
            start = time.perf_counter()
            step(*steps[name])
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times["quarter_quarter"])
    result = {
        "benchmark": "stage1_pixel_counts",
        "argv": argv,
        "device": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "img_size": config.data.img_size,
        "batch_size": config.train.batch_size,
        "repeats": args.repeats,
        "variants": {
            name: {"q_sample": steps[name][0].points, "encoder_q_sample": steps[name][0].encoder_points,
                   "median_step_s": statistics.median(t), "ratio_to_quarter_quarter": statistics.median(t) / baseline}
            for name, t in times.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["variants"], indent=1))


if __name__ == "__main__":
    main()
