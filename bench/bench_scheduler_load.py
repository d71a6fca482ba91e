"""Scheduler load: one job of many tiny chunks, and how much the Dask scheduler grows under it.

Starts ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, runs a job of ``--chunks``
output chunks (a fixed threshold on a one-band uint8 Zarr, ``--chunk`` pixels a side: the
cheapest work per task, so the scheduler's share is what shows), samples the scheduler process's
resident memory every 50 ms, and prints wall time, tasks, the scheduler's RSS at rest, at its
peak and after the job, and the figures per chunk.

    python bench/bench_scheduler_load.py                  # 10,000 chunks, 2 workers
    python bench/bench_scheduler_load.py --chunks 2000 --workers 2 --threads 1
"""

from __future__ import annotations

import argparse
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import psutil
import zarr
from distributed import Client

from geoseg.jobs import JobSpec, run

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeakRSS:
    """The peak resident memory of one process, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.process, self.every = psutil.Process(pid), every
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_input(folder: Path, n_chunks: int, chunk: int) -> tuple[str, int]:
    """A square one-band uint8 Zarr of about ``n_chunks`` output chunks; its side in chunks."""
    side = math.isqrt(n_chunks)
    size = side * chunk
    image = np.random.default_rng(0).integers(0, 256, (1, size, size), dtype=np.uint8)
    arr = zarr.create_array(str(folder / "in.zarr"), shape=image.shape, dtype=image.dtype,
                            chunks=(1, min(size, 256), min(size, 256)),
                            dimension_names=["band", "y", "x"])
    arr[:] = image
    return str(folder / "in.zarr"), side


def start_cluster(workers: int, threads: int, folder: Path) -> tuple[str, list[subprocess.Popen]]:
    address = f"tcp://127.0.0.1:{free_port()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--no-dashboard"], **quiet)]
    procs += [subprocess.Popen([BIN / "dask", "worker", address, "--nthreads", str(threads),
                                "--no-dashboard", "--local-directory", str(folder / f"w{i}")], **quiet)
              for i in range(workers)]
    with Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=180)
    return address, procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="output chunks (a square number is exact)")
    parser.add_argument("--chunk", type=int, default=8, help="pixels per chunk side")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src, side = make_input(folder, args.chunks, args.chunk)
        address, procs = start_cluster(args.workers, args.threads, folder)
        try:
            scheduler = psutil.Process(procs[0].pid)
            rest = scheduler.memory_info().rss
            spec = {"input": {"url": src},
                    "model": {"method": "threshold", "params": {"thresholds": [127]}},
                    "output": {"url": str(folder / "out.zarr"), "chunks": [args.chunk, args.chunk]},
                    "inference": {"tile": args.chunk}}
            t0 = time.perf_counter()
            with PeakRSS(procs[0].pid) as peak:
                report = run(JobSpec.from_dict(spec), scheduler=address)
            wall = time.perf_counter() - t0
            time.sleep(1.0)
            after = scheduler.memory_info().rss
            with Client(address) as client:
                left = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
                heavy = client.run_on_scheduler(lambda: sorted({'geoseg', 'torch'} & set(sys.modules)))
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=30)
    mib = 1 << 20
    tasks = report.n_tasks
    print(f"chunks            {side} x {side} = {tasks} tasks of {args.chunk} x {args.chunk} px, "
          f"{args.workers} workers x {args.threads} thread(s)")
    print(f"wall time         {wall:.1f} s ({wall / tasks * 1e3:.2f} ms per chunk, "
          f"{tasks / wall:.0f} chunks/s)")
    print(f"scheduler RSS     at rest {rest / mib:.0f} MiB, peak {peak.peak / mib:.0f} MiB, "
          f"after {after / mib:.0f} MiB")
    print(f"per chunk         {(peak.peak - rest) / tasks / 1024:.1f} KiB of scheduler peak growth; "
          f"tasks left on the scheduler after the job: {left}; imported there: {heavy or 'neither geoseg nor torch'}")


if __name__ == "__main__":
    main()
