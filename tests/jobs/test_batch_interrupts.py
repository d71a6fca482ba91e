"""``geoseg batch`` stopped by Ctrl-C or SIGTERM, in a process of its own (a threads cluster):
it says so at once, lets the running jobs finish (or, on a second Ctrl-C or on SIGTERM, stops
them after their chunks in flight), releases its leases, and ends with its report of what was
done and what was not started; a rerun resumes."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from geoseg.jobs.status import output_status
from geoseg.methods import build
from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr
from tests.jobs.slow_batch import SlowGeoseg, register, slow_geoseg

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD = 128
REGIONS = 16  # per input: 64 x 64 pixels in 16-pixel chunks
WAITING = "interrupted: waiting for 2 running job(s) to finish; press Ctrl-C again to stop at once"


@pytest.fixture(autouse=True)
def _slow_method():
    register()  # for the reruns in this process
    yield
    build.DIRECT.pop("slow", None)


def write_batch(folder: Path) -> Path:
    """Three inputs, two jobs at once, each window taking half a second."""
    for i in range(3):
        write_zarr(folder / "in" / f"s{i}.zarr", textured_image(64, 64, bands=1, seed=i),
                   chunks=(32, 32))
    spec = folder / "batch.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "stop", "inputs": {"glob": f"{folder}/in/*.zarr"},
        "output": {"url_template": f"{folder}/out/{{stem}}.zarr"}, "concurrency": 2,
        "cluster": {"kind": "threads", "threads_per_worker": 4},
        "job": {"model": {"method": "slow", "params": {"thresholds": [THRESHOLD], "delay": 0.5}},
                "output": {"chunks": [16, 16]}, "inference": {"tile": 16}}}))
    return spec


@contextlib.contextmanager
def batch_process(spec: Path, env: dict[str, str]) -> Iterator[SlowGeoseg]:
    with slow_geoseg(["batch", str(spec)], env) as batch:
        yield batch


def reports(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "out").glob("batch-stop-*.json"))]


def by_input(report: dict) -> dict[str, dict]:
    return {Path(i["input"]).stem: i for i in report["items"]}


def expected(seed: int) -> np.ndarray:
    return (textured_image(64, 64, bands=1, seed=seed)[0] > THRESHOLD).astype(np.uint8)


def test_ctrl_c_says_so_at_once_lets_the_running_jobs_finish_and_reports_what_did_not_start(
        tmp_path):
    spec = write_batch(tmp_path)
    with batch_process(spec, {"GEOSEG_RUNS_DIR": str(tmp_path / "runs")}) as batch:
        batch.wait_for("job started", count=2)
        batch.proc.send_signal(signal.SIGINT)
        code = batch.finish()

    lines = "\n".join(batch.lines)
    assert code == 130, lines
    finished = [i for i, line in enumerate(batch.lines) if line.startswith("done: ")]
    assert len(finished) == 2 and batch.lines.index(WAITING) < min(finished), lines  # at once
    [report] = reports(tmp_path)
    items = by_input(report)
    assert report["interrupted"] == "SIGINT" and report["totals"]["not-started"] == 1
    assert sorted(i["state"] for i in items.values()) == ["done", "done", "not-started"]
    assert "interrupted (SIGINT): 2 done, 1 not-started; running the batch again resumes it" in lines
    for stem, item in items.items():
        out = tmp_path / "out" / f"{stem}.zarr"
        if item["state"] == "done":
            assert output_status(str(out)).status == "complete"
        else:
            assert not out.exists()
    assert not list((tmp_path / "out").glob("*.lease"))


def test_a_second_ctrl_c_stops_the_running_jobs_and_a_rerun_resumes_them(tmp_path):
    spec = write_batch(tmp_path)
    env = {"GEOSEG_RUNS_DIR": str(tmp_path / "runs")}
    with batch_process(spec, env) as batch:
        batch.wait_for("job started", count=2)
        batch.proc.send_signal(signal.SIGINT)
        batch.wait_for(WAITING)
        batch.proc.send_signal(signal.SIGINT)
        code = batch.finish()

    lines = "\n".join(batch.lines)
    assert code == 130, lines
    assert "stopping 2 running job(s)" in lines and not any(
        line.startswith("done: ") for line in batch.lines)
    [stopped] = reports(tmp_path)
    items = by_input(stopped)
    assert sorted(i["state"] for i in items.values()) == ["interrupted", "interrupted",
                                                          "not-started"]
    assert not list((tmp_path / "out").glob("*.lease"))
    written = {}
    for stem, item in items.items():
        if item["state"] == "interrupted":
            status = output_status(str(tmp_path / "out" / f"{stem}.zarr"))
            assert status.status.startswith("interrupted") and status.done < REGIONS
            written[stem] = status.done

    again = geoseg("batch", str(spec), env=env)

    assert again.returncode == 0, again.stderr
    rerun = by_input(reports(tmp_path)[-1] if reports(tmp_path)[-1]["run"] != stopped["run"]
                     else reports(tmp_path)[0])
    assert {stem: i["state"] for stem, i in rerun.items()} == {"s0": "done", "s1": "done",
                                                               "s2": "done"}
    for stem, item in rerun.items():
        assert item["chunks_computed"] == REGIONS - written.get(stem, 0)  # resumed, not redone
        out = str(tmp_path / "out" / f"{stem}.zarr")
        np.testing.assert_array_equal(zarr.open_group(out, mode="r")["classes"][:],
                                      expected(int(stem[1:])))


def test_sigterm_stops_the_batch_releasing_its_leases(tmp_path):
    spec = write_batch(tmp_path)
    with batch_process(spec, {"GEOSEG_RUNS_DIR": str(tmp_path / "runs")}) as batch:
        batch.wait_for("job started", count=2)
        assert len(list((tmp_path / "out").glob("*.lease"))) == 2
        batch.proc.send_signal(signal.SIGTERM)
        code = batch.finish()

    lines = "\n".join(batch.lines)
    assert code == 143, lines
    assert not list((tmp_path / "out").glob("*.lease*"))  # released, swap guards and all
    [report] = reports(tmp_path)
    assert report["interrupted"] == "SIGTERM"
    assert sorted(i["state"] for i in report["items"]) == ["interrupted", "interrupted",
                                                           "not-started"]
    assert "interrupted (SIGTERM): 2 interrupted, 1 not-started" in lines
    for stem, item in by_input(report).items():  # what each run wrote, its tasks running
        if item["state"] == "interrupted":        # when it stopped included
            done = output_status(str(tmp_path / "out" / f"{stem}.zarr")).done
            assert item["chunks_computed"] == done, (item, done)


def test_a_second_ctrl_c_landing_just_after_the_waiting_message_still_stops_the_jobs(tmp_path):
    """The signal may arrive in any bytecode after the message is out: it is a second Ctrl-C,
    not an exit that leaves the running jobs behind their released leases."""
    from concurrent.futures import Future

    from geoseg.jobs.batch import BatchRunner
    from geoseg.jobs.batch_spec import load_batch

    said: list[str] = []

    def log(message: str) -> None:
        said.append(message)
        if message == WAITING:
            raise KeyboardInterrupt  # as if the second Ctrl-C landed as the line was written

    runner = BatchRunner(load_batch(write_batch(tmp_path)), log=log)
    running = [Future(), Future()]
    finishing = threading.Timer(0.3, lambda: [f.set_result(None) for f in running])
    finishing.start()
    runner._wind_down(running, KeyboardInterrupt())
    finishing.join()

    assert runner.stopping.is_set() and runner.interrupted == "SIGINT"
    assert said[-1].startswith("stopping 2 running job(s)")
