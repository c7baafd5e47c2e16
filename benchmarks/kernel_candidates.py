"""Candidate changes to the CUDA sparse-convolution kernels, kept as edits of ``csrc/`` until a GPU has
timed them (:mod:`kernel_variants` builds and times each against ``csrc/`` in one process).

A GPU comes to this project for about fifteen minutes at a time, so a kernel change is prepared here,
checked on the CPU (every edit must still match ``csrc/`` exactly once, and the edited sources must
compile), and measured on the next GPU beside the kernels it would replace; the winner then moves into
``csrc/`` with its numbers.  An edit is ``(file, old, new)``: ``old`` must occur exactly once in the file
as the earlier edits of the candidate left it.

The hypothesis behind them, from the H200 run at commit cf39fbb (``benchmarks/results/gpu_h200.json``):
the forward gather moved 5 % of the memory bandwidth and ran 4.8× a copy of its values, the weight
gradient 2 % (12.5×), at 3 and 1.2 TFLOP/s: neither bandwidth nor arithmetic bounds them, the latency
of their dependent loads does.  Each tap loads a neighbour id (table or index map) and then the row it
names, behind a branch on whether the neighbour exists; the warp waits for each tap's row before it
can issue the next.  Loading a group of taps' ids, then all of their rows unconditionally (row 0 for an
absent neighbour, masked after), then summing, puts a group's loads in flight together.

A direct gather of either kind still reads every present neighbour's row from the caches, about ``k² d``
times the compulsory bytes (``sparse_kernels.gathered_bytes``); ``tiled_window`` instead loads a tile's
halo into shared memory once and sums every interior point's taps from there
(``candidate_kernels/tiled_window_conv.cuh``, inserted by its edits).  ``--compile-check`` compiles every
candidate's edited sources with nvcc (``make cuda-check`` runs it).

Once a GPU has timed a winner, ``python benchmarks/kernel_candidates.py --promote NAME`` writes its edits
into ``csrc/`` (then delete its entries here, or rewrite the candidates built on it).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

Edit = Tuple[str, str, str]  # (file in csrc/, old text, new text)
CUDA_FILE = "sparse_ops_cuda.cu"

_FORWARD_OLD = """    for (int64_t j = 0; j < taps; ++j) {
      const int64_t q = point.tap(j);
      if (q >= rows) continue;
      const Run x = *reinterpret_cast<const Run*>(values + q * channels + c);
      const Run w = *reinterpret_cast<const Run*>(weight_kc + j * channels + c);
      const acc_t scale_q = scale_gathered ? scale[q] : acc_t(1);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) acc[i] += static_cast<acc_t>(w.v[i]) * (static_cast<acc_t>(x.v[i]) * scale_q);
    }"""
_FORWARD_NEW = """    for (int64_t j0 = 0; j0 < taps; j0 += kTapGroup) {
      int64_t q[kTapGroup];
#pragma unroll
      for (int u = 0; u < kTapGroup; ++u) q[u] = j0 + u < taps ? point.tap(j0 + u) : rows;
      Run x[kTapGroup];
      acc_t factor[kTapGroup];  // the gathered row's scale, 0 for an absent neighbour or a tap past the end
#pragma unroll
      for (int u = 0; u < kTapGroup; ++u) {
        const bool present = q[u] < rows;
        const int64_t row = present ? q[u] : 0;
        x[u] = *reinterpret_cast<const Run*>(values + row * channels + c);
        factor[u] = present ? (scale_gathered ? scale[row] : acc_t(1)) : acc_t(0);
      }
#pragma unroll
      for (int u = 0; u < kTapGroup; ++u) {  // the weight rows are few and stay in L1
        const Run w = *reinterpret_cast<const Run*>(weight_kc + min(j0 + u, taps - 1) * channels + c);
#pragma unroll
        for (int i = 0; i < kWidth; ++i) {
          acc[i] += static_cast<acc_t>(w.v[i]) * (static_cast<acc_t>(x[u].v[i]) * factor[u]);
        }
      }
    }"""
_WEIGHT_OLD = """#pragma unroll
      for (int i = 0; i < kWeightTaps; ++i) {  // fixed trip counts, so acc stays in registers
        const int64_t q = i < tile ? point.tap(j0 + i) : rows;
        if (q >= rows) continue;
        const Run x = *reinterpret_cast<const Run*>(values + q * channels + c);
        const acc_t scale_q = scale_gathered ? scale[q] : acc_t(1);
#pragma unroll
        for (int w = 0; w < kWidth; ++w) {
          acc[i][w] += g_scaled[w] * (static_cast<acc_t>(x.v[w]) * scale_q);
        }
      }"""
_WEIGHT_NEW = """      int64_t q[kWeightTaps];  // fixed trip counts, so q and acc stay in registers
#pragma unroll
      for (int i = 0; i < kWeightTaps; ++i) q[i] = i < tile ? point.tap(j0 + i) : rows;
      Run x[kWeightTaps];
      acc_t factor[kWeightTaps];
