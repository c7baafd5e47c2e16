"""Stage-1 training at the scale of a config: seconds per step, peak GPU memory, pictures at 1× and 2×.

Runs the real trainer (:func:`infdiff.pipeline.autoencoder.train_autoencoder`: accelerate, mixed
precision, EMA, checkpoint, the reconstruction hook) on the embedded shapes rendered at the
config's resolution, so a paper-scale config can be checked on a GPU without its data set:

    python benchmarks/stage1_step.py --out benchmarks/results/stage1_ffhq256_h100.json \\
        --config configs/ffhq_256_config.py --config.data.name=shapes --config.data.num_samples=512 \\
        --config.train.max_steps=40 --config.train.log_steps=10 --config.train.plot_samples_steps=40 \\
        --config.sampler.steps=10 --config.train.sample_size=4 --config.train.checkpoint_steps=40 \\
        --config.run.output_dir=/tmp/stage1_bench

The step time reported is the median over logging windows after the first (which holds the
warm-up: CUDA context, kernel selection).  Absolute times mean something only on a GPU.
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

from infdiff.pipeline.autoencoder import build_autoencoder, train_autoencoder
from infdiff.pipeline.cli import parse_command_line


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)

    def options(parser: argparse.ArgumentParser):
        parser.add_argument("--out", required=True, help="JSON file to write")

    configs, args = parse_command_line(__doc__, ["config"], options, argv)
    config = configs["config"]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_dir = train_autoencoder(config)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    step_times = [r["step_time"] for r in records if "step_time" in r]
    result = {
        "benchmark": "stage1_step",
        "argv": argv,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "img_size": config.data.img_size,
        "batch_size": config.train.batch_size,
        "points_per_image": config.loss.points,
        "mixed_precision": config.train.mixed_precision if cuda else "no",
        "parameters": sum(p.numel() for p in build_autoencoder(config).parameters()),
        "step_time_s": statistics.median(step_times[1:] or step_times),
        "wall_s": wall,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "metrics": records,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}, indent=1))


if __name__ == "__main__":
    main()
