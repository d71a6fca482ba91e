"""Load on one cluster: several jobs at once, and a job of thousands of tiny chunks whose
scheduler stays small (bench/bench_scheduler_load.py runs the 10,000-chunk version)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import psutil
import pytest
import zarr
from distributed import Client

from geoseg.jobs import JobSpec, run
from geoseg.jobs.status import verify_output
from tests.conftest import textured_image, write_zarr

ROOT = Path(__file__).resolve().parents[2]


def threshold_job(src: str, out: Path, threshold: float, chunk: int = 32) -> dict:
    return {"input": {"url": src},
            "model": {"method": "threshold", "params": {"thresholds": [threshold]}},
            "output": {"url": str(out), "chunks": [chunk, chunk]}, "inference": {"tile": chunk}}


def scheduler_tasks(address: str) -> int:
    with Client(address) as client:
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


@pytest.mark.timeout(240)
def test_jobs_submitted_at_once_to_one_cluster_all_finish_with_correct_outputs(tmp_path,
                                                                                cluster_address):
    """On the suite's shared two-process cluster, once it holds no task of an earlier test."""
    deadline = time.monotonic() + 60
    while scheduler_tasks(cluster_address) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scheduler_tasks(cluster_address) == 0, "the shared cluster still holds earlier tasks"
    jobs = []
    for i in range(3):
        image = textured_image(96, 96, bands=1, seed=20 + i)
        src = write_zarr(tmp_path / f"in{i}.zarr", image, chunks=(32, 32))
        jobs.append((image, threshold_job(src, tmp_path / f"out{i}.zarr", 100.0 + 10 * i)))
    errors: list[BaseException] = []

    def submit(job: dict) -> None:
        try:
            run(JobSpec.from_dict(job), scheduler=address)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    # Each job's Client makes itself dask's default and restores the setting it found when it
    # closes; clients of threads close in any order, so the last restore may leave this process
    # pointing at a closed client. Later tests compute with dask's default scheduler.
    before = dask.config.get("scheduler", None)
    address = cluster_address
    with dask.config.set(scheduler=before):
        threads = [threading.Thread(target=submit, args=(job,)) for _, job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=200)
        left = scheduler_tasks(address)
    assert not errors, errors
    assert left == 0  # every job released what it submitted
    for i, (image, job) in enumerate(jobs):
        out = zarr.open_group(job["output"]["url"], mode="r")["classes"][:]
        np.testing.assert_array_equal(out, (image[0] > 100.0 + 10 * i).astype(out.dtype))
        assert verify_output(job["output"]["url"]).ok


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_scheduler_load",
                                                  ROOT / "bench" / "bench_scheduler_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_job_of_2000_tiny_chunks_keeps_the_scheduler_small(tmp_path):
    """Takes minutes on two busy cores (about 0.1 s per chunk), hence slow."""
    bench = bench_module()
    src, side = bench.make_input(tmp_path, 2000, 8)
    address, procs = bench.start_cluster(2, 1, tmp_path)
    try:
        scheduler = psutil.Process(procs[0].pid)
        rest = scheduler.memory_info().rss
        with bench.PeakRSS(procs[0].pid) as peak:
            report = run(JobSpec.from_dict(threshold_job(src, tmp_path / "out.zarr", 127, chunk=8)),
                         scheduler=address)
        with Client(address) as client:
            left = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            # the scheduler unpickles the graph, so it imports the task's geoseg modules, not torch
            heavy = client.run_on_scheduler(
                lambda: sorted({"torch", "geoseg.models.model"} & set(sys.modules)))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
    assert report.n_tasks == side * side
    assert left == 0 and heavy == []
    assert peak.peak - rest < 200 << 20, (rest, peak.peak)  # under 100 KiB per chunk
    image = zarr.open_array(src, mode="r")[0]
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][:]
    np.testing.assert_array_equal(out, (image > 127).astype(out.dtype))
