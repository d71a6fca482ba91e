#!/usr/bin/env bash
# GPU checks in one go, for a machine with a CUDA GPU and the project's packages importable:
# the tests marked gpu, then the GPU benchmark. Full logs go under ${OUT:-gpu-out}/.
#   bash bench/gpu_session.sh [bench_gpu.py options, e.g. --size 8192 --models unet]
# The default time limits (tests 120 s, bench 400 s) keep the whole run, package setup
# included, within ten minutes; the logs are written as they go, so a cut-off run still
# leaves what it measured.
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
timeout "${TEST_TIMEOUT:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/models/test_gpu.py \
  >"$out/tests.txt" 2>&1
echo "gpu tests: exit $?"; tail -n 8 "$out/tests.txt"
timeout "${BENCH_TIMEOUT:-400}" python3 bench/bench_gpu.py --gpu-threads 1,4 --check "$@" \
  >"$out/bench.txt" 2>&1
echo "bench: exit $?"; grep -v "^INFO\|^WARNING\|warn" "$out/bench.txt" | tail -n 40
