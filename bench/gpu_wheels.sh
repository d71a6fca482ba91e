#!/usr/bin/env bash
# The packages a bare GPU Python (torch, numpy, xarray, scikit-image, pytest, hypothesis; with
# dask, distributed, zarr, rasterio, pydantic, nibabel and s3fs given as wheels without their
# dependencies) still lacks for bench/gpu_session.sh: found by running the gpu tests and
# bench/bench_gpu.py in such an environment until nothing was missing. About 6 MB of cp312 wheels,
# added to .whl/ beside the others, to be installed with them (pip --no-deps .whl/*.whl).
#   bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl \
  pyyaml toolz cloudpickle click attrs safetensors psutil msgpack urllib3 \
  aiohttp multidict yarl idna propcache aiohappyeyeballs aiosignal frozenlist wrapt
ls .whl | wc -l
