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
    STAGE_SCRIPTS,
    add_sampling_options,
    latent_sampler_option,
    one_line_errors,
    parse_command_line,
)
from infdiff.pipeline.generation import generate_samples


def options(parser):
    add_sampling_options(parser)
    parser.add_argument("--out_dir", default=None, help="output folder (default: inside the latent run)")
    parser.add_argument(
        "--noise_size",
        type=int,
        default=None,
        help="draw the decoder's noise on this grid and average it down (a multiple of "
        "--sample_img_size): runs at several sizes with one seed then show the same samples",
    )


def main(argv=None):
    configs, args = parse_command_line(
        __doc__,
        ["config", "decoder_config"],
        options,
        argv,
        trained={"config": STAGE_SCRIPTS["stage2"], "decoder_config": STAGE_SCRIPTS["stage1"]},
    )
    with one_line_errors("generate_samples.py"):
        out = generate_samples(
            configs["config"],
            configs["decoder_config"],
            args.num_samples,
            args.sample_img_size,
            args.sampling_steps,
            args.batch_size,
            args.seed,
            args.sampler,
            args.out_dir,
            args.noise_size,
            args.variance,
            latent_sampler_option(args, configs["config"]),
            args.inv_snr,
        )
    print(f"samples written to {out.directory}")


if __name__ == "__main__":
    main()
