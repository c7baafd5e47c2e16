"""Speed of the score-diffusion family: one training step and one 200-step Euler–Maruyama sample per
score network, at the MNIST configs' settings (:mod:`infdiff.pipeline.sbdm_configs`, Laplacian prior).

* ``train_step``: the preconditioned denoising loss, backward and an Adam step on a batch of
  ``--batch`` images of ``size²``, for a network laid out for ``size²`` (trained at that size); the
  networks take turns (interleaved medians of ``--repeats`` steps after a warm-up);
* ``sample``: ``--steps`` Euler–Maruyama steps from the prior for ``--sample_batch`` images of
  ``size²`` with a network laid out for ``--train_size`` (at 56² for a 28² network that is the
  native 2× route: the network runs on the 56² grid, nothing is upsampled); each once, timed whole.

Reported: milliseconds per training step, seconds per sample batch and per image, and the peak bytes
of the training step's tensors.  A Markdown table is written next to the JSON.

    python benchmarks/sbdm_speed.py --sizes 28 56 --out benchmarks/results/sbdm_speed_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from infdiff.pipeline.build import SamplerSpec, build_loss, build_model, build_process
from infdiff.diffusion import make_denoiser
from infdiff.pipeline.sbdm_configs import SCORE_NETWORKS, sbdm_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import environment, interleaved_medians, peak_bytes, publish, synchronizer  # noqa: E402


def network(name: str, size: int, device: str):
    """The MNIST config of ``name`` laid out for ``size²``: (config, network, process)."""
    config = sbdm_config("mnist", size, name, "laplacian")
    torch.manual_seed(0)
    model = build_model(config, channels=1, train_size=size).to(device)
    return config, model, build_process(config)


def train_steps(names, size: int, batch: int, repeats: int, device: str) -> dict:
    images = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    generator = torch.Generator(device=device).manual_seed(0)
    steps, peaks, parameters = {}, {}, {}
    for name in names:
        config, model, process = network(name, size, device)
        loss, optimiser = build_loss(config, process), torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model=model, loss=loss, optimiser=optimiser):
            optimiser.zero_grad(set_to_none=True)
            loss(model, images, generator)["loss"].mean().backward()
            optimiser.step()

        steps[name], peaks[name] = step, peak_bytes(step, device)
        parameters[name] = sum(p.numel() for p in model.parameters())
    seconds = interleaved_medians(steps, repeats, device)
    return {name: {"ms": 1e3 * seconds[name], "peak_bytes": peaks[name]} for name in names}, parameters


def sample_time(name: str, size: int, train_size: int, batch: int, steps: int, device: str) -> dict:
    config, model, process = network(name, train_size, device)
    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    x_T = process.terminal_state((batch, 1, size, size), generator, device)
    sampler = SamplerSpec("euler_maruyama", steps)
    sync = synchronizer(device)
    sync()
    start = time.perf_counter()
    sampler(make_denoiser(model, process, config.loss.target), x_T, process, generator)
    sync()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "seconds_per_image": seconds / batch}


def markdown(results: dict) -> str:
    r0 = results["runs"][0]
    lines = [
        f"Score networks (MNIST configs, Laplacian prior) on {results['device_name']} ({results['device']}, torch "
        f"{results['torch']}, {results['threads']} threads): training step (batch {r0['batch']}, fwd+bwd+Adam, "
        f"network laid out for the size) and {r0['steps']}-step Euler–Maruyama sampling (batch {r0['sample_batch']}, "
        f"network laid out for {r0['train_size']}², run natively at the size)",
        "",
        "| size | network | parameters | train step (ms) | train peak (MB) | sample batch (s) | per image (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        for name, t in r["train"].items():
            s = r["sample"][name]
            lines.append(
                f"| {r['size']}² | {name} | {r['parameters'][name]:,} | {t['ms']:.0f} | {t['peak_bytes'] / 1e6:.0f} | "
                f"{s['seconds']:.1f} | {s['seconds_per_image']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 56])
    parser.add_argument("--networks", nargs="+", default=sorted(SCORE_NETWORKS), choices=sorted(SCORE_NETWORKS))
    parser.add_argument("--train_size", type=int, default=28, help="the grid the sampling networks are laid out for")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sample_batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    args = parser.parse_args()
    runs = []
    for size in args.sizes:
        train, parameters = train_steps(args.networks, size, args.batch, args.repeats, args.device)
        runs.append(
            {
                "size": size,
                "batch": args.batch,
                "sample_batch": args.sample_batch,
                "steps": args.steps,
                "train_size": args.train_size,
                "route": "native",
                "parameters": parameters,
                "train": train,
                "sample": {
                    n: sample_time(n, size, args.train_size, args.sample_batch, args.steps, args.device)
                    for n in args.networks
                },
            }
        )
    publish({**environment("sbdm_speed", args.device), "runs": runs}, markdown, args.out)


if __name__ == "__main__":
    main()
