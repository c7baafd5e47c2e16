"""Encode real images and decode them at several resolutions.

    python experiments/generate_recons.py --decoder_config configs/ffhq_256_config.py --sizes 256 512 1024

The run is found by experiment name and its saved config is used.  Images come from the held-out
split where the data set has one (``--split`` to choose).  Writes individual PNGs, grid.png (one
row per resolution) and recons.json into a new folder.
"""

from infdiff.pipeline.schema import SAMPLING_OPTIONS
from infdiff.pipeline.cli import STAGE_SCRIPTS, add_sampler_option, one_line_errors, parse_command_line
from infdiff.pipeline.generation import generate_recons


def options(parser):
    option = SAMPLING_OPTIONS
    parser.add_argument("--sizes", type=option["sizes"].item, nargs="+", required=True, help="output resolutions")
    parser.add_argument("--num_images", type=option["num_images"], default=8)
    parser.add_argument("--sampling_steps", type=option["sampling_steps"], default=100)
    parser.add_argument("--seed", type=option["seed"], default=0)
    add_sampler_option(parser)
    parser.add_argument(
        "--split", default=None, help="data split to reconstruct (default: 'test' where the data set has one)"
    )
    parser.add_argument("--out_dir", default=None)
    parser.add_argument(
        "--noise_size",
        type=SAMPLING_OPTIONS["noise_size"],
        default=None,
        help="draw the decoder's noise on this grid and average it down (a common multiple of "
        "--sizes), so every size decodes the same noise function",
    )


def main(argv=None):
    configs, args = parse_command_line(
        __doc__, ["decoder_config"], options, argv, trained={"decoder_config": STAGE_SCRIPTS["stage1"]}
    )
    with one_line_errors("generate_recons.py"):
        out = generate_recons(
            configs["decoder_config"],
            args.sizes,
            args.num_images,
            args.sampling_steps,
            args.seed,
            args.sampler,
            args.out_dir,
            args.noise_size,
            args.split,
            args.variance,
        )
    print(f"reconstructions written to {out}")


if __name__ == "__main__":
    main()
