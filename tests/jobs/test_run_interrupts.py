"""``geoseg run`` stopped by SIGTERM (``kill``, a scheduler's time limit, a container's
shutdown) ends as on Ctrl-C: its tasks stop, its output says ``interrupted``, its lease is
released at once (not left to keep other machines off the output until it expires), and a
rerun resumes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from geoseg.errors import RasterNotFoundError
from geoseg.jobs.status import output_status
from geoseg.methods import build
from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr
from tests.jobs.slow_batch import ROOT, SlowGeoseg, register, slow_geoseg

THRESHOLD = 128
REGIONS = 16  # 64 x 64 pixels in 16-pixel chunks


@pytest.fixture(autouse=True)
def _slow_method():
    register()  # for the rerun in this process
    yield
    build.DIRECT.pop("slow", None)


def write_job(folder: Path) -> Path:
    write_zarr(folder / "in.zarr", textured_image(64, 64, bands=1, seed=3), chunks=(32, 32))
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump({
        "input": {"url": str(folder / "in.zarr")},
        "model": {"method": "slow", "params": {"thresholds": [THRESHOLD], "delay": 0.5}},
        "output": {"url": str(folder / "out.zarr"), "chunks": [16, 16]}, "inference": {"tile": 16},
        "cluster": {"kind": "threads", "threads_per_worker": 2}}))
    return job


def regions_done(out: Path) -> int:
    """Regions written to the output at ``out``, 0 while the run has not made it whole (its
    folder may be there a moment before its group metadata)."""
    try:
        return output_status(str(out)).done
    except RasterNotFoundError:
        return 0


def wait_for_a_region(out: Path, run: SlowGeoseg, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while regions_done(out) < 1:
        assert run.proc.poll() is None and time.monotonic() < deadline, "\n".join(run.lines)
        time.sleep(0.05)


def test_sigterm_ends_a_run_as_ctrl_c_does_releasing_its_lease_and_a_rerun_resumes(tmp_path):
    job = write_job(tmp_path)
    env = {"GEOSEG_RUNS_DIR": str(tmp_path / "runs")}
    with slow_geoseg(["run", str(job)], env) as run:
        run.wait_for("job started")
        assert (tmp_path / "out.zarr.lease").exists()
        wait_for_a_region(tmp_path / "out.zarr", run)
        run.proc.send_signal(signal.SIGTERM)
        code = run.finish()

    lines = "\n".join(run.lines)
    assert code == 143, lines
    assert "terminated (SIGTERM); a rerun resumes from the chunks already written" in lines
    assert "Traceback" not in lines
    assert not list(tmp_path.glob("out.zarr.lease*"))  # released, swap guard and all
    status = output_status(str(tmp_path / "out.zarr"))
    assert status.status.startswith("interrupted") and status.done < REGIONS, status

    again = geoseg("run", str(job), env=env)

    assert again.returncode == 0, again.stderr
    assert f"resuming: {status.done} of {REGIONS} chunk(s) already done" in again.stderr
    expected = (textured_image(64, 64, bands=1, seed=3)[0] > THRESHOLD).astype(np.uint8)
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "out.zarr", mode="r")["classes"][:],
                                  expected)


@contextlib.contextmanager
def fifo_in_place_of_a_chunk(store: Path) -> Iterator[Callable[[], bool]]:
    """One chunk file of ``store`` replaced by a FIFO; yields a check saying whether a reader has
    opened it. Once one has, this end stays open unwritten, so that reader waits in ``read()``
    for good: a read no signal interrupts in a worker thread, as from a hung mount."""
    chunk = [p for p in sorted((store / "c").rglob("*")) if p.is_file()][-1]  # not the first,
    # which opening the input reads
    chunk.unlink()
    os.mkfifo(chunk)
    held: list[int] = []

    def opened() -> bool:
        if not held:
            with contextlib.suppress(OSError):  # ENXIO: no reader yet
                held.append(os.open(chunk, os.O_WRONLY | os.O_NONBLOCK))
        return bool(held)

    try:
        yield opened
    finally:
        for fd in held:
            os.close(fd)


def test_sigterm_ends_an_in_process_run_whose_task_is_stuck_in_a_read(tmp_path):
    write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1, seed=3), chunks=(32, 32))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "input": {"url": str(tmp_path / "in.zarr"), "missing_chunks": "fill"},
        "model": {"method": "threshold", "params": {"thresholds": [THRESHOLD]}},
        "output": {"url": str(tmp_path / "out.zarr")}}))
    env = {"GEOSEG_RUNS_DIR": str(tmp_path / "runs")}
    with fifo_in_place_of_a_chunk(tmp_path / "in.zarr") as opened, \
            slow_geoseg(["run", str(job)], env) as run:
        run.wait_for("running on 1 thread(s) in this process")  # the small-job cluster
        deadline = time.monotonic() + 120
        while not opened():
            assert run.proc.poll() is None and time.monotonic() < deadline, "\n".join(run.lines)
            time.sleep(0.05)
        run.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = run.finish(timeout=60)  # distributed alone waits 30 s for the task, then forever
        took = time.monotonic() - t0

    lines = "\n".join(run.lines)
    assert code == 143, lines
    assert "terminated (SIGTERM); a rerun resumes from the chunks already written" in lines
    assert "exiting without waiting for it" in lines and "Traceback" not in lines, lines
    assert took < 30, f"took {took:.0f} s to end\n{lines}"
    assert not list(tmp_path.glob("out.zarr.lease*"))
    assert output_status(str(tmp_path / "out.zarr")).status.startswith("interrupted")


def test_ctrl_c_in_a_terminal_stops_a_run_on_worker_processes_without_their_tracebacks(tmp_path):
    """A terminal's Ctrl-C signals the whole process group: the local cluster's worker
    processes too, which printed the traceback of their interrupted event loops."""
    job = write_job(tmp_path)
    spec = yaml.safe_load(job.read_text())
    spec["cluster"] = {"kind": "local", "n_workers": 2, "threads_per_worker": 1}
    job.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen([sys.executable, "-m", "tests.jobs.slow_batch", "run", str(job)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a terminal's
                            env={**os.environ, "GEOSEG_INPROCESS_PIXELS": "1",
                                 "GEOSEG_RUNS_DIR": str(tmp_path / "runs")})
    try:
        deadline = time.monotonic() + 120
        while regions_done(tmp_path / "out.zarr") < 1:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        said = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == 130, said
    assert "interrupted; a rerun resumes" in said and "Traceback" not in said, said


def test_a_stopped_run_returns_once_its_running_tasks_have_ended(tmp_path):
    """Dask cannot stop a task already running: on a cluster that outlives the run (a batch's,
    or one given by address) it went on writing its chunk and manifest entry after the run had
    counted what it wrote (and, in a batch, released its lease)."""
    from distributed import Client, LocalCluster

    from geoseg.jobs import JobSpec, run
    from geoseg.jobs.lease import Lease

    spec = yaml.safe_load(write_job(tmp_path).read_text())
    spec["model"]["params"]["delay"] = 1.0

    def stop(region) -> None:
        raise KeyboardInterrupt  # as a batch's stop does, from its callback

    lease = Lease(str(tmp_path / "out.zarr"), owner="batch-a", seconds=60)  # a batch's: the
    assert lease.acquire()                                                # run keeps it
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client, \
            lease.renewing():
        with pytest.raises(KeyboardInterrupt):
            run(JobSpec.from_dict(spec), client=client, on_done=stop, lease=lease)
        done = regions_done(tmp_path / "out.zarr")
        time.sleep(2.5)  # longer than a task: any still running would have written by now
        assert regions_done(tmp_path / "out.zarr") == done and 1 <= done < REGIONS


def _threshold_job(folder: Path) -> Path:
    """A threshold job on threads over a 32 x 32 image, its spec written in ``folder``."""
    write_zarr(folder / "in.zarr", textured_image(32, 32, bands=1, seed=3))
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump({
        "input": {"url": str(folder / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [THRESHOLD]}},
        "output": {"url": str(folder / "out.zarr")}, "cluster": {"kind": "threads"}}))
    return job


def test_a_signal_while_a_complete_run_draws_its_report_says_the_run_is_complete(tmp_path,
                                                                                 monkeypatch):
    """It said a rerun resumes from the chunks already written, of a complete output."""
    from geoseg import cli
    from geoseg.core.interrupts import Terminated

    def terminated(*args, **kwargs):
        raise Terminated("received signal SIGTERM")

    monkeypatch.setattr(cli, "_html_report", terminated)
    monkeypatch.setattr(cli, "exit_within", lambda code: None)  # no forced exit of pytest
    done = geoseg("run", str(_threshold_job(tmp_path)), env={"GEOSEG_RUNS_DIR": str(tmp_path / "runs")})

    assert done.returncode == 143, done.stderr
    record = next((tmp_path / "runs").glob("*.json"))
    assert (f"terminated (SIGTERM) after the run completed: output {tmp_path / 'out.zarr'} is "
            "complete and its run recorded; its HTML report may be unwritten; `geoseg report "
            f"{record}` writes it") in done.stderr
    assert "rerun resumes" not in done.stderr
    assert output_status(str(tmp_path / "out.zarr")).status == "complete"


def _sigterm_as_the_output_is_marked_complete(monkeypatch) -> None:
    """SIGTERM sent to this process as a run marks its output complete (the CLI's forced exit
    after an interrupt kept off pytest)."""
    from geoseg import cli
    from geoseg.io.output import OutputTarget

    finalize = OutputTarget.finalize

    def signalled(self, attrs, drop=()):
        if attrs.get("status") == "complete":
            os.kill(os.getpid(), signal.SIGTERM)
        return finalize(self, attrs, drop)

    monkeypatch.setattr(OutputTarget, "finalize", signalled)
    monkeypatch.setattr(cli, "exit_within", lambda code: None)


def test_a_signal_while_the_output_is_marked_complete_waits_for_the_run_record(tmp_path, monkeypatch):
    """SIGTERM arriving as the output was marked complete stopped the run between the two: the
    output named a run record that was never written."""
    _sigterm_as_the_output_is_marked_complete(monkeypatch)
    done = geoseg("run", str(_threshold_job(tmp_path)), env={"GEOSEG_RUNS_DIR": str(tmp_path / "runs")})

    assert done.returncode == 143, done.stderr
    assert "Traceback" not in done.stderr
    status = output_status(str(tmp_path / "out.zarr"))
    assert status.status == "complete"
    named = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["geoseg"]["provenance"]["run_record"]
    assert Path(named).is_file() and [Path(named)] == list((tmp_path / "runs").glob("*.json"))
    assert "after the run completed" in done.stderr and "rerun resumes" not in done.stderr


def test_a_run_holds_its_lease_until_its_output_is_complete_and_recorded(tmp_path, monkeypatch):
    """The lease was released before the output was marked complete: another run could take
    the output over and have this one's completion and provenance written into it."""
    from geoseg.jobs import provenance
    from geoseg.jobs.lease import read_lease
    from geoseg.jobs.runner import run

    seen = []
    write_record = provenance.write_record

    def watched(record, folder, target):
        seen.append(read_lease(str(tmp_path / "out.zarr")))
        write_record(record, folder, target)

    monkeypatch.setattr(provenance, "write_record", watched)
    monkeypatch.setenv("GEOSEG_RUNS_DIR", str(tmp_path / "runs"))
    run(str(_threshold_job(tmp_path)))
    assert len(seen) == 1 and seen[0] is not None
    assert read_lease(str(tmp_path / "out.zarr")) is None  # released once published


def test_a_signal_as_a_tracked_output_is_marked_complete_says_mlflow_did_not_get_the_run(
        tmp_path, monkeypatch):
    """The message said only that the run was complete and recorded: MLflow had no run of it."""
    pytest.importorskip("mlflow")
    _sigterm_as_the_output_is_marked_complete(monkeypatch)
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts (./mlruns) under the test's folder
    job = _threshold_job(tmp_path)
    spec = yaml.safe_load(job.read_text())
    spec["tracking"] = {"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    job.write_text(yaml.safe_dump(spec))
    done = geoseg("run", str(job), env={"GEOSEG_RUNS_DIR": str(tmp_path / "runs")})

    assert done.returncode == 143, done.stderr
    said = " ".join(done.stderr.split())
    assert "after the run completed" in said and "stopped before it was logged to MLflow" in said
    assert "To log it, run the job again" in said
    record = yaml.safe_load(next((tmp_path / "runs").glob("*.json")).read_text())
    assert record["tracking"]["mlflow"]["error"] == "interrupted before the run was logged to MLflow"
