"""Processes that die under a job: workers SIGKILLed mid-chunk or at random, a chunk that kills
every worker that runs it, a worker over its memory limit, the scheduler killed, workers retired
as at an HPC walltime. Each on a real multi-process cluster; the output must match a clean run's
byte for byte, no chunk may be marked done that was not written, and nothing may hang."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
import zarr
from distributed import Client, LocalCluster

from geoseg.errors import ClusterLostError
from geoseg.jobs import JobSpec, run
from geoseg.jobs.status import output_status, verify_output
from geoseg.methods import build
from geoseg.methods.threshold import Threshold
from tests.conftest import textured_image, write_zarr

POISON = -999.0  # the input value that sets a trap off
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Trap(Threshold):
    """A threshold that, while the file ``armed`` exists, kills its own process (``how="kill"``)
    or grows past its worker's memory limit (``how="memory"``, once: it removes the file) on any
    window holding :data:`POISON`; ``delay`` seconds per window keep a run going long enough."""

    armed: str = ""
    how: str = "kill"
    delay: float = 0.0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        if self.armed and (batch == POISON).any() and os.path.exists(self.armed):
            if self.how == "memory":
                os.remove(self.armed)
                hog = np.ones(1 << 30, np.uint8)  # well past the worker's limit, every page touched
                time.sleep(30)  # the nanny kills the process long before this ends
                del hog
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(batch)


def register_trap() -> None:
    """Make ``model: {method: trap}`` known in this process (the workers only unpickle a Trap)."""
    build.DIRECT["trap"] = lambda _, p: Trap(**{**p, "thresholds": tuple(p["thresholds"])})


@pytest.fixture(autouse=True)
def _trap_method():
    register_trap()
    yield
    build.DIRECT.pop("trap", None)


def scene(tmp_path: Path, poison: tuple[int, int] | None = None, size: int = 128) -> str:
    """A one-band float32 input, 32-pixel Zarr chunks; ``poison``: one pixel set to :data:`POISON`."""
    image = textured_image(size, size, bands=1, seed=7).astype(np.float32)
    if poison is not None:
        image[0, poison[0], poison[1]] = POISON
    return write_zarr(tmp_path / "in.zarr", image, chunks=(32, 32))


def trap_job(src: str, out: Path, armed: Path, *, how: str = "kill", delay: float = 0.0,
             chunk: int = 16) -> dict:
    return {"input": {"url": src},
            "model": {"method": "trap", "params": {"thresholds": [128.0], "armed": str(armed),
                                                   "how": how, "delay": delay}},
            "output": {"url": str(out), "chunks": [chunk, chunk]}, "inference": {"tile": chunk}}


def chunk_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted((folder / "classes").rglob("*")) if p.is_file()}


def checksums(folder: Path) -> dict[str, str]:
    """Every chunk's recorded sha256, by key, from the output's manifest."""
    from geoseg.io.output import OutputTarget

    target = OutputTarget(str(folder), {})
    return {key: target.checksum(key) for key in sorted(target.done_keys())}


def clean_run(src: str, tmp_path: Path, address: str, **job: object) -> Path:
    """The reference: the same job with its trap unarmed."""
    out = tmp_path / "clean.zarr"
    run(JobSpec.from_dict(trap_job(src, out, tmp_path / "never-armed", **job)), scheduler=address)
    return out


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The input of the tests below: one pixel holds :data:`POISON` (only an armed trap minds)."""
    return scene(tmp_path_factory.mktemp("faults-input"), poison=(40, 100))


@pytest.fixture(scope="module")
def clean(poisoned: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference for the tests below, computed once: the job with its trap unarmed, on
    threads in this process. Its chunks depend on neither the trap's settings (delay, how)
    nor where they are computed, so every faulted run must match it byte for byte."""
    out = tmp_path_factory.mktemp("faults-clean") / "clean.zarr"
    register_trap()  # module fixtures come before the tests' own
    run(JobSpec.from_dict(trap_job(poisoned, out, out.parent / "never-armed")), cluster="threads")
    return out


def assert_same_as(out: Path, clean: Path) -> None:
    assert chunk_files(out) == chunk_files(clean)
    assert checksums(out) == checksums(clean)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["classes"][:],
                                  zarr.open_group(str(clean), mode="r")["classes"][:])
    report = verify_output(str(out))
    assert report.ok, report
    assert output_status(str(out)).status == "complete"


def worker_pids(address: str) -> dict[str, int]:
    with Client(address, timeout=30) as client:
        return client.run(os.getpid)


def wait_for_done(out: Path, at_least: int, timeout: float = 60) -> int:
    """Poll the output's manifest until ``at_least`` chunks are marked done."""
    deadline, done = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            done = int(np.asarray(zarr.open_group(str(out), mode="r")["manifest_done"][...]).sum())
        except Exception:  # noqa: BLE001 - the store is still being created
            done = 0
        if done >= at_least:
            return done
        time.sleep(0.05)
    return done


@contextlib.contextmanager
def local_cluster(config: dict | None = None, **kwargs: object) -> Iterator[LocalCluster]:
    """Two single-threaded worker processes under nannies (which restart a dead worker);
    ``config``: dask settings the scheduler starts with. A restarted worker may take long to
    start on a busy machine: the cluster waits for it (rather than dropping it after 15 s)."""
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "300s", **(config or {})}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                         **kwargs) as cluster:
        yield cluster


