"""A cluster that fails the command line: a scheduler killed mid-run (one message naming it, exit
1, the status saying so, a rerun resumes) and SIGTERM while a local cluster is still starting
(no traceback, and a batch still writes its report, every input not started)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from geoseg.jobs.status import output_status
from tests.conftest import textured_image, write_geotiff, write_zarr
from tests.jobs.slow_batch import slow_geoseg
from tests.jobs.test_worker_faults import BIN, ROOT, wait_for_done
from tests.ports import free_port

QUICK_RECONNECT = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3"}  # the client's reconnect wait


def slow_job(folder: Path, address: str) -> Path:
    """A job of 64 regions taking a fifth of a second each, on the scheduler at ``address``."""
    write_zarr(folder / "in.zarr", textured_image(256, 256, bands=1), chunks=(32, 32))
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "lost", "input": {"url": str(folder / "in.zarr")},
        "model": {"method": "slow", "params": {"thresholds": [128], "delay": 0.2}},
        "output": {"url": str(folder / "out.zarr"), "chunks": [32, 32]},
        "inference": {"tile": 32}, "cluster": {"scheduler": address}}))
    return job


def start_cluster(folder: Path, port: int) -> list[subprocess.Popen]:
    """``dask scheduler`` and one ``dask worker`` on 127.0.0.1, the scheduler first."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": ROOT,
             "env": {**os.environ, "PYTHONPATH": str(ROOT)}}  # the workers unpickle the slow method
    address = f"tcp://127.0.0.1:{port}"
    return [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--no-dashboard"], **quiet),
            subprocess.Popen([BIN / "dask", "worker", address, "--nthreads", "1", "--no-dashboard",
                              "--local-directory", str(folder / "w")], **quiet)]


def run_then_stop(folder: Path, port: int, job: Path, env: dict[str, str],
                  stop: Callable[[list[subprocess.Popen]], None]) -> tuple[Any, int, float, int]:
    """``geoseg run job`` on a scheduler and a worker started here; once a chunk is written,
    ``stop`` (given the scheduler's and the worker's processes) breaks the cluster. The run,
    its exit code, the seconds it took to end after that, and the chunks written before it."""
    procs = start_cluster(folder, port)
    try:
        with slow_geoseg(["run", str(job)], {"PYTHONPATH": str(ROOT), **env}) as run:
            run.wait_for("job started")
            written = wait_for_done(folder / "out.zarr", 1)
            stop(procs)
            t0 = time.monotonic()
            code = run.finish(timeout=60)
            took = time.monotonic() - t0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(30)
    return run, code, took, written


