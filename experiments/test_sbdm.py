"""Evaluate a trained function-space score model: samples drawn natively at a base size and at --upscale times it,
scored against the data at each size (Riesz MMD, Vendi, sliced Wasserstein, sharpness; FID/KID with --extractor).

    python experiments/test_sbdm.py --checkpoint runs/sbdm_shapes_32 --upscale 2 [--input_height N]

--checkpoint is a run directory (its newest checkpoint), a checkpoint file or an experiment name (runs/<name>);
the run's saved config gives the process, prior and sampler.  The defaults follow the CNO score operators'
protocol: 1000 samples per size, the config's sampler (Euler-Maruyama, 200 steps), as many test images as
samples (the training data when there is no test split) made at each size, and at the base size also the
upscaled reference average-pooled back.  --bits_per_dim N adds the bits per dimension of N real images at the
training size.  Writes metrics.json and samples_<size>.png into --out_dir (default: a new folder in
<run>/evaluation/).
"""

import argparse

from infdiff.diffusion import SAMPLERS
from infdiff.metrics import EXTRACTORS
from infdiff.pipeline.cli import one_line_errors, say_once
from infdiff.pipeline.sbdm_evaluation import evaluate_score_model
from infdiff.pipeline.schema import SAMPLING_OPTIONS


def parser() -> argparse.ArgumentParser:
    option = SAMPLING_OPTIONS
    parse = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--checkpoint", required=True, help="run directory, checkpoint file or experiment name")
    parse.add_argument("--upscale", type=option["upscale"], default=2, help="second size as a multiple of the first")
    parse.add_argument("--input_height", type=option["input_height"], default=None, help="base size (default: trained)")
    parse.add_argument("--num_samples", type=option["num_samples"], default=1000, help="samples per size")
    parse.add_argument("--steps", type=option["steps"], default=None, help="sampler steps (default: the config's)")
    parse.add_argument("--sampler", choices=SAMPLERS.names(), default=None, help="default: the config's")
    parse.add_argument("--batch_size", type=option["batch_size"], default=64)
    parse.add_argument("--seed", type=option["seed"], default=0)
    parse.add_argument("--out_dir", default=None)
    parse.add_argument("--extractor", choices=EXTRACTORS.names(), default=None, help="feature metrics (default: none)")
    parse.add_argument("--reference_count", type=option["reference_count"], default=None, help="default: num_samples")
    parse.add_argument("--bits_per_dim", type=option["bits_per_dim"], default=0, help="real images to score (0: none)")
    return parse


def main(argv=None):
    args = parser().parse_args(argv)
    with one_line_errors("test_sbdm.py"):
        result = evaluate_score_model(**vars(args))
    for size, entry in result["sizes"].items():
        metrics = entry["metrics"]
        floor = metrics.get("riesz_mmd_floor")
        say_once(
            f"{size}px: Riesz MMD {metrics['riesz_mmd']:.4g}"
            + ("" if floor is None else f" (real-vs-real {floor:.4g})")
            + f", Vendi {metrics['vendi_pixel']:.4g} (data {metrics['reference_vendi_pixel']:.4g})"
            + ("" if "pooled" not in entry else f", vs pooled Riesz MMD {entry['pooled']['metrics']['riesz_mmd']:.4g}")
        )
    if result["bits_per_dim"] is not None:
        say_once(f"bits/dim {result['bits_per_dim']['mean']:.4g} of {result['bits_per_dim']['count']} images")
    say_once(f"wrote {result['out_dir']}/metrics.json")


if __name__ == "__main__":
    main()