class SharedCluster:
    """One :func:`local_cluster` (800 MiB per worker) for the tests below, taken in turn. Killed or
    over its memory limit, a worker is restarted by its nanny: the next test waits until both
    are up again. A test that leaves the cluster short of a worker (one retired) says so, and
    the next test to take it gets a fresh one."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.cluster: LocalCluster | None = None
        self.damaged = False

    def take(self, *, damages: bool = False) -> LocalCluster:
        if self.damaged:
            self.close()
        if self.cluster is None:
            self.cluster = self.stack.enter_context(local_cluster(memory_limit="800MiB"))
        cluster = self.cluster
        with Client(cluster.scheduler_address, timeout=30) as client:
            client.wait_for_workers(2, timeout=300)
        deadline = time.monotonic() + 300
        while len(nanny_pids(cluster)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.damaged = damages
        return cluster

    def close(self) -> None:
        self.stack.close()
        self.stack, self.cluster, self.damaged = contextlib.ExitStack(), None, False


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[SharedCluster]:
    shared = SharedCluster()
    try:
        yield shared
    finally:
        shared.close()


CLI = ("import sys; from tests.jobs.test_worker_faults import register_trap; register_trap(); "
       "from geoseg.cli import main; sys.argv[0] = 'geoseg'; main()")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_chunk_that_kills_every_worker_is_named_the_rest_written_and_a_rerun_retries_only_it(tmp_path):
    src = scene(tmp_path, poison=(40, 100))  # in output chunk 2.6: y 32:48, x 96:112
    armed = tmp_path / "armed"
    armed.touch()
    out, spec = tmp_path / "out.zarr", tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(trap_job(src, out, armed)))
    with local_cluster({"distributed.scheduler.allowed-failures": 1}) as cluster:
        address = cluster.scheduler_address
        clean = clean_run(src, tmp_path, address)
        failed = subprocess.run([sys.executable, "-c", CLI, "run", str(spec), "--cluster", address],
                                cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
        message = " ".join(failed.stderr.split())
        assert failed.returncode == 1, failed.stderr
        assert "error: output chunk 2.6 (y 32:48, x 96:112): every worker process that ran it died" in message
        assert "every other chunk was written" in message and "memory" in message and "--debug" in message
        assert "Traceback" not in failed.stderr and "internal error" not in message
        assert "KilledWorker" not in message

        state = output_status(str(out))
        assert state.status.startswith("failed (WorkerCrashError") and state.done == 63
        report = verify_output(str(out))
        assert report.missing == ["2.6"] and not report.mismatched and not report.undecodable
        written = checksums(out)
        assert "2.6" not in written and written == {k: v for k, v in checksums(clean).items() if k != "2.6"}
        assert chunk_files(out) == {k: v for k, v in chunk_files(clean).items() if k != "classes/c/2/6"}

        armed.unlink()  # whatever killed the workers is fixed: the rerun computes that chunk only
        again = run(JobSpec.from_dict(trap_job(src, out, armed)), scheduler=address)
        assert (again.n_tasks, again.skipped) == (1, 63)
    assert_same_as(out, clean)


def kill_when_done(out: Path, at_least: int, kill: callable) -> threading.Thread:
    """A thread that calls ``kill()`` once ``at_least`` chunks of ``out`` are done."""
    def watch() -> None:
        if wait_for_done(out, at_least):
            kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def nanny_pids(cluster: LocalCluster) -> list[int]:
    """The worker processes' ids, from their nannies (no call to the workers themselves)."""
    return [w.process.pid for w in cluster.workers.values() if w.process and w.process.pid]