@pytest.mark.timeout(120)
def test_a_scheduler_killed_mid_run_fails_the_run_with_one_message_naming_it(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    job = slow_job(tmp_path, address)
    run, code, took, written = run_then_stop(tmp_path, port, job, QUICK_RECONNECT,
                                             lambda procs: procs[0].kill())  # the scheduler

    lines = "\n".join(run.lines)
    assert code == 1, lines
    assert took < 30, lines  # the lowered reconnect wait is honoured
    assert "Traceback" not in lines and "distributed.client" not in lines, lines
    [error] = [line for line in run.lines if line.startswith("error:")]
    assert f"Lost the Dask scheduler at {address} during the run" in error
    assert "run the job again: it computes only the chunks not written" in error
    state = output_status(str(tmp_path / "out.zarr"))
    assert state.status.startswith("failed (ClusterLostError"), state.status
    assert 1 <= written <= state.done < 64
    said = int(error.split("during the run (")[1].split(" of ")[0])
    # the chunks in the store when the run failed (not only those whose results came back); the
    # worker, still running, may have written one more since
    assert written <= said <= state.done


def write_batch(folder: Path) -> Path:
    """Two GeoTIFF inputs, a local cluster of one worker process."""
    (folder / "in").mkdir()
    for i in range(2):
        write_geotiff(folder / "in" / f"s{i}.tif", textured_image(64, 64, bands=1, seed=i))
    spec = folder / "batch.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "early", "inputs": {"glob": f"{folder}/in/*.tif"},
        "output": {"url_template": f"{folder}/out/{{stem}}.zarr"}, "cluster": {"n_workers": 1},
        "job": {"model": {"method": "threshold", "params": {"thresholds": [128]}}}}))
    return spec


def wait_for_a_worker_process(pid: int, timeout: float = 60) -> None:
    """Until the process ``pid`` has started a child (its local cluster's first worker)."""
    deadline = time.monotonic() + timeout
    while not psutil.Process(pid).children():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.timeout(120)
def test_sigterm_while_the_local_cluster_starts_ends_the_batch_with_its_report(tmp_path):
    spec = write_batch(tmp_path)
    with slow_geoseg(["batch", str(spec)], {}) as batch:
        wait_for_a_worker_process(batch.proc.pid)
        batch.proc.send_signal(signal.SIGTERM)
        code = batch.finish()

    lines = "\n".join(batch.lines)
    assert code == 143, lines
    assert "Traceback" not in lines and " - ERROR - " not in lines, lines
    [report] = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("batch-early-*.json")]
    assert report["interrupted"] == "SIGTERM"
    assert [i["state"] for i in report["items"]] == ["not-started", "not-started"]
    assert "interrupted (SIGTERM): 2 not-started" in lines
    [index] = [line.split(": ", 1)[1] for line in batch.lines if line.startswith("html report: ")]
    assert Path(index).is_file()
    assert not list((tmp_path / "out").glob("*.zarr"))


@pytest.mark.timeout(120)
def test_a_run_whose_workers_all_leave_fails_after_the_worker_wait(tmp_path):
    """Every worker gone mid-run (its nanny stopped) and none joining: the run ends within
    GEOSEG_WORKER_WAIT and a few seconds, saying how many chunks are kept, not silently waits."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    job = slow_job(tmp_path, address)
    def nanny_leaves(procs: list[subprocess.Popen]) -> None:  # it closes its worker and leaves
        procs[1].terminate()
        procs[1].wait(30)

    run, code, took, _ = run_then_stop(tmp_path, port, job, {"GEOSEG_WORKER_WAIT": "3"}, nanny_leaves)

    lines = "\n".join(run.lines)
    assert code == 1, lines
    assert took < 25, lines
    assert "Traceback" not in lines, lines
    [error] = [line for line in run.lines if line.startswith("error:")]
    assert f"Every Dask worker of the scheduler at {address} left during the run" in error
    assert "(GEOSEG_WORKER_WAIT)" in error and "it computes only the chunks not written" in error
    said = int(error.split("; ")[1].split(" of ")[0])
    state = output_status(str(tmp_path / "out.zarr"))
    assert said == state.done and 1 <= said < 64, (error, state.done)


def test_a_crash_report_that_left_chunks_unretried_never_says_every_other_was_written():
    from geoseg.io.faults import crashed_chunks

    chunks = [(f"0.{i}", (slice(0, 32), slice(32 * i, 32 * i + 32))) for i in range(3)]
    assert "every other chunk was written" in str(crashed_chunks(chunks, 4))
    message = str(crashed_chunks(chunks, 4, not_retried=13))
    assert "every other chunk was written" not in message, message
    assert "13 other chunk(s) lost with the crashed workers were not retried" in message
    assert "they are not written" in message, message


@pytest.mark.parametrize("kind", ["slurm", "pbs", "kubernetes", "local", "threads"])
def test_only_a_run_on_an_existing_cluster_gives_up_on_workers_that_left(kind, monkeypatch):
    """SLURM workers queued past GEOSEG_WORKER_WAIT failed the run as workers that had "left":
    a cluster the run started brings its workers back, however long they queue."""
    from geoseg.jobs.runner import _worker_wait
    from geoseg.parallel.cluster_spec import ClusterSpec

    monkeypatch.setenv("GEOSEG_WORKER_WAIT", "7")
    assert _worker_wait(ClusterSpec(kind="address", scheduler="tcp://10.0.0.1:8786")) == 7
    assert _worker_wait(ClusterSpec(kind=kind)) is None


@pytest.mark.timeout(60)
def test_scoring_stored_chunks_gives_up_on_workers_that_all_left(tmp_path):
    """A resumed run scores the chunks earlier runs wrote after computing its own: with every
    worker gone then, it waited for good, where the compute just before gives up after
    GEOSEG_WORKER_WAIT. It gives up too, saying what this run wrote is kept."""
    from distributed import Client, LocalCluster

    from geoseg.errors import ClusterLostError
    from geoseg.io.output import OutputTarget
    from geoseg.io.readers._open import open_source
    from geoseg.parallel.executor import ReferenceLabels, score_regions

    write_zarr(tmp_path / "labels.zarr", textured_image(64, 64, bands=1), chunks=(32, 32))
    reference = ReferenceLabels(open_source(str(tmp_path / "labels.zarr")))
    target = OutputTarget(str(tmp_path / "out.zarr"))
    keys = {"0.0", "0.1", "1.0", "1.1"}
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        t0 = time.monotonic()
        with pytest.raises(ClusterLostError, match=r"left during the run.*; 3 of 3 chunk"):
            score_regions(client, target, reference, shape=(64, 64), chunks=(32, 32), keys=keys,
                          n_classes=2, nodata_class=255, worker_wait=1.0, computed=3)
        assert time.monotonic() - t0 < 15
