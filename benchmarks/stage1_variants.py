"""Stage-1 step time of variants of one config, interleaved round-robin in one process.

A variant is a name and config overrides (``key=value``, as after ``--config.``; the ∞-Diff
spellings work too); the first one given is the baseline of the ratios, and a variant without
overrides is the config itself.  Each is a training step (the variant's loss drawing its own
times, noise and subsets, backward, and the training loop's optimiser from the variant's
``optimizer`` section) of the variant's autoencoder, built as in training (so bad values fail as
in training), on the same batch of the config's data set.

The pixels the decoder's loss and the encoder see (``loss.points``, ``loss.encoder_points``), at
the demo's scale::

    python benchmarks/stage1_variants.py --config configs/shapes_32_config.py \\
        --out benchmarks/results/pixel_counts_cpu.json --repeats 15 \\
        --variant quarter_quarter loss.points=256 loss.encoder_points=256 \\
        --variant quarter_all loss.points=256 loss.encoder_points=1024 \\
        --variant all_all loss.points=1024 loss.encoder_points=1024

The demo's network against the deeper one it replaced::

    python benchmarks/stage1_variants.py --config configs/shapes_32_config.py \\
        --out benchmarks/results/demo_network_cpu.json --repeats 15 \\
        --variant two_blocks "model.uno.blocks_per_level=(2,2)" model.num_conv_blocks=2 \\
        --variant demo

PyTorch's fused Adam (the default) against its per-parameter loop::

    python benchmarks/stage1_variants.py --config configs/shapes_32_config.py \\
        --out benchmarks/results/fused_adam_cpu.json --repeats 40 \\
        --variant loop_adam optimizer.fused=False --variant fused_adam

The compiled kernels against the reference, and training on all pixels (the networks' dense
path) against a quarter and an eighth of them, on the CPU-sized 64² configuration::

    python benchmarks/stage1_variants.py --config configs/shapes_32_config.py --config.data.img_size=64 \
        --config.model.uno_res=32 --config.model.nf=64 --config.model.num_conv_blocks=3 \
        --config.model.kernel_size=7 "--config.model.uno.attn_resolutions=(16,)" --config.train.batch_size=8 \
        --repeats 7 --breakdown \
        --out benchmarks/results/stage1_fractions_cpu.json \
        --variant dense loss.points=4096 loss.encoder_points=4096 \
        --variant quarter_cpp loss.points=1024 loss.encoder_points=1024 model.backend=cpp \
        --variant eighth_cpp loss.points=512 loss.encoder_points=512 model.backend=cpp \
        --variant quarter_torch loss.points=1024 loss.encoder_points=1024 model.backend=torch \
        --variant eighth_torch loss.points=512 loss.encoder_points=512 model.backend=torch

The two neighbour lookups of the compiled kernels (``model.neighbours``) on the same configuration
(``benchmarks/results/stage1_neighbours_cpu.json``): the same options with ``--repeats 9``, and
``--variant dense ... --variant quarter_window loss.points=1024 loss.encoder_points=1024
model.backend=cpp model.neighbours=window --variant quarter_table ... model.neighbours=table``,
and likewise ``eighth_window`` and ``eighth_table`` at 512 points.

Reported per variant: its overrides, pixel counts, process steps, parameter count, median seconds
per step, the ratio to the baseline and the peak bytes of tensors alive during a step; with
``--breakdown``, where one profiled step's time goes: the sparse convolution kernels, the
neighbour tables, the kNN search, the optimiser and the rest (U-Net, point-wise MLPs, norms,
interpolation, the dense path's convolutions).  On these shared 2-core machines only the ratios
mean something.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from infdiff.data import build_dataset
from infdiff.pipeline.autoencoder import build_autoencoder
from infdiff.pipeline.build import build_loss, build_process
from infdiff.pipeline.cli import parse_command_line
from infdiff.pipeline.legacy_keys import LEGACY_KEYS
from infdiff.train.config import ConfigError, override
from infdiff.train.loop import make_optimizer
from infdiff.train.settings import OptimizerSettings, from_section

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import device_name, peak_bytes  # noqa: E402  (a sibling module of this script)


def variant_config(config, overrides):
    """A resolved copy of ``config`` with ``key=value`` ``overrides`` applied (unknown keys raise)."""
    variant = config.copy_and_resolve_references()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--variant override {item!r}: expected key=value")
        override(variant, key, value, aliases=LEGACY_KEYS)
    return variant


BREAKDOWN = {
    "sparse_conv": (
        "infdiff::gather_conv",
        "infdiff::gather_conv_weight",
        "infdiff::window_conv",
        "infdiff::window_conv_weight",
    ),
    "neighbour_table": ("infdiff::neighbour_table",),
    "knn": ("infdiff::knn_window",),
    "optimiser": ("optimiser",),
}


def breakdown(step_fn) -> dict:
    """Fractions of one profiled step spent in each :data:`BREAKDOWN` part, the rest under ``other``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        start = time.perf_counter()
        step_fn()
        total = time.perf_counter() - start
    spent = {name: 0.0 for name in BREAKDOWN}
    for event in profile.key_averages():
        for name, keys in BREAKDOWN.items():
            if event.key in keys:
                spent[name] += event.cpu_time_total / 1e6
    fractions = {name: seconds / total for name, seconds in spent.items()}
    fractions["other"] = max(0.0, 1 - sum(fractions.values()))
    return fractions


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)

    def options(parser: argparse.ArgumentParser):
        parser.add_argument("--out", required=True, help="JSON file to write")
        parser.add_argument("--repeats", type=int, default=10)
        parser.add_argument("--breakdown", action="store_true", help="also profile one step of each variant")
        parser.add_argument(
            "--variant",
            nargs="+",
            action="append",
            required=True,
            metavar=("NAME", "KEY=VALUE"),
            help="a variant's name and its overrides; the first is the baseline",
        )

    configs, args = parse_command_line(__doc__, ["config"], options, argv)
    config = configs["config"]
    overrides = {name: given for name, *given in args.variant}
    if len(overrides) != len(args.variant):
        raise ConfigError(f"--variant names must differ, got {[name for name, *_ in args.variant]}")
    baseline_name = args.variant[0][0]
    dataset = build_dataset(config.data)
    batch = torch.stack([dataset[i] for i in range(config.train.batch_size)])
    steps, loss_settings = {}, {}
    for name, given in overrides.items():
        variant = variant_config(config, given)
        torch.manual_seed(0)
        model = build_autoencoder(variant)
        optimizer = make_optimizer(model, from_section(OptimizerSettings, variant.optimizer, "optimizer"))
        steps[name] = (model, optimizer, build_loss(variant, build_process(variant)), torch.Generator().manual_seed(0))
        loss_settings[name] = variant.loss.to_dict(), variant.process.steps

    def step(model, optimizer, loss, generator):
        loss(model, batch, generator)["loss"].mean().backward()
        with torch.profiler.record_function("optimiser"):
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
    peaks, parts = {}, {}
    for name in steps:
        peaks[name] = peak_bytes(lambda: step(*steps[name]), "cpu")
        if args.breakdown:
            parts[name] = breakdown(lambda: step(*steps[name]))
    baseline = statistics.median(times[baseline_name])
    result = {
        "benchmark": "stage1_variants",
        "argv": argv,
        "device": device_name("cpu"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "img_size": config.data.img_size,
        "batch_size": config.train.batch_size,
        "repeats": args.repeats,
        "baseline": baseline_name,
        "variants": {
            name: {
                "overrides": overrides[name],
                "points": loss_settings[name][0]["points"],
                "encoder_points": loss_settings[name][0]["encoder_points"],
                "process_steps": loss_settings[name][1],
                "parameters": sum(p.numel() for p in model.parameters()),
                "median_step_s": statistics.median(times[name]),
                "ratio_to_baseline": statistics.median(times[name]) / baseline,
                "peak_tensor_bytes": peaks[name],
                "peak_ratio_to_baseline": peaks[name] / peaks[baseline_name],
                **({"breakdown": parts[name]} if name in parts else {}),
            }
            for name, (model, *_) in steps.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["variants"], indent=1))


if __name__ == "__main__":
    main()