#pragma unroll
      for (int i = 0; i < kWeightTaps; ++i) {
        const bool present = q[i] < rows;
        const int64_t row = present ? q[i] : 0;
        x[i] = *reinterpret_cast<const Run*>(values + row * channels + c);
        factor[i] = present ? (scale_gathered ? scale[row] : acc_t(1)) : acc_t(0);
      }
#pragma unroll
      for (int i = 0; i < kWeightTaps; ++i) {
#pragma unroll
        for (int w = 0; w < kWidth; ++w) acc[i][w] += g_scaled[w] * (static_cast<acc_t>(x[i].v[w]) * factor[i]);
      }"""
_WINDOW_OLD = """    int64_t padded_w, kernel_h, kernel_w, sign;
    __device__ int64_t tap(int64_t j) const {
      return centre[sign * ((j / kernel_w - kernel_h / 2) * padded_w + j % kernel_w - kernel_w / 2)];
    }"""
_WINDOW_NEW = """    int32_t padded_w, kernel_h, kernel_w, sign;  // 32 bits: a 64-bit division is a long subroutine
    __device__ int64_t tap(int64_t j) const {
      const int32_t jj = static_cast<int32_t>(j);
      return centre[sign * ((jj / kernel_w - kernel_h / 2) * padded_w + jj % kernel_w - kernel_w / 2)];
    }"""
_WINDOW_AT_OLD = """    return {padded + (p / n) * padded_h * padded_w + row * padded_w + col, padded_w, kernel_h, kernel_w,
            flip ? -1 : 1};"""
_WINDOW_AT_NEW = """    return {padded + (p / n) * padded_h * padded_w + row * padded_w + col, static_cast<int32_t>(padded_w),
            static_cast<int32_t>(kernel_h), static_cast<int32_t>(kernel_w), flip ? -1 : 1};"""
_EMPTY_OLD = """      out = at::empty({points, channels}, v.options());
      if (points == 0 || channels == 0) return;"""
_EMPTY_NEW = """      if (v.size(0) == 0) {  // no rows to gather, nor for the clamped loads: every sum is empty
        out = at::zeros({points, channels}, v.options());
        return;
      }
      out = at::empty({points, channels}, v.options());
      if (points == 0 || channels == 0) return;"""
_WEIGHT_TAPS_LINE = "constexpr int kWeightTaps = 8;      // taps one weight-gradient block sums (one register each)\n"
# candidates too long to read as an edit's text live in files of their own beside this one
_TILED = (Path(__file__).resolve().parent / "candidate_kernels" / "tiled_window_conv.cuh").read_text()
_DISPATCH_INDEX = "#define INFDIFF_DISPATCH_INDEX(TABLE, ...)"
_WINDOW_FORWARD_OLD = """  return conv_forward(values, weight, scale,
                      window_neighbours(index, index_map, height, width, kernel_h, kernel_w, flip));"""
_WINDOW_FORWARD_NEW = (
    """  if (auto tiled = tiled_window_conv(values, weight, scale, index, index_map, height, width, kernel_h, kernel_w, flip)) {
    return *tiled;
  }
"""
    + _WINDOW_FORWARD_OLD
)
_WINDOW_WEIGHT_OLD = """  return conv_weight(grad, values, scale, kernel_h * kernel_w,
                     window_neighbours(index, index_map, height, width, kernel_h, kernel_w, flip));"""
_WINDOW_WEIGHT_NEW = (
    """  if (auto tiled = tiled_window_weight(grad, values, scale, index, index_map, height, width, kernel_h, kernel_w,
                                      flip)) {
    return *tiled;
  }
