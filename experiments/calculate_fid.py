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
    STAGE_SCRIPTS,
    add_sampling_options,
    latent_sampler_option,
    one_line_errors,
    parse_command_line,
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
    configs, args = parse_command_line(
        __doc__,
        ["config", "decoder_config"],
        options,
        argv,
        optional=("config",),
        trained={"config": STAGE_SCRIPTS["stage2"], "decoder_config": STAGE_SCRIPTS["stage1"]},
    )
    if args.samples_dir is None and "config" not in configs:
        sys.exit("calculate_fid.py: error: --config (the latent run) is required unless --samples_dir is given")
    with one_line_errors("calculate_fid.py"):
        result = calculate_fid(
            configs["decoder_config"],
            configs.get("config"),
            args.num_samples,
            args.sample_img_size,
            args.sampling_steps,
            args.batch_size,
            args.seed,
            args.sampler,
            args.variance,
            latent_sampler_option(args, configs.get("config")),
            args.inv_snr,
            args.extractor,
            args.samples_dir,
            args.reference_count,
            args.kid_samples,
            args.out_dir,
            args.cache_dir,
        )
    print(
        f"FID {result['fid']:.4g}, KID {result['kid']:.4g} ({result['extractor']}, {result['num_samples']} samples, "
        f"{result['reference']['count']} reference images at {result['reference']['resolution']}px)"
    )


if __name__ == "__main__":
    main()
