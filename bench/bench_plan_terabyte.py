"""Planning a job over a 1 TB virtual Zarr: build and submit every task, then process one window.

    python bench/bench_plan_terabyte.py [--size 600000] [--chunks 2048] [--window 4096] [--workers 2]

Target (issue): a job over a 1 TB virtual, mostly unwritten Zarr builds and submits its graph in
< 60 s with the client under 2 GB, and processes a bounded window of it correctly.

The input is a Zarr v3 array of 3 x ``--size`` x ``--size`` uint8 (1.08 TB at the default size),
chunks 3 x ``--chunks`` x ``--chunks``, of which only one ``--window`` x ``--window`` window of
random pixels (aligned on the chunk grid near the middle) is written; the rest is never written and
reads as the fill value. The job thresholds band 1 (``model: {method: threshold, params:
{thresholds: [128], feature: 1}}``), output chunks ``--chunks``: one task per chunk (a threshold has
no halo, so geoseg does not grow task regions past one chunk).

The scheduler runs in a process of its own (``dask scheduler``), so this process is the client only.

1. Plan and submit everything, on a scheduler with no worker (so nothing runs): ``prepare(spec)``,
   ``create_output``, then ``run_regions`` in a thread, which plans every region and submits one task
   per region; timed until the scheduler holds every task. That scheduler is then stopped (cancelling
   85849 tasks would keep it busy for minutes: distributed's cost grows as the square of the count).
   (``create_output`` gets the output chunks and task regions as ``run`` gives them.)
2. Process a bounded window: on a fresh scheduler, ``--workers`` single-threaded workers
   (``dask worker``) join and ``run_regions`` runs again with ``skip`` = the chunk keys of every
   region outside the window (the resume mechanism), so only the window's regions are computed.
3. The window's output must equal the threshold applied to the window's pixels in memory.

Prints the number of regions, the seconds of each step, the client's peak resident memory
(``ru_maxrss``, this process; and its resident memory before the plan) and the scheduler's.

Measured on 2 shared cores (commit 9de64a9): 85849 regions planned and submitted in 28 s, client
peak 1121 MiB (496 MiB before planning), scheduler 666 MiB; the 4 window regions in 11 s, exact.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zarr
from distributed import Client

from geoseg.io.output import chunk_key, create_output
from geoseg.jobs import JobSpec, prepare
from geoseg.parallel.executor import run_regions
from geoseg.tiling.plan import regions

THRESHOLD = 128
PLAN_TARGET_S = 60.0
CLIENT_TARGET = 2e9  # bytes


def peak_rss() -> int:
    """This process's peak resident memory in bytes (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


T0 = time.perf_counter()


