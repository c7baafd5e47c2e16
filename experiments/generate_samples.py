"""Generate samples at any resolution: latent DDPM → ∞-Diff decoder.

    python experiments/generate_samples.py --config configs/ffhq_latent_config.py \
        --decoder_config configs/ffhq_256_config.py --sample_img_size 512 --sampling_steps 100

Latents are drawn with the stage-2 config's sampler (the paper configs': ancestral DDPM over all
1000 steps with the fixed-large variance; ``--latent_sampler ddim --latent_sampling_steps 100`` for
DDIM).  Under ``accelerate launch`` or ``torchrun --nproc_per_node N`` each process draws its own
shard of the batches; the samples are those of a one-process run.

Both runs are found by experiment name and their saved configs are used (the config files only
locate them).  Writes individual PNGs, grid.png and samples.json into a new folder of the latent
run (never overwriting an earlier one) and prints its path.
"""

from infdiff.pipeline.cli import (
    add_sampling_options,
    one_line_errors,
    parse_trained_runs,
    sampling_arguments,
)
from infdiff.pipeline.generation import generate_samples
from infdiff.pipeline.schema import SAMPLING_OPTIONS


def options(parser):
    add_sampling_options(parser)
    parser.add_argument("--out_dir", default=None, help="output folder (default: inside the latent run)")
    parser.add_argument(
        "--noise_size",
        type=SAMPLING_OPTIONS["noise_size"],
        default=None,
        help="draw the decoder's noise on this grid and average it down (a multiple of "
        "--sample_img_size): runs at several sizes with one seed then show the same samples",
    )


def main(argv=None):
    configs, args = parse_trained_runs(__doc__, options, argv)
    with one_line_errors("generate_samples.py"):
        out = generate_samples(
            configs["config"],
            configs["decoder_config"],
            out_dir=args.out_dir,
            noise_size=args.noise_size,
            **sampling_arguments(args, configs["config"]),
        )
    print(f"samples written to {out.directory}")


if __name__ == "__main__":
    main()
