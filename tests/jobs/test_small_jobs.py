"""Small local jobs run on threads in the calling process (no worker processes to start, no
model copy per process), and a clean local run writes nothing to stderr but geoseg's own lines
and nothing into the working directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geoseg.errors import SettingError
from geoseg.parallel.cluster import for_job_size
from geoseg.parallel.cluster_spec import ClusterSpec
from tests.conftest import job_dict, textured_image, write_zarr

# geoseg's own lines: its text log format, the progress bar and the closing summary
OWN_LINE = re.compile(r"^(\d\d:\d\d:\d\d (INFO|WARNING) |segmenting |wrote |run record: |html report: |$)")


def test_a_small_local_cpu_job_runs_on_threads_one_per_task(monkeypatch):
    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    cores = os.cpu_count() or 1
    small = for_job_size(ClusterSpec(), pixels=600_000, tasks=1)
    assert (small.kind, small.threads_per_worker) == ("threads", 1)
    assert for_job_size(ClusterSpec(), 600_000, tasks=64).threads_per_worker == cores


@pytest.mark.parametrize("spec, pixels, setting", [
    (ClusterSpec(), 9_000_000, "8e6"),  # larger than the setting
    (ClusterSpec(), 100, "0"),  # the setting turns it off
    (ClusterSpec(n_workers=2), 100, "8e6"),  # a layout asked for
    (ClusterSpec(threads_per_worker=1), 100, "8e6"),
    (ClusterSpec(scheduler="tcp://127.0.0.1:8786"), 100, "8e6"),  # not local
])
def test_other_jobs_keep_the_cluster_they_asked_for(monkeypatch, spec, pixels, setting):
    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    monkeypatch.setenv("GEOSEG_INPROCESS_PIXELS", setting)
    assert for_job_size(spec, pixels, tasks=4) == spec


def test_a_bad_setting_says_what_it_expects(monkeypatch):
    monkeypatch.setenv("GEOSEG_INPROCESS_PIXELS", "many")
    with pytest.raises(SettingError, match="GEOSEG_INPROCESS_PIXELS: received 'many'; expected"):
        for_job_size(ClusterSpec(), 100, tasks=1)


def _run(folder: Path, data: dict) -> subprocess.CompletedProcess:
    (folder / "job.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "COLUMNS": "1000", "GEOSEG_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "geoseg.cli", "run", "job.yaml"], cwd=folder,
                          check=False, capture_output=True, text=True, timeout=300, env=env)


def _record(result: subprocess.CompletedProcess) -> dict:
    path = re.search(r"run record: (\S+\.json)", " ".join((result.stdout + result.stderr).split()))
    assert path, result.stdout + result.stderr
    return json.loads(Path(path.group(1)).read_text())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cluster, kind", [({}, "threads"), ({"n_workers": 2}, "local")])
def test_a_clean_local_run_prints_only_geoseg_lines_on_stderr(tmp_path, model_path, cluster, kind):
    """The small job runs on threads; the one that asks for two worker processes gets them,
    and neither leaves Dask's port, shutdown, task or shuffle noise on stderr nor files in the
    folder, its watershed instances included (their rechunks shuffle peer to peer)."""
    folder = tmp_path / "here"
    folder.mkdir()
    write_zarr(folder / "in.zarr", textured_image(96, 80), chunks=(48, 48))
    data = {**job_dict("in.zarr", model_path, "out.zarr"), "cluster": cluster,
            "instances": {"method": "watershed", "classes": [1, 2], "halo": 8}}
    result = _run(folder, data)
    assert result.returncode == 0, result.stdout + result.stderr
    foreign = [line for line in result.stderr.splitlines() if not OWN_LINE.match(line)]
    assert foreign == [], result.stderr
    assert _record(result)["cluster"]["kind"] == kind
    threads = min(os.cpu_count() or 1, 4)  # one per task, at most one per core
    said = f"running on {threads} thread(s) in this process"
    assert (said in result.stderr) == (kind == "threads")
    assert sorted(p.name for p in folder.iterdir()) == ["in.zarr", "job.yaml", "out.zarr"]
