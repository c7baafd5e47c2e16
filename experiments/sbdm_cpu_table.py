"""The score-diffusion family's CPU table: FNO and CNO score networks, each with the standard (white) and the
Laplacian prior, trained on the embedded shapes and scored by Riesz MMD at 1× and natively at 2×.

    python experiments/sbdm_cpu_table.py --out docs/sbdm_cpu        # about 15 minutes on 2 cores

Each run is :func:`~infdiff.pipeline.sbdm_configs.sbdm_config` on shapes at ``--size``² (the CNO paper's
settings: VP SDE, preconditioned loss, 200 Euler–Maruyama steps; CPU-sized networks and schedule: FNO
width 32 with ``size / 2`` modes, CNO width 16), trained for ``--steps`` steps of batch 16, then evaluated
by :func:`~infdiff.pipeline.sbdm_evaluation.evaluate_score_model` with ``--samples`` samples per size
against as many images of the data set made at that size (a second, disjoint set gives the MMD floor of
real against real).  Writes ``<out>/table.json`` and ``table.md``, and each run's sample grids and metrics
in ``<out>/<run>/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import torch

from infdiff.io import atomic_write_text
from infdiff.pipeline.sbdm import train_score_model
from infdiff.pipeline.sbdm_configs import sbdm_config
from infdiff.pipeline.sbdm_evaluation import evaluate_score_model

CPU_NETWORKS = {"fno": lambda size: dict(modes=size // 2), "cno": lambda size: dict(width=16)}
PRIORS = ("standard", "laplacian")


def run_one(network: str, prior: str, args) -> dict:
    config = sbdm_config("shapes", args.size, network, prior, experiment=f"sbdm_cpu_{network}_{prior}")
    config.model.update(CPU_NETWORKS[network](args.size))
    config.run.output_dir = str(args.runs)
    config.train.update(max_steps=args.steps, checkpoint_steps=args.steps, plot_samples_steps=args.steps, sample_size=4)
    config.sampler.steps = args.sampling_steps
    start = time.perf_counter()
    run_dir = train_score_model(config)
    trained = time.perf_counter() - start
    result = evaluate_score_model(
        run_dir, upscale=2, num_samples=args.samples, batch_size=args.samples, out_dir=args.out / config.run.experiment
    )
    sizes = {size: entry["metrics"] for size, entry in result["sizes"].items()}
    return dict(
        network=network,
        prior=prior,
        arch_settings=config.model.to_dict(),
        train_steps=args.steps,
        train_seconds=trained,
        evaluate_seconds=time.perf_counter() - start - trained,
        samples=args.samples,
        steps=result["sizes"][str(args.size)]["steps"],
        route="native",
        riesz_mmd={size: m["riesz_mmd"] for size, m in sizes.items()},
        riesz_mmd_floor={size: m.get("riesz_mmd_floor") for size, m in sizes.items()},
        vendi_pixel={size: m["vendi_pixel"] for size, m in sizes.items()},
        reference_vendi_pixel={size: m["reference_vendi_pixel"] for size, m in sizes.items()},
        metrics_json=str(Path(result["out_dir"]) / "metrics.json"),
    )


def markdown(table: dict) -> str:
    small, large = str(table["size"]), str(2 * table["size"])
    lines = [
        f"Shapes at {small}², trained {table['steps']} steps (batch 16); {table['samples']} samples per size, "
        f"{table['rows'][0]['steps']} Euler–Maruyama steps, sampled natively at {small}² and {large}²; "
        f"Riesz MMD (r = 1, images in [0, 1]; real-vs-real floor at the same count) and pixel Vendi "
        f"(data's in brackets). {table['device']}, torch {table['torch']}, {table['date']}, commit {table['commit']}.",
        "",
        f"| network | prior | MMD {small}² (floor) | MMD {large}² (floor) | Vendi {small}² | Vendi {large}² | train + eval (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table["rows"]:
        mmd = [f"{r['riesz_mmd'][s]:.4f} ({r['riesz_mmd_floor'][s]:.4f})" for s in (small, large)]
        vendi = [f"{r['vendi_pixel'][s]:.2f} ({r['reference_vendi_pixel'][s]:.2f})" for s in (small, large)]
        seconds = f"{r['train_seconds']:.0f} + {r['evaluate_seconds']:.0f}"
        lines.append(f"| {r['network']} | {r['prior']} | " + " | ".join([*mmd, *vendi, seconds]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--sampling_steps", type=int, default=200, help="Euler-Maruyama steps")
    parser.add_argument("--out", type=Path, default=Path("docs/sbdm_cpu"))
    parser.add_argument("--runs", type=Path, default=Path("runs/sbdm_cpu"), help="where the training runs live")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [run_one(network, prior, args) for network in CPU_NETWORKS for prior in PRIORS]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    table = dict(
        size=args.size,
        steps=args.steps,
        samples=args.samples,
        device=f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        torch=torch.__version__,
        date=date.today().isoformat(),
        commit=commit,
        total_seconds=time.perf_counter() - start,
        rows=rows,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(table, indent=2) + "\n", args.out / "table.json")
    atomic_write_text(markdown(table), args.out / "table.md")
    print(markdown(table))


if __name__ == "__main__":
    main()
