"""Which runs repeat bit for bit: stage-1 training in fresh processes, compared checkpoint to checkpoint.

Each variant is a name, a thread count and config overrides; every variant trains the config's
stage 1 from scratch in its own process (``python train_inf_ae_diffusion.py``, ``OMP_NUM_THREADS``
and ``torch.set_num_threads`` at the count given) and its final checkpoint is compared with the
first variant's: whether every tensor of the model, EMA and optimiser is bitwise equal, the
largest difference of the EMA weights, and the reconstruction errors of the last picture.  The
demo's recipe for 200 steps, twice at two threads, once at one, once with deterministic kernels::

    python benchmarks/reproducibility.py --config configs/shapes_32_config.py --steps 200 \\
        --out benchmarks/results/reproducibility_cpu.json \\
        --variant first 2 --variant again 2 --variant one_thread 1 \\
        --variant deterministic 2 run.deterministic=true
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from infdiff.train.checkpoint import CheckpointManager

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def train(config: str, steps: int, threads: int, overrides, output_dir: Path) -> dict:
    """Train stage 1 of ``config`` for ``steps`` steps in a fresh process; returns its final checkpoint."""
    flags = [
        f"--config.{o}"
        for o in [
            f"run.output_dir={output_dir}",
            f"train.max_steps={steps}",
            f"train.checkpoint_steps={steps}",
            f"train.plot_samples_steps={steps}",
            *overrides,
        ]
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    launcher = (
        f"import torch, runpy, sys; torch.set_num_threads({threads}); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    subprocess.run(
        [sys.executable, "-c", launcher, str(ROOT / "train_inf_ae_diffusion.py"), "--config", config, *flags],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    (run,) = [p for p in output_dir.iterdir() if p.is_dir()]
    state = CheckpointManager(run / "checkpoints").newest_loadable()[1]
    (recon,) = sorted((run / "samples").glob("recon_*.json"))
    return {"state": state, "recon": json.loads(recon.read_text())}


def compare(a: dict, b: dict) -> dict:
    """Bitwise equality of model, EMA and Adam state, and the largest EMA weight difference."""

    def tensors(state):
        out = {f"model.{k}": v for k, v in state["model"].items()}
        out.update({f"ema.{k}": v for k, v in state["ema"]["model"].items()})
        for index, moments in state["optimizer"]["state"].items():
            out.update({f"adam.{index}.{k}": v for k, v in moments.items() if torch.is_tensor(v)})
        return out

    left, right = tensors(a["state"]), tensors(b["state"])
    ema = [(left[k].double() - right[k].double()).abs().max().item() for k in left if k.startswith("ema.")]
    return {"bitwise_equal": all(torch.equal(left[k], right[k]) for k in left), "max_abs_ema_difference": max(ema)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "THREADS"),
        help="a name, a thread count and config overrides; the first is the reference",
    )
    args = parser.parse_args(argv)
    results, reference = {}, None
    with tempfile.TemporaryDirectory() as scratch:
        for name, threads, *overrides in args.variant:
            run = train(args.config, args.steps, int(threads), overrides, Path(scratch) / name)
            reference = reference or run
            results[name] = {
                "threads": int(threads),
                "overrides": overrides,
                **compare(reference, run),
                **{k: v for k, v in run["recon"].items() if k.startswith("recon_mse")},
            }
            print(name, json.dumps(results[name]))
    report = {
        "benchmark": "reproducibility",
        "argv": sys.argv[1:] if argv is None else list(argv),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "config": args.config,
        "steps": args.steps,
        "reference": args.variant[0][0],
        "variants": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
