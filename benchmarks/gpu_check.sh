#!/usr/bin/env bash
# The one prepared GPU run: build the kernels (and the kernel candidates of benchmarks/kernel_candidates.py beside
# them), run the GPU tests and every GPU benchmark, and write into the folder given as argument three files (a
# device machine returns at most eight): results.json (the environment and every benchmark's JSON under its name),
# log.txt, and tables.md with all their Markdown tables.
#
# It took 293 s on an H200 at commit cf39fbb, build included, before the two stage-1 steps at the paper's batch of
# 32 and the compiled ones (U-Nets, or whole networks, as CUDA graphs) were added: their time is not known yet;
# compiling comes last, so a device call that ends first loses only it.  The steps' own time limits, which only a
# hang or a slower machine reaches, add up to 1,475 s after the build and the tests, more than one device call's
# 600 s: give the call a timeout and rerun what is missing with ONLY=... (below).
#
#   COMMIT=$(git rev-parse HEAD) bash benchmarks/gpu_check.sh "$OUT"
#
# DRY_RUN=1 checks it on any machine, GPU or not, in seconds (tests/test_gpu_check.py does): nothing is
# built or timed, the GPU tests are only collected, and every benchmark parses its arguments and
# configs with --dry-run; any that fails makes the script fail.
#
# Wheels the machine lacks (ml-collections, lmdb) are installed from .whl/ when that folder is there
# (benchmarks/gpu_wheels.sh fetches them here; the device call carries [".whl"]).
#
# A rerun need not repeat what already came back: ONLY="stage1_ffhq256_gpu knn_gpu" runs just those steps
# (the names of the bench lines below, and "tests" for the GPU tests) after the build.  If the CUDA kernels
# do not build, the script stops there (log.txt holds the compiler's output) rather than spend the rest of
# the GPU time timing the reference alone.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)  # before the cd below, so a relative OUT_DIR means the caller's
cd "$(dirname "$0")/.."
steps="tests $(sed -n 's/^bench \([a-z0-9_]*\) .*/\1/p' benchmarks/gpu_check.sh | tr '\n' ' ')"
only=${ONLY:-$steps}
for name in $only; do
    case " $steps " in
        *" $name "*) ;;
        *) echo "ONLY names $name, which is no step of gpu_check.sh (its steps: $steps)" >&2; exit 2 ;;
    esac
