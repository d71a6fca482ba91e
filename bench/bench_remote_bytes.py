"""Bytes each process downloads while a job segments a multi-gigabyte COG on S3.

    python bench/bench_remote_bytes.py [--size 27000] [--workers 2]

A synthetic 3-band uint8 COG (uncompressed, so its bytes are its pixels: 2.2 GB at the default
size) is uploaded to moto's S3 server, running in its own process. The client and each worker
reach the server through a byte-counting proxy of their own (``AWS_ENDPOINT_URL`` per process),
so every byte any process downloads is counted. A pixel-wise threshold job then segments the
whole raster. Prints each process's download as a share of the file; no process should come
near 100%, the client should stay near 0 and the workers should split the full-resolution
pixels between them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import fsspec
import numpy as np
import rasterio
import rasterio.shutil
from distributed import Client, Nanny, Scheduler, SpecCluster
from rasterio.windows import Window

from geoseg.jobs import JobSpec, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
from tests.conftest import CRS, TRANSFORM
from tests.jobs.test_remote_reads import CountingProxy, free_port


def write_cog(path: str, size: int) -> None:
    """A tiled GeoTIFF written strip by strip, then rewritten as a COG with overviews."""
    tiled = path + ".tiled.tif"
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": CRS,
               "transform": TRANSFORM, "tiled": True, "blockxsize": 512, "blockysize": 512, "BIGTIFF": "YES"}
    rng = np.random.default_rng(0)
    with rasterio.open(tiled, "w", **profile) as dst:
        for y in range(0, size, 2048):
            h = min(2048, size - y)
            dst.write(rng.integers(0, 255, (3, h, size), dtype=np.uint8), window=Window(0, y, size, h))
    rasterio.shutil.copy(tiled, path, driver="COG", blocksize=512, overview_resampling="nearest",
                         compress="none", bigtiff="yes")
    os.remove(tiled)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=27000, help="pixels per side")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        direct = {"key": "k", "secret": "s",
                  "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **direct)
        boto3.client("s3", endpoint_url=direct["client_kwargs"]["endpoint_url"], region_name="us-east-1",
                     aws_access_key_id="k", aws_secret_access_key="s").create_bucket(Bucket="geoseg")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_cog(f"{tmp}/big.tif", args.size)
            fs.put(f"{tmp}/big.tif", "s3://geoseg/big.tif")
            size = fs.size("s3://geoseg/big.tif")
            print(f"COG {args.size}^2 x 3 bands: {size / 1e9:.2f} GB, written and uploaded in "
                  f"{time.perf_counter() - t0:.0f} s")
            names = ["client"] + [f"worker-{i}" for i in range(args.workers)]
            proxies = {n: CountingProxy(("127.0.0.1", port)) for n in names}
            os.environ["AWS_ENDPOINT_URL"] = proxies["client"].url
            options = {"key": "k", "secret": "s", "client_kwargs": {"region_name": "us-east-1"},
                       "skip_instance_cache": True}
            spec = JobSpec.from_dict({
                "input": {"url": "s3://geoseg/big.tif", "storage_options": options},
                "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
                "output": {"url": f"{tmp}/mask.zarr", "chunks": [2048, 2048]}})
            workers = {n: {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1",
                                                     "env": {"AWS_ENDPOINT_URL": proxies[n].url}}}
                       for n in names[1:]}
            with SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": None,
                                                                     "host": "127.0.0.1"}},
                             workers=workers) as cluster, Client(cluster) as client:
                report = run(spec, client=client)
            print(f"job: {report.n_tasks} tasks in {report.seconds:.0f} s")
            for name, proxy in proxies.items():
                print(f"  {name:>9}: downloaded {proxy.downloaded / 1e6:10.1f} MB = "
                      f"{proxy.downloaded / size:6.1%} of the file")
            total = sum(p.downloaded for n, p in proxies.items() if n != "client")
            print(f"  all workers: {total / size:.1%} of the file (full resolution is about "
                  f"{3 * args.size ** 2 / size:.1%} of it)")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
