"""Bytes each process downloads while a job segments a multi-gigabyte remote COG.

    python bench/bench_remote_bytes.py [--size 27000] [--workers 2] [--via http|s3]
                                       [--chunks 2048] [--halo 0]

A synthetic 3-band uint8 COG (uncompressed random pixels, so its bytes are its pixels: 2.99 GB
with overviews at the default size) is served from a process of its own: aiohttp's static file
server answering HTTP range requests (default), or moto's S3 server. moto reads the whole object
for every range request (1.7 to 2.0 s per 16 KiB request on the 2.99 GB file, against 2 ms over
HTTP), so a job of some 3000 tile reads would take hours: use ``--via s3`` for small sizes.

The client and each worker reach the server through a byte-counting proxy of their own
(``HTTP_PROXY`` or ``AWS_ENDPOINT_URL`` per process), so every byte any process downloads is
counted. A pixel-wise threshold job then segments the whole raster, and its mask is checked on
random windows. Prints each process's download as a share of the file: no process should come near
100%, the client should stay near 0 and the workers should split the full-resolution pixels.

Measured on 2 cores (default size, HTTP): 196 tasks in 69 s; client 0.1 MB (0.0%), workers 38.0%
and 37.9% of the file, together 75.9%, where the full-resolution tiles are 73.9% and the 16 KiB
read-ahead of geoseg's remote files adds 2.1% to each tile read. ``--size 4096 --via s3``: client
0.1%, workers 37.9% each.

``--halo`` makes every task read its region plus that many pixels around it, as a network's
receptive field does, so that neighbouring tasks want the same stored tiles; each worker's read
cache of decoded tiles serves them. Measured (``--size 4096 --chunks 512 --halo 56``, HTTP): see
docs/performance.md, section 5.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
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
import zarr
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


def start_server(via: str, folder: str) -> tuple[subprocess.Popen, int]:
    """moto's S3 server, or aiohttp's static file server (HTTP range requests) over ``folder``,
    in a process of its own on 127.0.0.1."""
    port = free_port()
    if via == "s3":
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        serve = ("import sys; from aiohttp import web; app = web.Application(); "
                 "app.router.add_static('/', sys.argv[1]); "
                 "web.run_app(app, host='127.0.0.1', port=int(sys.argv[2]), print=None)")
        cmd = [sys.executable, "-c", serve, folder, str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the {via} server did not start on port {port}")


def publish(via: str, local: str, port: int) -> tuple[str, dict, dict]:
    """The raster's URL, storage options that reach the server directly, and the options the job
    uses: without an endpoint (S3: ``AWS_ENDPOINT_URL``) or through a proxy (HTTP: ``HTTP_PROXY``),
    both set per process, so each process's traffic passes its own counting proxy."""
    if via == "http":
        return (f"http://127.0.0.1:{port}/{Path(local).name}", {}, {"client_kwargs": {"trust_env": True}})
    direct = {"key": "k", "secret": "s",
              "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="k", aws_secret_access_key="s").create_bucket(Bucket="geoseg")
    fsspec.filesystem("s3", skip_instance_cache=True, **direct).put(local, "s3://geoseg/big.tif")
    return "s3://geoseg/big.tif", direct, {"key": "k", "secret": "s", "skip_instance_cache": True,
                                           "client_kwargs": {"region_name": "us-east-1"}}


def range_get_seconds(url: str, options: dict) -> float:
    """Seconds for one 16 KiB range request in the middle of the file, straight to the server."""
    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
    middle = fs.size(path) // 2
    t0 = time.perf_counter()
    fs.cat_file(path, start=middle, end=middle + 16384)
    return time.perf_counter() - t0


def check_mask(local: str, mask_url: str, windows: int = 8) -> None:
    """The mask equals band 1 > 128 on random windows, read from the local copy with rasterio."""
    mask = zarr.open_group(mask_url, mode="r")["classes"]
    rng = np.random.default_rng(1)
    with rasterio.open(local) as src:
        for _ in range(windows):
            y, x = (int(v) for v in rng.integers(0, src.height - 512, 2))
            band = src.read(1, window=Window(x, y, 512, 512))
            np.testing.assert_array_equal(mask[y:y + 512, x:x + 512], (band > 128).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=27000, help="pixels per side")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=2048, help="output chunks per side")
    parser.add_argument("--halo", type=int, default=0, help="pixels each task reads around its region")
    parser.add_argument("--via", choices=("http", "s3"), default="http",
                        help="the server: aiohttp over HTTP (default), or moto's S3 server, which reads "
                             "the whole object for every range request and so suits small sizes only")
    args = parser.parse_args()
    env_var = "HTTP_PROXY" if args.via == "http" else "AWS_ENDPOINT_URL"
    with tempfile.TemporaryDirectory() as tmp:
        local = f"{tmp}/big.tif"
        t0 = time.perf_counter()
        write_cog(local, args.size)
        server, port = start_server(args.via, tmp)
        try:
            url, direct, options = publish(args.via, local, port)
            size = os.path.getsize(local)
            print(f"COG {args.size}^2 x 3 bands: {size / 1e9:.2f} GB, written and published in "
                  f"{time.perf_counter() - t0:.0f} s; one 16 KiB range GET on the {args.via} server took "
                  f"{range_get_seconds(url, direct) * 1e3:.0f} ms")
            names = ["client"] + [f"worker-{i}" for i in range(args.workers)]
            proxies = {n: CountingProxy(("127.0.0.1", port)) for n in names}
            os.environ[env_var] = proxies["client"].url
            spec = JobSpec.from_dict({
                "input": {"url": url, "storage_options": options},
                "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
                "output": {"url": f"{tmp}/mask.zarr", "chunks": [args.chunks, args.chunks]},
                **({"inference": {"halo": args.halo}} if args.halo else {})})
            workers = {n: {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1",
                                                     "env": {env_var: proxies[n].url}}}
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
            tiles = math.ceil(args.size / 512) ** 2 * 512 * 512 * 3  # full-resolution 512 x 512 tiles
            print(f"  all workers: {total / size:.1%} of the file (its full-resolution tiles are "
                  f"{tiles / size:.1%} of it)")
            check_mask(local, f"{tmp}/mask.zarr")
            print("mask equals band 1 > 128 on 8 random 512 x 512 windows")
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
