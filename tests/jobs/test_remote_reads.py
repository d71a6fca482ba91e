"""Remote inputs read where they lie: a COG on S3 through a whole job, and bytes read per process."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

import fsspec
import numpy as np
import pytest
import rasterio
import zarr
from distributed import Client
from rasterio.enums import Resampling

import geoseg
from geoseg.jobs import JobSpec, run
from tests.conftest import CRS, TRANSFORM, job_dict, textured_image
from tests.ports import free_port


def write_cog(path, image: np.ndarray, nodata: float | None = 0) -> str:
    """A real Cloud-Optimized GeoTIFF (GDAL's COG driver: tiles, overviews, header first)."""
    profile = {"driver": "COG", "width": image.shape[2], "height": image.shape[1], "count": image.shape[0],
               "dtype": image.dtype, "crs": CRS, "transform": TRANSFORM, "nodata": nodata,
               "blocksize": 256, "overview_resampling": Resampling.nearest, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return str(path)


def upload(local: str, url: str, storage_options: dict) -> str:
    fsspec.filesystem("s3", skip_instance_cache=True, **storage_options).put(local, url)
    return url


def test_cog_on_s3_to_zarr_on_s3_equals_the_local_run(tmp_path, model_path, s3_server, cluster_address):
    image = textured_image(300, 280, seed=11)
    image[:, :20, :] = 0
    local = write_cog(tmp_path / "scene.tif", image)
    with rasterio.open(local) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and ds.overviews(1)
    remote = upload(local, "s3://geoseg/cogs/scene.tif", s3_server)
    run(JobSpec.from_dict(job_dict(local, model_path, str(tmp_path / "local.zarr"))), scheduler=cluster_address)
    data = job_dict(remote, model_path, "s3://geoseg/cogs/mask.zarr")
    data["input"]["storage_options"] = data["output"]["storage_options"] = s3_server
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)
    assert report.provenance["input"]["format"] == "geotiff"
    on_s3 = zarr.open_group("s3://geoseg/cogs/mask.zarr", mode="r", storage_options=s3_server)
    here = zarr.open_group(str(tmp_path / "local.zarr"), mode="r")
    np.testing.assert_array_equal(on_s3["classes"][...], here["classes"][...])
    assert (on_s3["classes"][:20] == 255).all()
    assert dict(on_s3["spatial_ref"].attrs) == dict(here["spatial_ref"].attrs)


class CountingProxy(socketserver.ThreadingTCPServer):
    """A TCP proxy on 127.0.0.1 in front of the S3 server that counts the bytes it sends back:
    what the one process using it downloads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int]):
        super().__init__(("127.0.0.1", 0), _Pipe)
        self.upstream, self.downloaded, self.lock = upstream, 0, threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with socket.create_connection(self.server.upstream) as upstream:
            up = threading.Thread(target=self.pump, args=(self.request, upstream, False), daemon=True)
            up.start()
            self.pump(upstream, self.request, True)
            up.join(5)

    def pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                if count:
                    with self.server.lock:
                        self.server.downloaded += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def s3_process() -> dict:
    """moto's S3 server in a process of its own."""
    import boto3

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                      aws_secret_access_key="s")
    for _ in range(100):
        try:
            s3.create_bucket(Bucket="geoseg")
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    yield {"port": port, "endpoint": endpoint}
    server.terminate()
    server.wait(10)


def test_no_process_downloads_the_whole_remote_raster(tmp_path, s3_process, monkeypatch):
    """Bytes each process downloads from S3, counted by a proxy of its own in front of the server
    (endpoints from AWS_ENDPOINT_URL, per process), around a whole job on a remote COG of
    incompressible data: the client reads metadata only and each worker about its share."""
    from distributed import Nanny, Scheduler, SpecCluster

    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, size=(3, 2048, 2048), dtype=np.uint8)  # 12 MiB, incompressible
    direct = {"key": "k", "secret": "s",
              "client_kwargs": {"endpoint_url": s3_process["endpoint"], "region_name": "us-east-1"}}
    url = upload(write_cog(tmp_path / "big.tif", image, nodata=None), "s3://geoseg/big/big.tif", direct)
    size = fsspec.filesystem("s3", skip_instance_cache=True, **direct).size(url)
    upstream = ("127.0.0.1", s3_process["port"])
    proxies = {name: CountingProxy(upstream) for name in ("client", "worker-a", "worker-b")}
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxies["client"].url)
    options = {"key": "k", "secret": "s", "client_kwargs": {"region_name": "us-east-1"},  # no endpoint
               "skip_instance_cache": True}  # a cached filesystem would keep an earlier endpoint
    spec = JobSpec.from_dict({
        "input": {"url": url, "storage_options": options},
        "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
        "output": {"url": str(tmp_path / "mask.zarr"), "chunks": [512, 512]}})
    workers = {name: {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1",
                                        "env": {"AWS_ENDPOINT_URL": proxies[name].url}}}
               for name in ("worker-a", "worker-b")}
    with SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": None, "host": "127.0.0.1"}},
                     workers=workers) as cluster, Client(cluster) as client:
        report = run(spec, client=client)
    downloaded = {name: proxy.downloaded for name, proxy in proxies.items()}
    for proxy in proxies.values():
        proxy.shutdown()
    print(f"COG {size} bytes; downloaded: " + ", ".join(f"{k} {v} ({v / size:.1%})" for k, v in downloaded.items()))
    assert report.n_tasks == 16
    assert downloaded["client"] < 0.02 * size, downloaded  # the header and tile index only
    # two workers, about half of the full-resolution tiles each (overviews are a fifth of the
    # file), less evenly when one is slower and the other takes over its tasks; neither the whole
    assert all(0.1 * size < downloaded[w] < 0.7 * size for w in workers), (downloaded, size)
    assert 0.75 * size < sum(downloaded[w] for w in workers) < 1.1 * size, (downloaded, size)
    mask = zarr.open_group(str(tmp_path / "mask.zarr"), mode="r")["classes"][...]
    np.testing.assert_array_equal(mask, (image[0] > 128).astype(np.uint8))


def test_open_raster_reads_a_window_not_the_file(tmp_path, s3_process, monkeypatch):
    image = np.random.default_rng(1).integers(0, 255, size=(1, 2048, 2048), dtype=np.uint8)
    direct = {"key": "k", "secret": "s",
              "client_kwargs": {"endpoint_url": s3_process["endpoint"], "region_name": "us-east-1"}}
    url = upload(write_cog(tmp_path / "m.tif", image), "s3://geoseg/meta/m.tif", direct)
    proxy = CountingProxy(("127.0.0.1", s3_process["port"]))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    options = {"key": "k", "secret": "s", "client_kwargs": {"region_name": "us-east-1"},
               "skip_instance_cache": True}
    raster = geoseg.open_raster(url, storage_options=options)
    opened = proxy.downloaded
    window = raster[:, :256, :256].values
    proxy.shutdown()
    np.testing.assert_array_equal(window, image[:, :256, :256])
    assert opened < 0.02 * image.nbytes, opened
    assert proxy.downloaded < 0.15 * image.nbytes, proxy.downloaded  # one 512 x 512 chunk's tiles
    assert os.path.getsize(tmp_path / "m.tif") > 0.9 * image.nbytes  # the file really is that big
