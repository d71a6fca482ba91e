#!/usr/bin/env bash
# The packages a bare GPU Python (torch, numpy, xarray, scikit-image, pytest, hypothesis) lacks
# for bench/gpu_session.sh: dask, distributed, zarr, rasterio, pydantic, nibabel, s3fs and what
# they need, found by running the gpu tests and bench/bench_gpu.py in such an environment until
# nothing was missing (and the import check of gpu_session.sh against that list), at the versions
# the test suite last passed with where they matter. About 70 MB of cp312 wheels in .whl/, to be
# installed there without their dependencies (pip --no-deps .whl/*.whl): every one is listed.
#   bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl \
  dask==2026.8.0 distributed==2026.8.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
  google-crc32c==1.9.0 crc32c msgspec rasterio==1.4.4 affine==3.0.1 click-plugins==1.1.1.2 \
  cligj==0.7.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 nibabel==5.4.2 s3fs==2026.9.0 aiobotocore==3.10.0 \
  botocore==1.43.117 jmespath==1.1.0 aioitertools==0.13.0 partd==1.4.2 locket==1.0.0 \
  zict==3.0.0 tblib==3.2.2 tornado==6.6.1 fsspec==2026.9.0 \
  pyyaml toolz cloudpickle click attrs safetensors psutil msgpack urllib3 \
  aiohttp multidict yarl idna propcache aiohappyeyeballs aiosignal frozenlist wrapt
ls .whl | wc -l
