"""The whole ∞-Diff pipeline on the embedded procedural shapes, sized for a 2-core CPU.

    python experiments/demo.py            (what `make demo` runs)

Stage 1 (autoencoder at 32²) → stage 2 (latent DDPM) → the same samples decoded at 32², 64²
and 128², scored (KID on Inception features, sharpness) against exact renders at each size →
reconstructions at those sizes scored against exact renderings.  Every size decodes
the same latents *and* the same noise function (drawn at the least common multiple of the sizes
and averaged down), so each column of the picture is one sample at three resolutions.
Re-running resumes finished stages instantly.  Prints where the pictures are.  Config flags work as in the
training scripts (``--config``/``--latent_config`` and ``.key=value`` overrides).
"""

import json
import math
import sys
from pathlib import Path

from infdiff.pipeline.autoencoder import train_autoencoder
from infdiff.pipeline.cli import add_sampler_option, one_line_errors, parse_command_line
from infdiff.io import atomic_write_text
from infdiff.pipeline.evaluation import against_exact_renders, default_extractor
from infdiff.pipeline.generation import generate_recons, generate_samples
from infdiff.pipeline.latent import train_latent
from infdiff.pipeline.runs import run_directory
from infdiff.train.images import save_resolution_comparison

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = {
    "config": ROOT / "configs/shapes_32_config.py",
    "latent_config": ROOT / "configs/shapes_latent_config.py",
}


def options(parser):
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--num_samples", type=int, default=16, help="samples shown in the picture")
    parser.add_argument(
        "--metric_samples",
        type=int,
        default=64,
        help="samples per size scored (KID, sharpness) against exact renders; the first are shown",
    )
    parser.add_argument("--sampling_steps", type=int, default=25)
    parser.add_argument("--recon_sampling_steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    add_sampler_option(parser, default="ddpm")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    given = {arg.split("=")[0] for arg in argv}
    defaults = [
        arg for name, path in DEFAULT_CONFIGS.items() if f"--{name}" not in given for arg in (f"--{name}", str(path))
    ]
    configs, args = parse_command_line(__doc__, ["config", "latent_config"], options, defaults + argv)
    with one_line_errors("demo.py"):
        demo(configs["config"], configs["latent_config"], args)


def demo(config, latent_config, args):
    """Train both stages (or resume them), then sample, score and reconstruct at ``args.sizes``."""
    train_autoencoder(config)
    train_latent(latent_config, config)
    noise_size = math.lcm(*args.sizes)
    extractor = default_extractor()
    rows, scores = [], []
    for size in args.sizes:
        generated = generate_samples(
            latent_config,
            config,
            max(args.num_samples, args.metric_samples),
            size,
            args.sampling_steps,
            batch_size=args.num_samples,
            seed=args.seed,
            sampler=args.sampler,
            noise_size=noise_size,
        )
        rows.append((f"{size}px", generated.images[: args.num_samples]))
        print(f"{size}px samples: {generated.directory}")
        scores.append(against_exact_renders(generated.images[: args.metric_samples], config, extractor))
    comparison = save_resolution_comparison(rows, run_directory(latent_config) / "demo_samples.png")
    metrics = atomic_write_text(
        json.dumps({"sampler": args.sampler, "sampling_steps": args.sampling_steps, "scores": scores}, indent=2) + "\n",
        run_directory(latent_config) / "demo_metrics.json",
    )
    recons = generate_recons(
        config,
        args.sizes,
        num_images=8,
        sampling_steps=args.recon_sampling_steps,
        seed=args.seed,
        sampler=args.sampler,
        noise_size=noise_size,
    )
    print(f"reconstructions (with exact-ground-truth errors in recons.json): {recons}")
    print(f"the same samples at {', '.join(f'{s}px' for s in args.sizes)}: {comparison}")
    print(
        f"samples against exact renders ({scores[0]['count']} per size, {args.sampler}-{args.sampling_steps}, "
        f"{extractor.name} features{'' if extractor.name == 'inception' else ': ' + extractor.description}; {metrics}):"
    )
    for score in scores:
        print(
            f"  {score['resolution']}px: KID {score['kid']:.4f}, sharpness {score['sharpness']:.4f} "
            f"(exact renders {score['reference_sharpness']:.4f})"
        )


if __name__ == "__main__":
    main()
