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
and likewise ``eighth_window`` and ``eighth_table`` at 512 points.  The breakdown of the default
kernels (``benchmarks/results/stage1_breakdown_cpu.json``): the same options with ``--repeats 7`` and
the variants ``dense``, ``quarter`` (1024 points, ``model.backend=cpp``) and ``eighth`` (512).

On a GPU (``--device cuda``, the default where there is one) each variant trains in its own
``train.mixed_precision`` under autocast, as the training loop does; the paper's FFHQ-256
configuration on the embedded shapes (what ``benchmarks/gpu_check.sh`` runs)::

    python benchmarks/stage1_variants.py --config configs/ffhq_256_config.py --config.data.name=shapes \
        --config.train.batch_size=8 --repeats 5 --breakdown \
        --out OUT/stage1_ffhq256_gpu.json \
        --variant dense loss.points=65536 loss.encoder_points=65536 \
        --variant quarter loss.points=16384 loss.encoder_points=16384 \
        --variant eighth loss.points=8192 loss.encoder_points=8192

Reported per variant: its overrides, pixel counts, process steps, parameter count, median seconds
per step, the ratio to the baseline, the peak bytes a step allocates above what lies between steps
(``peak_step_bytes``: the CUDA allocator's, or on the CPU the tensors' own, ``null`` there for a
compiled variant) and what lies there (``resident_bytes``: parameters and optimiser state); with ``--breakdown``, under ``fractions`` those
of the step spent in the sparse convolution kernels, the neighbour tables, the kNN search, the
compiled modulated layer norms, the optimiser (from a profile of one step) and the coarse-grid
U-Nets (timed alone, :mod:`step_breakdown`), the rest under ``other`` (point-wise MLPs, norms,
interpolation, the dense path's convolutions), and on a GPU ``gpu_busy``; under ``counts`` the
operators one step dispatches and on a GPU the kernels it launches; for a variant compiled in a
CUDA-graph mode on a GPU, ``cudagraph_skips``, the graphs inductor declined to replay as CUDA graphs
(0: the whole compiled part replays).  A Markdown table is written
beside the JSON.  On these shared 2-core machines only the ratios mean
something.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

from infdiff.data import build_dataset
from infdiff.pipeline.autoencoder import build_autoencoder
from infdiff.pipeline.build import build_loss, build_process
from infdiff.pipeline.cli import one_line_errors, parse_command_line
from infdiff.pipeline.legacy_keys import LEGACY_KEYS
from infdiff.pipeline.schema import validate_config
from infdiff.train.compile import CUDA_GRAPH_MODES, begin_step, compile_parts
from infdiff.train.config import ConfigError, override
from infdiff.train.loop import make_optimizer
from infdiff.train.settings import OptimizerSettings, from_section

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_dry_run, cudagraph_skips, dry_run, environment, interleaved_medians, peak_bytes, publish  # noqa: E402  (sibling modules)
from step_breakdown import step_breakdown  # noqa: E402


def variant_config(config, overrides):
    """A resolved copy of ``config`` with ``key=value`` ``overrides`` applied (unknown keys raise)."""
    variant = config.copy_and_resolve_references()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--variant override {item!r}: expected key=value")
        override(variant, key, value, aliases=LEGACY_KEYS)
    validate_config(variant, flag="variant")  # a value out of range is named here, not deep in a build
    return variant


AUTOCAST_DTYPES = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_for(mixed_precision: str, device: torch.device) -> Callable[[], object]:
    """The training loop's mixed precision on a GPU (fp16 without loss scaling: timing only); none on the CPU."""
    dtype = AUTOCAST_DTYPES[mixed_precision] if device.type == "cuda" else None
    return lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the parameters and the optimiser's state, which stay allocated between steps."""
    tensors = list(model.parameters()) + [
        value for state in optimizer.state.values() for value in state.values() if isinstance(value, torch.Tensor)
    ]
    return sum(t.numel() * t.element_size() for t in tensors)


def _number(value, unit=1) -> str:
    return "–" if value is None else f"{value / unit:.3f}"


def markdown(result: dict) -> str:
    lines = [
        f"Stage-1 step, {result['img_size']}², batch {result['batch_size']}, on {result['device_name']} "
        f"(torch {result['torch']}), median of {result['repeats']}",
        "",
        "| variant | points | encoder points | s / step | ratio | step peak GiB | ratio | resident GiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {v['points']} | {v['encoder_points']} | {v['median_step_s']:.3f} | "
            f"{v['ratio_to_baseline']:.3f} | {_number(v['peak_step_bytes'], 2**30)} | "
            f"{_number(v['peak_ratio_to_baseline'])} | "
            f"{v['resident_bytes'] / 2**30:.3f} |"
        )
    for title, key, cell in (("Fractions of the step", "fractions", "{:.3f}"), ("Counts per step", "counts", "{}")):
        parts = {name: v["breakdown"][key] for name, v in result["variants"].items() if "breakdown" in v}
        columns = list(dict.fromkeys(c for f in parts.values() for c in f))  # a compiled variant counts nothing
        if columns:
            lines += ["", title, "", "| variant | " + " | ".join(columns) + " |"]
            lines.append("| --- " * (len(columns) + 1) + "|")
            lines += [
                f"| {name} | " + " | ".join(cell.format(f[c]) if c in f else "–" for c in columns) + " |"
                for name, f in parts.items()
            ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)

    def options(parser: argparse.ArgumentParser):
        parser.add_argument("--out", required=True, type=Path, help="JSON file to write (and a .md table beside it)")
        parser.add_argument("--repeats", type=int, default=10)
        parser.add_argument("--breakdown", action="store_true", help="also say where each variant's step goes")
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        add_dry_run(parser)
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
    device = torch.device(args.device)
    overrides = {name: given for name, *given in args.variant}
    if len(overrides) != len(args.variant):
        raise ConfigError(f"--variant names must differ, got {[name for name, *_ in args.variant]}")
    baseline_name = args.variant[0][0]
    variants = {name: variant_config(config, given) for name, given in overrides.items()}  # every override checked
    if dry_run(args, "stage1_variants.py", config=config.run.experiment, device=args.device, variants=list(variants)):
        return
    dataset = build_dataset(config.data)
    batch = torch.stack([dataset[i] for i in range(config.train.batch_size)]).to(device)
    steps, settings = {}, {}
    for name, variant in variants.items():
        torch.manual_seed(0)
        model = build_autoencoder(variant).to(device)
        optimizer = make_optimizer(model, from_section(OptimizerSettings, variant.optimizer, "optimizer"))
        compile_parts(model, variant.train.compile, variant.train.compile_scope)  # as the training loop does
        loss = build_loss(variant, build_process(variant))
        autocast = autocast_for(variant.train.mixed_precision, device)
        generator = torch.Generator(device=device).manual_seed(0)
        steps[name] = (model, optimizer, loss, generator, autocast, variant.train.compile)
        settings[name] = variant.loss.to_dict(), variant.process.steps

    def step(model, optimizer, loss, generator, autocast, compile_mode):
        begin_step(compile_mode)
        with autocast():
            value = loss(model, batch, generator)["loss"].mean()
        value.backward()
        with torch.profiler.record_function("optimiser"):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    runs = {name: (lambda members=members: step(*members)) for name, members in steps.items()}
    # a dispatch mode (the CPU's tensor-byte count, the operator count) cannot run under torch.compile
    eager = {name: variant.train.compile == "none" for name, variant in variants.items()}
    graphed = [name for name, v in variants.items() if v.train.compile in CUDA_GRAPH_MODES and device.type == "cuda"]
    skips = cudagraph_skips({name: runs[name] for name in graphed})
    seconds = interleaved_medians(runs, args.repeats, device.type)
    peaks = {
        name: peak_bytes(run, device.type) if eager[name] or device.type == "cuda" else None
        for name, run in runs.items()
    }
    parts = {}
    if args.breakdown:
        for name, run in runs.items():
            model, *_, autocast, _ = steps[name]
            repeats = max(3, args.repeats // 2)
            parts[name] = step_breakdown(model, run, seconds[name], autocast, repeats, device, eager[name])
    baseline = seconds[baseline_name]
    result = {
        **environment("stage1_variants", device.type),
        "argv": argv,
        "img_size": config.data.img_size,
        "batch_size": config.train.batch_size,
        "repeats": args.repeats,
        "baseline": baseline_name,
        "variants": {
            name: {
                "overrides": overrides[name],
                "points": settings[name][0]["points"],
                "encoder_points": settings[name][0]["encoder_points"],
                "process_steps": settings[name][1],
                "parameters": sum(p.numel() for p in model.parameters()),
                "median_step_s": seconds[name],
                "ratio_to_baseline": seconds[name] / baseline,
                "peak_step_bytes": peaks[name],
                "resident_bytes": resident_bytes(model, optimizer),
                "peak_ratio_to_baseline": peaks[name] / peaks[baseline_name]
                if None not in (peaks[name], peaks[baseline_name])
                else None,
                **({"breakdown": parts[name]} if name in parts else {}),
                **({"cudagraph_skips": skips[name]} if name in skips else {}),
            }
            for name, (model, optimizer, *_) in steps.items()
        },
    }
    publish(result, markdown, args.out)


if __name__ == "__main__":
    with one_line_errors("stage1_variants.py"):  # a bad config value or override: one line
        main()
