#!/usr/bin/env bash
# GPU checks in one go, for a machine with a CUDA GPU and the project's packages importable
# (bench/gpu_wheels.sh lists what a bare GPU Python lacks): the tests marked gpu, then the GPU
# benchmark. Full logs go under ${OUT:-gpu-out}/.
#   bash bench/gpu_session.sh [bench_gpu.py options, e.g. --size 8192 --models unet]
# The default time limits (tests 150 s, bench 380 s) keep the whole run, package setup
# included, within ten minutes; output is unbuffered, so a run cut off by its limit still
# leaves what it measured.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
out=${OUT:-gpu-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
# a torch without CUDA would skip every gpu test and exit 0: stop here instead
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else
            f'torch {torch.__version__} finds no CUDA device: nothing here would test the GPU')" || exit 1
# every module the tests and the bench import, now: a missing wheel costs seconds, not the session
python3 -c "import tests.conftest, bench.bench_gpu, geoseg.jobs.runner, geoseg.parallel.cluster" \
  || { echo "a package is missing (see above): add its wheel (bench/gpu_wheels.sh)"; exit 1; }
timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -rs -p no:cacheprovider -m gpu \
  tests/models/test_gpu.py tests/models/test_cache.py \
  >"$out/tests.txt" 2>&1
echo "gpu tests: exit $?"; tail -n 8 "$out/tests.txt"
if grep -q "SKIPPED" "$out/tests.txt"; then echo "gpu tests: some were skipped (see above): not a pass"; fi
timeout "${BENCH_TIMEOUT:-380}" python3 bench/bench_gpu.py --gpu-threads 1,4 --check "$@" \
  >"$out/bench.txt" 2>&1
echo "bench: exit $?"; grep -v "^INFO\|^WARNING\|warn" "$out/bench.txt" | tail -n 40
