"""Generate samples at any resolution: latent DDPM → ∞-Diff decoder.

    python experiments/generate_samples.py --config configs/ffhq_latent_config.py \
        --decoder_config configs/ffhq_256_config.py --sample_img_size 512 --sampling_steps 100

Both runs are found by experiment name and their saved configs are used (the config files only
locate them).  Writes individual PNGs, grid.png and samples.json into a new folder of the latent
run (never overwriting an earlier one) and prints its path.
"""

from infdiff.pipeline.cli import STAGE_SCRIPTS, add_sampler_option, parse_command_line
from infdiff.pipeline.generation import generate_samples


def options(parser):
    parser.add_argument("--sample_img_size", type=int, default=None, help="output size (default: training size)")
    parser.add_argument("--sampling_steps", type=int, default=100, help="decoder diffusion steps")
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    add_sampler_option(parser)
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
    )
    print(f"samples written to {out.directory}")


if __name__ == "__main__":
    main()
