"""Data movement of a job on a remote Zarr: bytes read from storage, bytes between workers, model loads.

    python bench/bench_data_movement.py [--size 4096] [--segmenter unet|local] [--chunks 1024]
                                        [--input-chunks 1024] [--workers 2]
    python bench/bench_data_movement.py --size 32768 --segmenter local   # 1.07 Gpx x 3 bands

Targets (issue), on a >= 1 Gpx input: bytes read from storage / stored bytes <= 1.15 (halos
counted); bytes between workers <= 5% of the input; model loads = number of workers.

The input is a 3-band uint8 Zarr v3 group (``image``, chunks 3 x ``--input-chunks``^2, zstd as zarr
writes it by default) of ``--size``^2 pixels, a synthetic 1000 x 1000 scene repeated, written strip
by strip, with consolidated metadata (geoseg lists the group's arrays even when the spec names one,
and a plain HTTP server cannot list a folder). It is served over HTTP by aiohttp's static file
server in a process of its own, as ``bench/bench_remote_bytes.py`` serves its COG; the client and
each worker reach it through a byte-counting proxy of their own (``HTTP_PROXY`` per process,
``trust_env``), so every byte any process downloads is counted. The segmenter needs a halo:

``unet`` (default): the bundled ``builtin:demo-unet``, cropped tiles with its receptive-field
  halo; a 1 Gpx input takes hours on 2 cores, hence the default ``--size 4096`` (16.8 Mpx).
``local``: a Gaussian local threshold of band 1 (``method: local``, ``block_size`` 51, halo 33),
  cheap enough for ``--size 32768`` (1.07 Gpx); it loads no model, so model loads are not scored.

The output (chunks ``--chunks``; a task computes a region of one or more whole chunks) is written to
a local folder. After the job, on the same
cluster: bytes each worker sent to other workers (``Worker.transfer_outgoing_bytes_total``) and
models each worker process loaded (``geoseg.models.load_counts()``). Printed against the targets,
with the floor that halos set: the pixels the tasks' read windows cover / the raster's pixels.

Measured on 2 shared cores: ``--size 32768 --segmenter local`` (1024 tasks) 1.079 read / stored
(workers 54.6% and 53.2%), 0.00% between workers, 153 s; default (unet, 4096^2, 16 tasks) 1.81
(workers 75% each; the client's input checks read 5 of the 16 chunks), 2 model loads on 2
workers. The halos alone set a floor of 1.23 (unet) and 1.13 (local) at 1024-pixel output
chunks; a worker's read cache brings each stripe of regions below it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from distributed import Client, Nanny, Scheduler, SpecCluster
from distributed.diagnostics.plugin import WorkerPlugin

import geoseg
from geoseg.jobs import JobSpec, prepare, run
from geoseg.synth import make_scene
from geoseg.tiling.plan import read_window, region_tiles, regions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench/ and tests/
from bench.bench_remote_bytes import start_server
from tests.jobs.test_remote_reads import CountingProxy

READ_TARGET = 1.15
TRANSFER_TARGET = 0.05
PERIOD = 1000  # side of the synthetic scene the raster repeats


@dataclass
class TorchThreads(WorkerPlugin):
    """Pins torch's intra-op threads in each worker process."""

    threads: int

    def setup(self, worker: object) -> None:
        torch.set_num_threads(self.threads)


