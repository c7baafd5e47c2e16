"""FID (and KID) of a trained model's samples, or of a folder of images, against its training set.

    python experiments/calculate_fid.py --config configs/ffhq_latent_config.py \
        --decoder_config configs/ffhq_256_config.py --num_samples 50000 --extractor clip_vit_b_32
    python experiments/calculate_fid.py --decoder_config configs/ffhq_256_config.py --samples_dir DIR

Sampling flags are those of ``generate_samples.py``; the paper's protocol is the default: latents by
ancestral DDPM over all 1000 steps (fixed-large variance), 100 decoder steps, samples deblurred by
the Wiener filter (``--inv_snr``, 0.05), the reference being the whole training set at the sample
resolution (``--reference_count`` to use its first N images).  Extractors: ``inception`` (the
standard FID network, ``pip install -e .[metrics]``), ``clip_vit_b_32`` (the paper's FID_CLIP; needs
the user's CLIP weights), ``random`` (a smoke test only).  Writes the samples and ``fid.json`` (every
setting the number depends on) into a new folder of the latent run, or ``fid.json`` into
``--samples_dir``.  Runs data-parallel under ``accelerate launch`` / ``torchrun`` with the numbers of
a one-process run.
"""

import sys

from infdiff.metrics import EXTRACTORS
from infdiff.pipeline.cli import (
    add_sampling_options,
    one_line_errors,
    parse_trained_runs,
    sampling_arguments,
)
from infdiff.pipeline.evaluation import calculate_fid


def options(parser):
    add_sampling_options(parser, num_samples=50_000)
    parser.add_argument("--extractor", choices=EXTRACTORS.names(), default="inception")
    parser.add_argument("--samples_dir", default=None, help="score the images of this folder instead of sampling")
    parser.add_argument("--reference_count", type=int, default=None, help="reference images (default: all)")
    parser.add_argument("--kid_samples", type=int, default=10_000, help="features per set kept for KID")
    parser.add_argument("--out_dir", default=None)
    parser.add_argument("--cache_dir", default=None, help="reference statistics (default: <output_dir>/fid_stats)")


def main(argv=None):
    configs, args = parse_trained_runs(__doc__, options, argv, optional=("config",))
    if args.samples_dir is None and "config" not in configs:
        sys.exit("calculate_fid.py: error: --config (the latent run) is required unless --samples_dir is given")
    with one_line_errors("calculate_fid.py"):
        result = calculate_fid(
            configs["decoder_config"],
            configs.get("config"),
            extractor=args.extractor,
            samples_dir=args.samples_dir,
            reference_count=args.reference_count,
            kid_samples=args.kid_samples,
            out_dir=args.out_dir,
            cache_dir=args.cache_dir,
            **sampling_arguments(args, configs.get("config")),
        )
    print(
        f"FID {result['fid']:.4g}, KID {result['kid']:.4g} ({result['extractor']}, {result['num_samples']} samples, "
        f"{result['reference']['count']} reference images at {result['reference']['resolution']}px)"
    )


if __name__ == "__main__":
    main()