def say(text: str) -> None:
    """Print ``text`` after the seconds since the script started."""
    print(f"[{time.perf_counter() - T0:6.1f} s] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_cli(*args: str) -> subprocess.Popen:
    """``dask ARGS`` in a process of its own, quiet."""
    dask = str(Path(sys.executable).with_name("dask"))
    return subprocess.Popen([dask, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_scheduler(processes: list[subprocess.Popen]) -> str:
    """A ``dask scheduler`` process (appended to ``processes``); its address."""
    port = free_port()
    processes.append(dask_cli("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"))
    return f"tcp://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_input(url: str, size: int, chunks: int, window: tuple[slice, slice]) -> np.ndarray:
    """The virtual raster; only ``window`` is written (random pixels, returned)."""
    arr = zarr.create_array(url, shape=(3, size, size), chunks=(3, chunks, chunks), dtype="uint8",
                            fill_value=0, dimension_names=["band", "y", "x"])
    shape = (3, *(w.stop - w.start for w in window))
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    arr[(slice(None), *window)] = pixels
    return pixels


def inside(region: tuple[slice, ...], window: tuple[slice, ...]) -> bool:
    return all(r.start < w.stop and w.start < r.stop for r, w in zip(region, window))


def submit_everything(client: Client, prepared, target, n_regions: int) -> tuple[float, threading.Thread]:
    """``run_regions`` in a thread on a scheduler without workers; seconds until the client has
    submitted every task (the scheduler holds them all), and the thread (still waiting)."""
    thread = threading.Thread(target=_run_quietly, args=(client, prepared, target), daemon=True)
    t0 = time.perf_counter()
    thread.start()
    while client.run_on_scheduler(_n_tasks) < n_regions:
        if not thread.is_alive():
            raise RuntimeError("run_regions returned before submitting every task")
        time.sleep(0.2)
    return time.perf_counter() - t0, thread


def _n_tasks(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def _run_quietly(client: Client, prepared, target) -> None:
    with contextlib.suppress(BaseException):  # its scheduler is stopped under it, on purpose
        run_regions(client, prepared.work, prepared.source, target, chunks=prepared.chunks,
                    n_classes=prepared.model.n_classes, with_probabilities=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=600000, help="pixels per side (600000: 1.08 TB)")
    parser.add_argument("--chunks", type=int, default=2048, help="input and output chunks per side")
    parser.add_argument("--window", type=int, default=4096, help="side of the written, processed window")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # a real terabyte on purpose: past GEOSEG_MAX_PIXELS (1e11), which refuses headers that
    # declare such sizes by default; a user with such a raster raises it the same way
    os.environ["GEOSEG_MAX_PIXELS"] = str(max(float(os.environ.get("GEOSEG_MAX_PIXELS", "0")),
                                              2 * args.size**2))
    folder = Path(tempfile.mkdtemp(prefix="geoseg-bench-terabyte-"))
    start = (args.size // 2) // args.chunks * args.chunks
    window = (slice(start, start + args.window), slice(start, start + args.window))
    processes: list[subprocess.Popen] = []
    try:
        url, out = str(folder / "virtual.zarr"), str(folder / "mask.zarr")
        pixels = write_input(url, args.size, args.chunks, window)
        stored = sum(f.stat().st_size for f in Path(url).rglob("*") if f.is_file())
        say(f"input 3 x {args.size} x {args.size} uint8 = {3 * args.size**2 / 1e12:.2f} TB virtual, chunks "
            f"{args.chunks}, {stored / 1e6:.1f} MB written (window {args.window}^2 at {start}, {start})")
        address = start_scheduler(processes)
        client = Client(address, timeout=60)
        rss_before = psutil.Process().memory_info().rss
        spec = JobSpec.from_dict({
            # mostly unwritten on purpose: its absent chunks are the fill value, not a fault
            "input": {"url": url, "missing_chunks": "fill"}, "model": {"method": "threshold",
                                              "params": {"thresholds": [THRESHOLD], "feature": 1}},
            "output": {"url": out, "chunks": [args.chunks, args.chunks]}})
        t0 = time.perf_counter()
        prepared = prepare(spec)
        t_prepare = time.perf_counter() - t0
        t0 = time.perf_counter()
        work = prepared.work
        target = create_output(out, shape=prepared.source.shape[1:],
                               chunks=prepared.layout.shards,
                               task_region=prepared.chunks, georef=prepared.source.georef,
                               class_names=[c.name for c in prepared.model.classes],
                               class_dtype=work.class_dtype, nodata_class=work.nodata_class)
        t_create = time.perf_counter() - t0
        n = prepared.n_tasks
        t_submit, thread = submit_everything(client, prepared, target, n)
        client_peak = peak_rss()
        scheduler_peak = client.run_on_scheduler(peak_rss)
        plan = t_prepare + t_submit
        say(f"1. plan and submit: {n} regions (tasks)")
        print(f"   prepare(spec) {t_prepare:.2f} s, create_output {t_create:.2f} s (not counted), "
              f"run_regions until the scheduler held all {n} tasks {t_submit:.2f} s")
        print(f"   prepare + plan + submit: {plan:.1f} s (target < {PLAN_TARGET_S:.0f} s: "
              f"{'met' if plan < PLAN_TARGET_S else 'missed'})")
        print(f"   client peak RSS {client_peak / 2**20:.0f} MiB (before planning "
              f"{rss_before / 2**20:.0f} MiB; target < {CLIENT_TARGET / 1e9:.0f} GB: "
              f"{'met' if client_peak < CLIENT_TARGET else 'missed'}); "
              f"scheduler peak RSS {scheduler_peak / 2**20:.0f} MiB")
        # Cancelling that many tasks keeps a scheduler busy for minutes (it grows as the square of
        # the count on a scheduler without workers), so that scheduler is stopped instead.
        quiet = logging.getLogger("distributed.client")  # the old client's reconnection attempts
        quiet.setLevel(logging.CRITICAL)
        stop(processes.pop())  # before closing the client: closing releases every task, as slowly
        client.close(timeout=10)
        thread.join(30)
        say("that scheduler stopped; a fresh one for the window")

        address = start_scheduler(processes)
        client = Client(address, timeout=60)
        processes.append(dask_cli("worker", address, "--nworkers", str(args.workers), "--nthreads", "1",
                                  "--no-dashboard", "--host", "127.0.0.1"))
        client.wait_for_workers(args.workers, timeout=120)
        say(f"{args.workers} workers joined")
        t0 = time.perf_counter()
        skip = {chunk_key(r, prepared.chunks) for r in regions(prepared.source.shape[1:], prepared.chunks)
                if not inside(r, window)}
        t_skip = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats = run_regions(client, work, prepared.source, target, chunks=prepared.chunks,
                            n_classes=prepared.model.n_classes, with_probabilities=False, skip=skip)
        t_window = time.perf_counter() - t0
        mask = zarr.open_group(out, mode="r")["classes"][window]
        expected = (pixels[0] > THRESHOLD).astype(mask.dtype)
        equal = bool(np.array_equal(mask, expected))
        say(f"2. window: {len(stats)} regions computed, {len(skip)} skipped "
            f"(keys computed in {t_skip:.2f} s); "
              f"run_regions {t_window:.1f} s on {args.workers} workers")
        say(f"3. window output equals band 1 > {THRESHOLD} on the window's pixels in memory: {equal}")
        print(f"   client peak RSS at the end {peak_rss() / 2**20:.0f} MiB")
        client.close()
        say("client closed")
        if not equal:
            sys.exit(1)
    finally:
        for process in reversed(processes):
            stop(process)
        say("scheduler and workers stopped")
        shutil.rmtree(folder, ignore_errors=True)
        say("data deleted")


if __name__ == "__main__":
    main()