def write_input(url: str, size: int, chunks: int) -> None:
    """A ``size``^2 3-band uint8 Zarr group ``image``: a synthetic scene repeated, strip by strip."""
    tile = make_scene(PERIOD, PERIOD, seed=7).image
    group = zarr.open_group(url, mode="w-")
    image = group.create_array("image", shape=(3, size, size), dtype="uint8", chunks=(3, chunks, chunks),
                               dimension_names=["band", "y", "x"],
                               attributes={"band_names": ["red", "green", "blue"]})
    x = np.arange(size) % PERIOD
    t0 = time.perf_counter()
    for y0 in range(0, size, chunks):
        y = np.arange(y0, min(y0 + chunks, size)) % PERIOD
        image[:, y0:y0 + len(y), :] = tile[:, y[:, None], x[None, :]]
        if (y0 // chunks) % max(1, size // chunks // 8) == 0 or y0 + len(y) == size:
            print(f"    written {(y0 + len(y)) / size:6.1%} ({time.perf_counter() - t0:4.0f} s)",
                  flush=True)
    with warnings.catch_warnings():  # geoseg lists a group's arrays, which plain HTTP cannot: consolidate
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(url)


def stored_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def window_floor(spec: JobSpec) -> tuple[float, int]:
    """(pixels covered by every task's read window / raster pixels, tasks): the read volume a task
    that reads exactly its window, halos included, cannot go below."""
    prepared = prepare(spec)
    shape = prepared.source.shape[1:]
    total = 0
    for region in regions(shape, prepared.chunks):
        window = read_window(region_tiles(prepared.work.tiling, region))
        total += np.prod([min(w.stop, n) - max(w.start, 0) for w, n in zip(window, shape)])
    return total / np.prod(shape), prepared.n_tasks


def model_spec(segmenter: str) -> dict:
    if segmenter == "unet":
        return {"path": "builtin:demo-unet"}
    return {"method": "local", "params": {"block_size": 51, "method": "gaussian", "feature": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="pixels per side (32768: 1.07 Gpx)")
    parser.add_argument("--segmenter", choices=("unet", "local"), default="unet")
    parser.add_argument("--chunks", type=int, default=1024, help="output chunks per side")
    parser.add_argument("--input-chunks", type=int, default=1024, help="the input Zarr's chunks per side")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-moves-") as tmp:
        local = Path(tmp) / "scene.zarr"
        t0 = time.perf_counter()
        print(f"writing a {args.size}^2 x 3 Zarr, chunks {args.input_chunks}", flush=True)
        write_input(str(local), args.size, args.input_chunks)
        stored, raw = stored_bytes(local / "image"), 3 * args.size**2
        server, port = start_server("http", tmp)
        try:
            print(f"input: {raw / 1e9:.3f} GB of pixels, {stored / 1e9:.3f} GB stored (array folder), "
                  f"written in {time.perf_counter() - t0:.0f} s; served over HTTP by aiohttp", flush=True)
            names = ["client"] + [f"worker-{i}" for i in range(args.workers)]
            proxies = {n: CountingProxy(("127.0.0.1", port)) for n in names}
            os.environ["HTTP_PROXY"] = proxies["client"].url
            spec = JobSpec.from_dict({
                "input": {"url": f"http://127.0.0.1:{port}/scene.zarr", "variable": "image",
                          "storage_options": {"client_kwargs": {"trust_env": True}}},
                "model": model_spec(args.segmenter),
                "output": {"url": f"{tmp}/mask.zarr", "chunks": [args.chunks, args.chunks]}})
            floor, n_tasks = window_floor(spec)
            metadata = proxies["client"].downloaded
            workers = {n: {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1",
                                                     "silence_logs": logging.WARNING,
                                                     "env": {"HTTP_PROXY": proxies[n].url}}}
                       for n in names[1:]}
            scheduler = {"cls": Scheduler, "options": {"dashboard_address": None, "host": "127.0.0.1"}}
            with SpecCluster(scheduler=scheduler, workers=workers, silence_logs=logging.ERROR) as cluster, \
                    Client(cluster) as client:
                client.register_plugin(TorchThreads(1))
                report = run(spec, client=client)
                sent = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
                loads = client.run(lambda: sum(geoseg.models.load_counts().values()))
        finally:
            server.terminate()
    served = {n: p.downloaded for n, p in proxies.items()}
    served["client"] -= metadata  # the floor's prepare() above is not the job's
    read = sum(served.values())
    print(f"job: {args.segmenter}, {n_tasks} tasks (output chunks {args.chunks}), "
          f"{args.workers} workers x 1 thread, "
          f"{report.seconds:.0f} s (compute {report.provenance['timings']['compute_s']:.0f} s)")
    for name, value in served.items():
        print(f"  {name:>9}: downloaded {value / 1e6:9.2f} MB = {value / stored:6.1%} of the stored bytes")
    print(f"  read from storage / stored bytes: {read / stored:.3f} (target <= {READ_TARGET}: "
          f"{'met' if read / stored <= READ_TARGET else 'missed'}); the tasks' read windows, halos "
          f"included, cover {floor:.3f} x the raster's pixels")
    between = sum(sent.values())
    print(f"  bytes between workers: {between / 1e6:.3f} MB = {between / stored:.2%} of the stored input, "
          f"{between / raw:.2%} of its pixels (target <= {TRANSFER_TARGET:.0%}: "
          f"{'met' if between / raw <= TRANSFER_TARGET else 'missed'}); per worker {sorted(sent.values())}")
    if args.segmenter == "unet":
        total = sum(loads.values())
        print(f"  model loads: {total} on {len(loads)} workers, per worker {sorted(loads.values())} (target "
              f"= number of workers: {'met' if total == len(loads) else 'missed'})")
    else:
        print("  model loads: not scored (the local threshold loads no model)")


if __name__ == "__main__":
    main()
