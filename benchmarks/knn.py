"""kNN of coarse-grid cell centres among scattered pixels: the window search per backend against brute force.

All variants run in one process, interleaved round-robin, on the same pixels: B images keep
``density`` of a ``size²`` grid, and each cell of a ``size/2`` grid (∞-Diff's ``uno_res``) asks
for its ``k`` nearest present pixels.  Variants:

* ``window_<backend>``: :func:`infdiff.ops.knn_grid_search` with each backend that runs on the
  device (the window search with its exact fallback, one fresh image per call so nothing is cached);
* ``cdist_topk``: ``torch.cdist`` of every cell to every pixel and ``topk`` (the obvious route).

Reported: median ms, ratio to ``cdist_topk``, and the fraction of cells the window could not
prove (answered by the exact scan).  A Markdown table is written next to the JSON.

    python benchmarks/knn.py --sizes 64 128 256 --out benchmarks/results/knn_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from infdiff.ops import SparseImage, grid_coords, knn_grid_search, uniform_subset
from infdiff.ops.knn import default_window_radius

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_dry_run, dry_run, backends_for, environment, interleaved_medians, publish  # noqa: E402  (sibling modules)


def unproven_fraction(sparse: SparseImage, grid: int, k: int) -> float:
    """Share of (item, cell) pairs whose k-th window distance exceeds the window's proof bound."""
    h, w = sparse.size
    radius = default_window_radius(k, sparse.num_points / (h * w))
    dist, _ = knn_grid_search(sparse, grid, k, window_radius=radius, backend="torch")
    return float((dist[..., -1] > ((radius + 0.5) / max(h, w)) ** 2).float().mean())


def run(size: int, batch: int, density: float, k: int, repeats: int, device: str, backends) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    n, grid = int(size * size * density), size // 2
    index = uniform_subset(batch, size, n, generator=g, device=device)
    values = torch.zeros(batch, n, 1, device=device)
    query = grid_coords(grid, device=device).expand(batch, -1, -1)

    def window(backend):
        return lambda: knn_grid_search(SparseImage(values, index, (size, size)), grid, k, backend=backend)

    def cdist_topk():
        points = SparseImage(values, index, (size, size)).coords()
        return torch.cdist(query, points).topk(k, dim=-1, largest=False)

    variants = {f"window_{name}": window(name) for name in backends}
    variants["cdist_topk"] = cdist_topk
    seconds = interleaved_medians(variants, repeats, device)
    baseline = seconds["cdist_topk"]
    return {
        "size": size,
        "grid": grid,
        "batch": batch,
        "density": density,
        "k": k,
        "unproven_cell_fraction": unproven_fraction(SparseImage(values, index, (size, size)), grid, k),
        "variants": {name: {"median_ms": 1e3 * t, "ratio_to_cdist_topk": t / baseline} for name, t in seconds.items()},
    }


def markdown(results: dict) -> str:
    names = list(results["runs"][0]["variants"])
    lines = [
        f"kNN (k={results['runs'][0]['k']}) of a side/2 grid among {results['runs'][0]['density']:.0%} of the pixels, "
        f"B={results['runs'][0]['batch']}, on {results['device_name']} ({results['device']}, torch {results['torch']}, "
        f"{results['threads']} threads); median ms (ratio to cdist_topk)",
        "",
        "| size | cells the window could not prove | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for r in results["runs"]:
        cells = [f"{v['median_ms']:.2f} ({v['ratio_to_cdist_topk']:.3f}×)" for v in r["variants"].values()]
        lines.append(f"| {r['size']}² | {r['unproven_cell_fraction']:.2%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--density", type=float, default=0.25)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (and a .md table beside it)")
    add_dry_run(parser)
    args = parser.parse_args()
    if dry_run(args, "knn.py", device=args.device, sizes=args.sizes):
        return
    backends = backends_for(args.device)
    results = {
        **environment("knn_grid_search", args.device),
        "runs": [run(s, args.batch, args.density, args.k, args.repeats, args.device, backends) for s in args.sizes],
    }
    publish(results, markdown, args.out)


if __name__ == "__main__":
    main()
