#!/usr/bin/env bash
# Fetch, here, the wheels the GPU machine's Python (3.12, its own torch) lacks, into .whl/ at the
# repository root (kept out of git), for gpu_check.sh to install there.  Then run, with the device
# tool and carry [".whl"]:  COMMIT=<commit> bash benchmarks/gpu_check.sh "$OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -rf .whl
# ml-collections needs absl-py and PyYAML, which the machine has; lmdb needs nothing
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl ml-collections==1.1.0 lmdb==3.0.0
ls .whl