done
selected() { case " $only " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
py=${PYTHON:-python3}
dry=${DRY_RUN:-0}
failed=0
start=$(date +%s)
log="$out/log.txt"
if [ "$dry" != 1 ] && ! $py -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device here: DRY_RUN=1 bash benchmarks/gpu_check.sh OUT_DIR checks this script without one" \
        | tee -a "$log"
    exit 1
fi
if [ -d .whl ] && [ "$dry" != 1 ] && ! $py -c "import ml_collections, lmdb" 2>/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MAX_JOBS=16
# by default inside the repository, where an ignored build survives between calls to a warm machine: a rerun
# after a Python-only fix loads the kernels instead of compiling them again
export INFDIFF_EXTENSION_DIR="${INFDIFF_EXTENSION_DIR:-$PWD/build/gpu-extensions}"

# NAME.json joins results.json under NAME (what a benchmark cut short by its limit had written, too)
merge() {
    $py - "$out" "$1" <<'PY'
import json, sys
from pathlib import Path
out, name = Path(sys.argv[1]), sys.argv[2]
results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
results[name] = json.loads((out / f"{name}.json").read_text())
(out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
(out / f"{name}.json").unlink()
PY
}

if [ "$dry" = 1 ]; then
    if selected tests; then
        $py -m pytest -q -p no:cacheprovider --collect-only tests/test_gpu.py tests/test_kernels.py \
            tests/test_norm_kernels.py tests/test_gpu_compile.py 2>&1 | tail -3 | tee -a "$log" || failed=1
    fi
else
$py - >"$out/environment.json" <<PY
import json, os, platform, torch
print(json.dumps(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                      python=platform.python_version(), commit=os.environ.get("COMMIT", "unknown"),
                      date=__import__("datetime").datetime.now().isoformat(timespec="seconds")), indent=2))
PY
merge environment

# both kernel libraries build at once (each is one compiler process), and the kernel candidates beside them
$py -c "from infdiff.ops.extension import load_kernels; load_kernels('cuda')" >"$out/build_cuda.tmp" 2>&1 &
cuda_build=$!
if selected kernel_variants_gpu_bf16; then
    $py benchmarks/kernel_variants.py --build-only >"$out/build_candidates.tmp" 2>&1 &
    candidates_build=$!
fi
$py -c "from infdiff.ops.extension import load_kernels; load_kernels('cpu')" >>"$log" 2>&1
wait $cuda_build
cuda_built=$?
cat "$out/build_cuda.tmp" >>"$log" && rm "$out/build_cuda.tmp"
if [ -n "${candidates_build:-}" ]; then
    wait "$candidates_build" || echo "the kernel candidates did not build (their step will say why)" | tee -a "$log"
    cat "$out/build_candidates.tmp" >>"$log" && rm "$out/build_candidates.tmp"
fi
if [ "$cuda_built" != 0 ]; then
    tail -60 "$log"
    echo "the CUDA kernels did not build (log.txt has the compiler's output): stopping here" | tee -a "$log"
    exit 1
fi
echo "kernels built in $(( $(date +%s) - start )) s" | tee -a "$log"

if selected tests; then
    # one pytest per file, so a crash (as the H200 run at cf39fbb had) costs only its own file's results; all
    # of pytest's output goes into the log (a crash's traceback would push the summary out of a tail)
    for tests in tests/test_gpu.py tests/test_kernels.py tests/test_norm_kernels.py; do
        timeout 40 $py -m pytest -q -rfEs -p no:cacheprovider "$tests" 2>&1 | tee -a "$log" | tail -15
    done
    # inductor's code generation for the network compiled whole into CUDA graphs: its own, longer limit
    timeout 120 $py -m pytest -q -rfEs -p no:cacheprovider tests/test_gpu_compile.py 2>&1 | tee -a "$log" | tail -15
fi
fi

# one benchmark under its own time limit; its JSON joins results.json and its Markdown table tables.md
bench() {
    local name=$1 limit=$2
    shift 2
    selected "$name" || return 0
    if [ "$dry" = 1 ]; then
        $py "$@" --out "$out/$name.json" --dry-run 2>&1 | tail -24 | tee -a "$log"
        [ "${PIPESTATUS[0]}" = 0 ] || { echo "dry run of $name failed" | tee -a "$log"; failed=1; }
        return
    fi
    timeout "$limit" $py "$@" --out "$out/$name.json" 2>&1 | tail -24 | tee -a "$log"
    if [ -f "$out/$name.json" ]; then
        merge "$name"
    fi
    if [ -f "$out/$name.md" ]; then
        cat "$out/$name.md" >>"$out/tables.md" && rm "$out/$name.md"
    fi
}
bench sparse_conv_gpu_bf16 110 benchmarks/sparse_conv.py --device cuda --dtype bfloat16 --sizes 64 128 256 512
bench sparse_kernels_gpu_bf16 35 benchmarks/sparse_kernels.py --device cuda --dtype bfloat16 --sizes 256 512 \
    --batch 8
bench op_overhead_gpu 40 benchmarks/op_overhead.py --device cuda --op-cases 8x1 64x4 256x8 --size 256 --batch 8
bench kernel_variants_gpu_bf16 60 benchmarks/kernel_variants.py --device cuda --dtype bfloat16 --sizes 256 512 \
    --batch 8
bench stage1_ffhq256_gpu 120 benchmarks/stage1_variants.py --device cuda --config configs/ffhq_256_config.py \
    --config.data.name=shapes --config.train.batch_size=8 --repeats 5 --breakdown \
    --variant dense loss.points=65536 loss.encoder_points=65536 \
    --variant quarter loss.points=16384 loss.encoder_points=16384 \
    --variant eighth loss.points=8192 loss.encoder_points=8192
bench stage1_ffhq256_batch32_gpu 150 benchmarks/stage1_variants.py --device cuda --config configs/ffhq_256_config.py \
    --config.data.name=shapes --repeats 5 --breakdown \
    --variant dense loss.points=65536 loss.encoder_points=65536 \
    --variant quarter loss.points=16384 loss.encoder_points=16384 \
    --variant eighth loss.points=8192 loss.encoder_points=8192
bench decoder_front_back_gpu 50 benchmarks/decoder_front_back.py --device cuda --size 256 --batch 8
bench decode_step_ffhq256_gpu 60 benchmarks/decode_step.py --device cuda --config configs/ffhq_256_config.py \
    --sides 256 512 1024 --batch 4 --precision fp32 bf16
bench knn_gpu 30 benchmarks/knn.py --device cuda --sizes 128 256 512
bench norm_film_gpu_bf16 30 benchmarks/norm_film.py --device cuda --dtype bfloat16 --points 16384 65536 --batch 32
# last, since compiling is the steps' time this script cannot foresee (inductor on that host), each step publishing
# on its own: the whole network as CUDA graphs (train.compile_scope=network: the sparse parts too), then the U-Nets
# alone (grid), then the decoder's front and back compiled whole, and a sampling step compiled whole
bench stage1_ffhq256_network_graphs_gpu 240 benchmarks/stage1_variants.py --device cuda \
    --config configs/ffhq_256_config.py --config.data.name=shapes --config.train.batch_size=8 --repeats 5 \
    --variant quarter loss.points=16384 loss.encoder_points=16384 \
    --variant quarter_network_graphs loss.points=16384 loss.encoder_points=16384 train.compile=reduce-overhead \
    train.compile_scope=network \
    --variant dense_network_graphs loss.points=65536 loss.encoder_points=65536 train.compile=reduce-overhead \
    train.compile_scope=network
bench stage1_ffhq256_compiled_gpu 200 benchmarks/stage1_variants.py --device cuda --config configs/ffhq_256_config.py \
    --config.data.name=shapes --config.train.batch_size=8 --repeats 5 \
    --variant quarter loss.points=16384 loss.encoder_points=16384 \
    --variant quarter_graphs loss.points=16384 loss.encoder_points=16384 train.compile=reduce-overhead \
    --variant dense_graphs loss.points=65536 loss.encoder_points=65536 train.compile=reduce-overhead
bench decoder_front_back_graphs_gpu 200 benchmarks/decoder_front_back.py --device cuda --size 256 --batch 8 \
    --fractions 0.25 --compile reduce-overhead
bench decode_step_graphs_gpu 150 benchmarks/decode_step.py --device cuda --config configs/ffhq_256_config.py \
    --sides 256 1024 --batch 4 --precision bf16 --compile reduce-overhead
echo "gpu_check done in $(( $(date +%s) - start )) s" | tee -a "$log"
exit $failed
