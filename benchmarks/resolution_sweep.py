"""Resolution generalisation: a two-stage model trained at R sampled natively at R/2, R, 2R and 4R, on the shapes.

The embedded shapes have exact renderings at every size, so each resolution has a true reference:
the first N training images rendered there.  Every cell scores N images against it (KID, FID, precision
and recall on the extractor's features; the CNO Riesz MMD on pixels; the top-octave sharpness):

* ``native``: the model's samples decoded at that size (the decoder's dense path, one noise function
  for every size, so each column of samples is one sample at every resolution);
* ``upsampled samples``: the same samples decoded at R, then resized bicubically (baseline a);
* ``upsampled data``: held-out images rendered at R, then resized bicubically: the ceiling of any
  upsampler of R-sized images (baseline b);
* ``data``: held-out images rendered exactly at that size: the floor (real against real).

The model is a trained run (``make demo``'s by default)::

    python benchmarks/resolution_sweep.py --config configs/shapes_latent_config.py \\
        --decoder_config configs/shapes_32_config.py --num_samples 256 --sampling_steps 25

Writes ``<name>.json`` (every setting and number), ``<name>.md`` (the table) and ``<name>.png`` (each
metric against resolution) into ``--out_dir`` (``docs/``).  N, steps, sampler and extractor are in every
table.  KID is the metric to read at this N (FID is biased upwards at small N; both are reported).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from infdiff.data import build_dataset
from infdiff.metrics import EXTRACTORS, features_of, score_images
from infdiff.pipeline.cli import one_line_errors, parse_trained_runs
from infdiff.pipeline.generation import SampleSource, decoder_sampler
from infdiff.train.config import ConfigError

METHODS = ("native", "upsampled samples", "upsampled data", "data")
SHOWN = {
    "kid": "KID ×10³",
    "fid": "FID",
    "precision": "precision",
    "recall": "recall",
    "riesz_mmd": "Riesz MMD",
    "sharpness": "sharpness",
}


def options(parser):
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 1, 2, 4], help="sizes as multiples of R")
    parser.add_argument("--num_samples", type=int, default=256, help="N images per cell")
    parser.add_argument("--sampling_steps", type=int, default=25)
    parser.add_argument("--sampler", default="ddpm")
    parser.add_argument("--extractor", choices=EXTRACTORS.names(), default="inception")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kid_subsets", type=int, default=100)
    parser.add_argument("--out_dir", default="docs")
    parser.add_argument("--name", default="resolution_sweep")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking), clamped to [-1, 1]."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(
        images, size=size, mode="bicubic", align_corners=False, antialias=size < images.shape[-1]
    ).clamp(-1, 1)


def renders(dataset, count: int, size: int) -> torch.Tensor:
    return torch.stack([dataset.render_sample(i, size) for i in range(count)])


def table(result: dict) -> str:
    """The Markdown table of a sweep's numbers, with N, steps, sampler and extractor in its caption."""
    s = result["settings"]
    lines = [
        f"N = {s['num_samples']} per cell, decoder {s['sampler']} with {s['sampling_steps']} steps, latents "
        f"{s['latent_sampler']} with {s['latent_sampling_steps']} steps, extractor `{s['extractor']}` "
        f"({s['extractor_description']}); trained at {s['train_size']}², references: exact renders of the "
        f"first N training images at each size.",
        "",
        "| size | method | " + " | ".join(SHOWN.values()) + " | reference sharpness |",
        "| --- | --- | " + " | ".join("---" for _ in SHOWN) + " | --- |",
    ]
    for size, cells in result["cells"].items():
        for method, cell in cells.items():
            values = [cell[key] * (1e3 if key == "kid" else 1) for key in SHOWN]
            lines.append(
                f"| {size}² | {method} | "
                + " | ".join(f"{v:.4g}" for v in values)
                + f" | {cell['reference_sharpness']:.4g} |"
            )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Each metric against the resolution, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(size) for size in result["cells"]]
    figure, axes = plt.subplots(1, len(SHOWN), figsize=(4 * len(SHOWN), 3.4))
    for axis, (key, label) in zip(axes, SHOWN.items()):
        for method in METHODS:
            values = [result["cells"][str(size)][method][key] * (1e3 if key == "kid" else 1) for size in sizes]
            axis.plot(sizes, values, marker="o", label=method)
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.set_xlabel("resolution")
        axis.set_title(label)
    axes[0].legend(fontsize=8)
    s = result["settings"]
    figure.suptitle(
        f"trained at {s['train_size']}², N = {s['num_samples']}, {s['sampler']}-{s['sampling_steps']}, "
        f"extractor {s['extractor']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    configs, args = parse_trained_runs(__doc__, options, argv)
    started = time.perf_counter()
    with one_line_errors("resolution_sweep.py"):
        decoder_config = configs["decoder_config"]
        if decoder_config.data.name != "shapes":
            raise ConfigError(
                f"the sweep needs exact renders at every size: data.name='shapes', got {decoder_config.data.name!r}"
            )
        train_size = decoder_config.data.img_size
        sizes = [round(factor * train_size) for factor in args.factors]
        extractor = EXTRACTORS[args.extractor]()
        reference_set = build_dataset(dict(decoder_config.data.to_dict(), split="train"))
        held_out = build_dataset(dict(decoder_config.data.to_dict(), split="test"))
        spec = decoder_sampler(decoder_config, args.sampler, args.sampling_steps)
        source = SampleSource.load(
            configs["config"], decoder_config, train_size, spec, seed=args.seed, noise_size=math.lcm(*sizes, train_size)
        )
    n = args.num_samples

    def samples(size: int) -> torch.Tensor:
        sized = SampleSource(source.decoder, source.latent, size, spec, source.seed, source.noise_size)
        return torch.cat(
            [sized.batch(start, min(args.batch_size, n - start)) for start in range(0, n, args.batch_size)]
        )

    at_train = samples(train_size)
    data_at_train = renders(held_out, n, train_size)
    cells, timings = {}, {}
    for size in sizes:
        tick = time.perf_counter()
        reference = renders(reference_set, n, size)
        reference_features = features_of(extractor, reference.split(args.batch_size))
        sets = {
            "native": at_train if size == train_size else samples(size),
            "upsampled samples": resize(at_train, size),
            "upsampled data": resize(data_at_train, size),
            "data": renders(held_out, n, size),
        }
        cells[str(size)] = {
            method: score_images(
                images,
                reference,
                extractor,
                kid_subsets=args.kid_subsets,
                batch_size=args.batch_size,
                seed=args.seed,
                reference_features=reference_features,
            )
            for method, images in sets.items()
        }
        timings[str(size)] = time.perf_counter() - tick
        print(f"{size}²: " + ", ".join(f"{m} KID {c['kid'] * 1e3:.3g}e-3" for m, c in cells[str(size)].items()))
    result = {
        "benchmark": "resolution_sweep",
        "argv": sys.argv[1:] if argv is None else list(argv),
        "device": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "settings": dict(
            num_samples=n,
            sizes=sizes,
            train_size=train_size,
            extractor=extractor.name,
            extractor_description=extractor.description,
            kid_subsets=args.kid_subsets,
            **source.settings(),
        ),
        "cells": cells,
        "seconds_per_size": timings,
        "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(table(result))
    plot(result, out / f"{args.name}.png")
    print(f"{out / args.name}.json, .md, .png written in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