"""
    + _WINDOW_WEIGHT_OLD
)

EDITS: Dict[str, List[Edit]] = {
    # the loads of kTapGroup taps in flight together, in the forward (and transposed) gather and the
    # weight gradient; the window lookup's offsets in 32-bit arithmetic
    "grouped_loads": [
        (
            CUDA_FILE,
            _WEIGHT_TAPS_LINE,
            _WEIGHT_TAPS_LINE + "constexpr int kTapGroup = 8;        // taps whose loads go out together\n",
        ),
        (CUDA_FILE, _FORWARD_OLD, _FORWARD_NEW),
        (CUDA_FILE, _WEIGHT_OLD, _WEIGHT_NEW),
        (CUDA_FILE, _WINDOW_OLD, _WINDOW_NEW),
        (CUDA_FILE, _WINDOW_AT_OLD, _WINDOW_AT_NEW),
        (CUDA_FILE, _EMPTY_OLD, _EMPTY_NEW),
        (
            CUDA_FILE,
            "  if (points == 0 || channels == 0 || taps == 0) return",
            "  if (points == 0 || channels == 0 || taps == 0 || v.size(0) == 0) return",
        ),
    ],
    # ptxas held to 64 registers in the gather (4 blocks of 256 threads per SM) and 85 in the weight
    # gradient (3): more warps in flight, at the price of a few spilled registers
    "launch_bounds": [
        (
            CUDA_FILE,
            "__global__ void gather_conv_kernel(",
            "__global__ void __launch_bounds__(kLanes* kPointsPerBlock, 4) gather_conv_kernel(",
        ),
        (
            CUDA_FILE,
            "__global__ void gather_conv_weight_kernel(",
            "__global__ void __launch_bounds__(kLanes* kPointsPerBlock, 3) gather_conv_weight_kernel(",
        ),
    ],
    "groups_of_4": [(CUDA_FILE, "constexpr int kTapGroup = 8; ", "constexpr int kTapGroup = 4; ")],
    "weight_tiles_of_4": [(CUDA_FILE, "constexpr int kWeightTaps = 8; ", "constexpr int kWeightTaps = 4; ")],
    # the window lookup's three kernels tile by tile from shared memory (candidate_kernels/tiled_window_conv.cuh)
    "tiled_window": [
        (CUDA_FILE, _DISPATCH_INDEX, _TILED + _DISPATCH_INDEX),
        (CUDA_FILE, _WINDOW_FORWARD_OLD, _WINDOW_FORWARD_NEW),
        (CUDA_FILE, _WINDOW_WEIGHT_OLD, _WINDOW_WEIGHT_NEW),
    ],
}

# name: the edit sets applied in turn to csrc/
CANDIDATES: Dict[str, Tuple[str, ...]] = {
    "grouped_loads": ("grouped_loads",),
    "grouped_loads_bounded": ("grouped_loads", "launch_bounds"),
    "grouped_loads_of_4": ("grouped_loads", "groups_of_4"),
    "grouped_loads_weight_tiles_of_4": ("grouped_loads", "weight_tiles_of_4"),
    "tiled_window": ("tiled_window",),
}


def candidate_sources(name: str, source_dir: Path, folder: Path) -> Path:
    """A copy of ``source_dir`` (``csrc/``) in ``folder`` with candidate ``name``'s edits applied.

    Raises ``ValueError`` naming the candidate, the file and the edit's first line where an edit's
    old text is not in the file exactly once (``csrc/`` changed since the candidate was written).
    """
    if name not in CANDIDATES:
        raise ValueError(f"unknown kernel candidate {name!r}; expected one of {sorted(CANDIDATES)}")
    folder.mkdir(parents=True, exist_ok=True)
    for source in source_dir.iterdir():
        if source.is_file():
            shutil.copyfile(source, folder / source.name)
    for edit_set in CANDIDATES[name]:
        for file, old, new in EDITS[edit_set]:
            text = (folder / file).read_text()
            found = text.count(old)
            if found != 1:
                first = old.strip().splitlines()[0]
                raise ValueError(
                    f"kernel candidate {name!r}, edit {edit_set!r}: {file} holds {found} copies of {first!r}, "
                    "expected exactly one (csrc/ changed since the candidate was written)"
                )
            (folder / file).write_text(text.replace(old, new))
    return folder


def promote(name: str, source_dir: Path) -> list:
    """Write candidate ``name``'s edits into ``source_dir`` itself; returns the names of the files changed."""
    with tempfile.TemporaryDirectory() as scratch:
        edited = candidate_sources(name, source_dir, Path(scratch))
        changed = [f.name for f in sorted(edited.iterdir()) if not filecmp.cmp(f, source_dir / f.name, shallow=False)]
        for file in changed:
            shutil.copyfile(edited / file, source_dir / file)
    return changed


def compile_check(names) -> None:
    """Compile (only) each candidate's edited ``.cu`` files with nvcc, as ``make cuda-check`` does ``csrc/``'s:
    a candidate that does not build fails here, not in the GPU's fifteen minutes."""
    from infdiff.ops.extension import SOURCE_DIR
    from infdiff.ops.extension import compile_check as nvcc_check

    def check(name: str, scratch: str) -> None:
        edited = candidate_sources(name, SOURCE_DIR, Path(scratch))
        for source in edited.glob("*.cu"):
            if filecmp.cmp(source, SOURCE_DIR / source.name, shallow=False):
                source.unlink()  # as csrc/ has it: checked there
        nvcc_check(source_dir=edited)
        print(f"kernel candidate {name}: its edited sources compile")  # after nvcc's lines, which run in parallel

    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for done in [pool.submit(check, name, str(Path(scratch) / name)) for name in names]:
            done.result()  # the first failure's CalledProcessError, after nvcc's output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--promote", choices=sorted(CANDIDATES), help="the candidate to write into csrc/")
    action.add_argument(
        "--compile-check", action="store_true", help="compile every candidate's edited CUDA sources with nvcc"
    )
    args = parser.parse_args(argv)
    if args.compile_check:
        if shutil.which("nvcc") is None:
            parser.error("--compile-check needs nvcc (the CUDA toolkit) on PATH; none found")
        compile_check(sorted(CANDIDATES))
        return
    source_dir = Path(__file__).resolve().parents[1] / "csrc"
    changed = promote(args.promote, source_dir)
    print(
        f"{args.promote}: wrote {', '.join(changed)} in {source_dir}; now remove its edits from {Path(__file__).name}"
    )


if __name__ == "__main__":
    main()
