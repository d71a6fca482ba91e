"""The record of a run stopped while tasks still run counts what those tasks wrote: Dask cannot
stop a running task, the run waits for it, and it writes its chunk and manifest entry, though
its result never comes back to the run."""

from __future__ import annotations

import json

import pytest
import yaml

from geoseg.jobs.status import output_status
from geoseg.methods import build
from tests.jobs.slow_batch import register
from tests.jobs.test_run_interrupts import REGIONS, write_job


@pytest.fixture(autouse=True)
def _slow_method():
    register()
    yield
    build.DIRECT.pop("slow", None)


@pytest.mark.parametrize("resumed", [False, True])
def test_an_interrupted_runs_record_counts_the_chunks_its_running_tasks_wrote(tmp_path, resumed):
    """``chunks.computed`` counted only the results that came back: the two tasks the run
    waited for ("waiting up to 10 s for 2 task(s) already running to end") wrote their chunks
    and manifest entries, and the record said 2 fewer than the manifest gained."""
    from distributed import Client, LocalCluster

    from geoseg.jobs import JobSpec, run

    spec = yaml.safe_load(write_job(tmp_path).read_text())
    spec["model"]["params"]["delay"] = 1.0
    spec["runs_dir"] = str(tmp_path / "runs")
    out = str(tmp_path / "out.zarr")

    def stop(region) -> None:
        raise KeyboardInterrupt  # at the first region back: the other thread's task is running

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        before = 0
        if resumed:
            with pytest.raises(KeyboardInterrupt):
                run(JobSpec.from_dict(spec), client=client, on_done=stop)
            before = output_status(out).done
        with pytest.raises(KeyboardInterrupt):
            run(JobSpec.from_dict(spec), client=client, on_done=stop)
    after = output_status(out).done
    records = sorted((tmp_path / "runs").glob("*.json"))
    record = json.loads(records[-1].read_text())
    assert record["status"] == "interrupted"
    assert record["chunks"]["skipped_as_done"] == before
    assert after - before >= 2 and after < REGIONS  # the region back, and those waited for
    assert record["chunks"]["computed"] == after - before, record["chunks"]