@pytest.mark.timeout(180)
def test_a_worker_killed_mid_chunk_changes_nothing_in_the_output(tmp_path, poisoned, clean,
                                                                shared_cluster):
    out = tmp_path / "out.zarr"
    cluster = shared_cluster.take()
    victim = nanny_pids(cluster)[0]
    watcher = kill_when_done(out, 8, lambda: os.kill(victim, signal.SIGKILL))
    report = run(JobSpec.from_dict(trap_job(poisoned, out, tmp_path / "unarmed", delay=0.05)),
                 scheduler=cluster.scheduler_address)
    watcher.join(timeout=5)
    assert victim not in nanny_pids(cluster) or not _alive(victim), "the worker was not killed"
    assert report.n_tasks == 64
    assert_same_as(out, clean)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_random_worker_deaths_during_a_run_change_nothing_in_the_output(tmp_path):
    """Six SIGKILLs of random workers, both at once sometimes: more deaths than Dask allows a
    task (tasks on a dying worker are all blamed), so some tasks come back KilledWorker and are
    run again, one by one."""
    src = scene(tmp_path)
    out = tmp_path / "out.zarr"
    kills: list[int] = []
    with local_cluster() as cluster:
        clean = clean_run(src, tmp_path, cluster.scheduler_address, delay=0.1)
        stop = threading.Event()

        def chaos() -> None:
            rng = random.Random(3)
            wait_for_done(out, 4)
            while len(kills) < 6 and not stop.wait(rng.uniform(0.3, 1.5)):
                pids = nanny_pids(cluster)
                if pids and len(cluster.scheduler.workers) == len(pids):  # both up again
                    kills.append(rng.choice(pids))
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(kills[-1], signal.SIGKILL)

        thread = threading.Thread(target=chaos, daemon=True)
        thread.start()
        try:
            run(JobSpec.from_dict(trap_job(src, out, tmp_path / "unarmed", delay=0.1)),
                scheduler=cluster.scheduler_address)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert len(kills) >= 2, kills
    assert_same_as(out, clean)


@pytest.mark.timeout(180)
def test_a_worker_over_its_memory_limit_is_restarted_and_the_output_unchanged(
        tmp_path, poisoned, clean, shared_cluster):
    armed = tmp_path / "armed"
    armed.touch()
    out = tmp_path / "out.zarr"
    cluster = shared_cluster.take()  # its workers' memory limit: 800 MiB
    before = set(nanny_pids(cluster))
    report = run(JobSpec.from_dict(trap_job(poisoned, out, armed, how="memory")),
                 scheduler=cluster.scheduler_address)
    assert not armed.exists(), "the chunk that outgrows its worker never ran"
    assert before - set(nanny_pids(cluster)), "no worker was restarted"
    assert report.n_tasks == 64
    assert_same_as(out, clean)


@pytest.mark.timeout(180)
def test_a_worker_retired_mid_job_as_at_a_walltime_changes_nothing_in_the_output(
        tmp_path, poisoned, clean, shared_cluster):
    out = tmp_path / "out.zarr"
    cluster = shared_cluster.take(damages=True)  # one worker fewer: no later test gets it
    address = cluster.scheduler_address
    leaving = min(cluster.scheduler.workers)

    def retire() -> None:
        with Client(address, timeout=30) as client:
            client.retire_workers([leaving], close_workers=True)

    watcher = kill_when_done(out, 8, retire)
    report = run(JobSpec.from_dict(trap_job(poisoned, out, tmp_path / "unarmed", delay=0.05)),
                 scheduler=address)
    watcher.join(timeout=30)
    assert leaving not in cluster.scheduler.workers
    assert report.n_tasks == 64
    assert_same_as(out, clean)


@contextlib.contextmanager
def subprocess_cluster(tmp_path: Path, port: int) -> Iterator[subprocess.Popen]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1; yields the scheduler's."""
    address, env = f"tcp://127.0.0.1:{port}", {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    procs += [subprocess.Popen([BIN / "dask", "worker", address, "--nthreads", "1", "--no-dashboard",
                                "--local-directory", str(tmp_path / f"w{i}")], **quiet) for i in range(2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield procs[0]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_killed_scheduler_fails_the_run_in_bounded_time_and_a_rerun_resumes(tmp_path):
    from tests.ports import free_port

    src = scene(tmp_path)
    out = tmp_path / "out.zarr"
    port = free_port()
    job = trap_job(src, out, tmp_path / "unarmed", delay=0.1)
    with subprocess_cluster(tmp_path, port) as scheduler:
        clean = clean_run(src, tmp_path, f"tcp://127.0.0.1:{port}", delay=0.1)
        watcher = kill_when_done(out, 8, scheduler.kill)
        t0 = time.monotonic()
        with pytest.raises(ClusterLostError, match=f"Lost the Dask scheduler at tcp://127.0.0.1:{port}"):
            run(JobSpec.from_dict(job), scheduler=f"tcp://127.0.0.1:{port}")
        assert time.monotonic() - t0 < 120
        watcher.join(timeout=5)
    state = output_status(str(out))
    assert state.status.startswith("failed (ClusterLostError") and 8 <= state.done < 64
    assert verify_output(str(out)).missing  # the rest is missing, nothing falsely done
    with local_cluster() as cluster:
        again = run(JobSpec.from_dict(job), scheduler=cluster.scheduler_address)
    assert again.skipped >= 8 and again.n_tasks + again.skipped == 64
    assert_same_as(out, clean)
