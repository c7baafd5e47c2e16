"""Encode real images and decode them at several resolutions.

    python experiments/generate_recons.py --decoder_config configs/ffhq_256_config.py --sizes 256 512 1024

Writes individual PNGs, grid.png (one row per resolution) and recons.json into a new folder.
"""

from infdiff.pipeline.cli import parse_command_line
from infdiff.pipeline.generation import generate_recons


def options(parser):
    parser.add_argument("--sizes", type=int, nargs="+", required=True, help="output resolutions")
    parser.add_argument("--num_images", type=int, default=8)
    parser.add_argument("--sampling_steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    parser.add_argument("--out_dir", default=None)
    parser.add_argument("--noise_size", type=int, default=None,
                        help="draw the decoder's noise on this grid and average it down (a common multiple of "
                             "--sizes), so every size decodes the same noise function")


def main(argv=None):
    configs, args = parse_command_line(__doc__, ["decoder_config"], options, argv)
    out = generate_recons(configs["decoder_config"], args.sizes, args.num_images, args.sampling_steps, args.seed,
                          args.sampler, args.out_dir, args.noise_size)
    print(f"reconstructions written to {out}")


if __name__ == "__main__":
    main()
