"""The whole ∞-Diff pipeline on the embedded procedural shapes, sized for a 2-core CPU.

    python experiments/demo.py            (what `make demo` runs)

Stage 1 (autoencoder at 32²) → stage 2 (latent DDPM) → the same samples decoded at 32², 64²
and 128² → reconstructions at those sizes scored against exact renderings.  Every size decodes
the same latents *and* the same noise function (drawn at the least common multiple of the sizes
and averaged down), so each column of the picture is one sample at three resolutions.
Re-running resumes finished stages instantly.  Prints where the pictures are.  Config flags work as in the
training scripts (``--config``/``--latent_config`` and ``.key=value`` overrides).
"""

import math
import sys
from pathlib import Path

from infdiff.pipeline.autoencoder import train_autoencoder
from infdiff.pipeline.cli import add_sampler_option, parse_command_line
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
    parser.add_argument("--num_samples", type=int, default=16)
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
    config, latent_config = configs["config"], configs["latent_config"]
    train_autoencoder(config)
    train_latent(latent_config, config)
    noise_size = math.lcm(*args.sizes)
    rows = []
    for size in args.sizes:
        generated = generate_samples(
            latent_config,
            config,
            args.num_samples,
            size,
            args.sampling_steps,
            batch_size=args.num_samples,
            seed=args.seed,
            sampler=args.sampler,
            noise_size=noise_size,
        )
        rows.append((f"{size}px", generated.images))
        print(f"{size}px samples: {generated.directory}")
    comparison = save_resolution_comparison(rows, run_directory(latent_config) / "demo_samples.png")
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


if __name__ == "__main__":
    main()
