#!/usr/bin/env bash
# lmref.cuda on a real GPU in ONE device call (issues 13 and 15): the CUDA tests on the device,
# the side-by-side benchmark table, the host-floor table and, with LMREF_NCU=1, Nsight Compute
# summaries of every kernel at the benchmark sizes. Everything lands in $OUT (the device tool's
# folder that comes back) or ./gpu-out elsewhere. Budget: ~6 minutes on an H100/H200.
#
# Before the call, here (the device's NumPy 2.5 breaks numba-cuda 0.30; carry NumPy 2.4):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
#       -d .whl numpy==2.4.6
# then run with carry [".whl"]:  bash benchmarks/gpu/device_run.sh
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi

{
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
    python3 -c "import numpy, numba, torch, importlib.metadata as m
print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda',
      m.version('numba-cuda'), 'torch', torch.__version__)"
    date -u
} 2>&1 | tee "$OUT/versions.txt"

echo "== tests/cuda on the device"
LMREF_CUDA_REAL=1 timeout 240 python3 -m pytest -q -p no:cacheprovider -x tests/cuda 2>&1 \
    | tee "$OUT/tests.txt" | tail -15

echo "== host floor (8x8 inputs)"
timeout 90 python3 -m benchmarks.bench_cuda --floor 2>&1 | tee "$OUT/floor.md"

echo "== benchmark table"
timeout 240 python3 -m benchmarks.bench_cuda 2>&1 | tee "$OUT/bench.md"

if [ "${LMREF_NCU:-0}" = 1 ] && command -v ncu >/dev/null; then
    echo "== ncu: every kernel of one call per benchmark"
    timeout 240 ncu --clock-control none --section SpeedOfLight --section LaunchStats \
        --section Occupancy --csv --page details python3 benchmarks/gpu/one_call_each.py \
        > "$OUT/ncu.csv" 2>"$OUT/ncu.err"
    python3 benchmarks/gpu/ncu_summary.py "$OUT/ncu.csv" | tee "$OUT/ncu.md"
fi
