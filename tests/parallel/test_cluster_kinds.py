"""Cluster kinds: ``--cluster`` values, SLURM/PBS job scripts that dask-jobqueue really builds
(and one really run by bash, and one job run end to end through a stand-in ``sbatch``), the
DaskCluster resource for Kubernetes checked against the operator's CRD, missing extras."""

from __future__ import annotations

import math
import os
import shlex
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from dask.utils import parse_bytes, parse_timedelta
from hypothesis import given
from hypothesis import strategies as st

import geoseg
from geoseg.errors import ClusterConfigError, JobSpecError, MissingExtraError
from geoseg.jobs.spec import JobSpec
from geoseg.parallel.cluster import (
    cluster_kind,
    connect,
    jobqueue_cluster,
    jobqueue_kwargs,
    kubernetes_cluster_spec,
    kubernetes_scheduler_address,
    with_cluster,
)
from geoseg.parallel.cluster_spec import ClusterSpec, walltime_seconds, worker_lifetime
from tests.conftest import job_dict, slurm_job_script_worker, textured_image, write_zarr
from tests.deploy.commands import check_command
from tests.deploy.k8s_schema import manifest_errors

BIN = Path(sys.executable).parent
SLURM = {"cores": 8, "memory": "30GiB", "processes": 4, "walltime": "02:00:00", "queue": "gpu-long",
         "account": "proj-42", "job_extra_directives": ["--exclusive", "--gres=gpu:1"],
         "job_script_prologue": ["module load cuda/12", "export GEOSEG_DEVICE=cuda"],
         "dashboard_address": None}


@pytest.fixture(autouse=True)
def _records_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_RUNS_DIR", str(tmp_path / "runs"))


def cluster(**fields: object) -> ClusterSpec:
    """A cluster section validated as a job spec validates it."""
    return JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"), "cluster": fields}).cluster


def directives(script: str, prefix: str) -> list[list[str]]:
    """The ``#SBATCH`` / ``#PBS`` lines of a job script, each split into words."""
    return [shlex.split(line)[1:] for line in script.splitlines() if line.startswith(prefix + " ")]


def worker_command(script: str) -> list[str]:
    """The job script's line that starts the Dask worker, split into words."""
    (line,) = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    return shlex.split(line)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


# --- --cluster values and the cluster section ----------------------------------------------------


@pytest.mark.parametrize(("value", "kind", "scheduler"), [
    ("local", "local", None), ("slurm", "slurm", None), ("pbs", "pbs", None),
    ("kubernetes", "kubernetes", None), ("tcp://10.0.0.5:8786", "address", "tcp://10.0.0.5:8786"),
    ("tls://scheduler.example.org:8786", "address", "tls://scheduler.example.org:8786"),
    ("scheduler:8786", "address", "scheduler:8786"),
])
def test_cluster_option_picks_a_kind_or_an_address(value, kind, scheduler):
    spec = with_cluster(cluster(kind="slurm", jobqueue={"cores": 4}), value)
    assert (spec.kind, spec.scheduler) == (kind, scheduler)
    assert spec.jobqueue.cores == 4  # the per-kind settings stay, --cluster only picks


@pytest.mark.parametrize("value", ["lsf", "tcp:/host:8786", "", "http//x"])
def test_an_unknown_cluster_option_says_what_is_allowed(value):
    with pytest.raises(ClusterConfigError) as err:
        with_cluster(cluster(), value)
    assert repr(value) in str(err.value) and "local, threads, slurm, pbs, kubernetes" in str(err.value)


def test_a_scheduler_means_an_address_and_nothing_means_local(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert cluster_kind(cluster(scheduler="tcp://h:8786")) == "address"
    assert cluster_kind(cluster()) == "local"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://h:8786")
    assert cluster_kind(cluster()) == "address"
    assert cluster_kind(cluster(kind="local")) == "local"  # an explicit kind wins


def test_cluster_section_errors_name_key_value_and_what_is_allowed():
    with pytest.raises(JobSpecError) as err:
        cluster(kind="slurm", scheduler="tcp://h:8786")
    assert "scheduler only with kind address (or no kind), not with kind slurm" in str(err.value)
    with pytest.raises(JobSpecError) as err:
        cluster(kind="slurm", jobqueue={"jobs": 2, "minimum_jobs": 1, "maximum_jobs": 3})
    assert "cluster.jobqueue: received" in str(err.value) and "either jobs" in str(err.value)
    with pytest.raises(JobSpecError) as err:
        cluster(kind="lsf", jobqueue={"walltime": "90", "memory": "lots"})
    text = str(err.value)
    assert "cluster.kind: received 'lsf'" in text and "'slurm', 'pbs' or 'kubernetes'" in text
    assert "cluster.jobqueue.walltime: received '90'" in text and "HH:MM:SS" in text
    assert "cluster.jobqueue.memory: received 'lots'" in text


def test_kind_address_without_any_address_fails_before_connecting(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ClusterConfigError, match="received no scheduler address"), \
            connect(cluster(kind="address")):
        pass


def test_run_on_an_address_given_as_cluster(tmp_path, model_path, cluster_address):
    image = textured_image(64, 96, seed=3)
    spec = job_dict(write_zarr(tmp_path / "in.zarr", image), model_path, str(tmp_path / "out.zarr"))
    job = JobSpec.from_dict({**spec, "cluster": {"kind": "slurm"}})  # --cluster overrides the kind
    report = geoseg.jobs.run(job, cluster=cluster_address)
    assert report.provenance["cluster"]["kind"] == "existing"
    expected = geoseg.load_model(model_path).predict_image(image).argmax(0)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"))["classes"][:], expected)
    with pytest.raises(ClusterConfigError, match="both --cluster"):
        geoseg.jobs.run(job, cluster=cluster_address, scheduler=cluster_address)


def test_cli_reports_a_bad_cluster_value_before_reading_anything(tmp_path, monkeypatch, capsys):
    from geoseg.cli import main

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(str(tmp_path / "missing.zarr"), "m.safetensors", "o.zarr")))
    monkeypatch.setattr(sys, "argv", ["geoseg", "run", str(job), "--cluster", "lsf"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "--cluster: received 'lsf'" in error and "missing.zarr" not in error


# --- worker lifetimes ----------------------------------------------------------------------------


@given(st.integers(min_value=3 * 60, max_value=30 * 86400))
def test_every_worker_retires_before_the_walltime(walltime):
    lifetime, stagger = worker_lifetime(walltime)
    assert lifetime - stagger >= 60  # each lives a minute or more
    assert lifetime + stagger <= walltime - 60  # the last one a minute or more before the kill


def test_lifetime_for_one_hour_is_like_dask_jobqueue_documents():
    # dask-jobqueue's docs: walltime 01:00:00 with --lifetime 55m --lifetime-stagger 4m
    assert worker_lifetime(3600) == (54 * 60, 3 * 60)
    assert worker_lifetime(3600, margin=60, stagger=240) == (55 * 60, 4 * 60)


def test_a_walltime_too_short_for_a_lifetime_is_refused():
    with pytest.raises(ClusterConfigError, match="longer than 00:02:00, which is too short"):
        worker_lifetime(120)
    with pytest.raises(ClusterConfigError, match="longer than 01:00:00, which is too short"):
        worker_lifetime(3600, margin=1800, stagger=900)


def test_walltime_formats():
    assert walltime_seconds("01:30:00") == 5400
    assert walltime_seconds("1-00:00:10") == 86410
    assert walltime_seconds("100:00:00") == 360000
    for bad in ("90", "1:30", "00:61:00", "1d"):
        with pytest.raises(ValueError, match="HH:MM:SS"):
            walltime_seconds(bad)


# --- SLURM and PBS job scripts (dask-jobqueue) ---------------------------------------------------


def test_slurm_job_script_follows_the_geoseg_config():
    spec = cluster(kind="slurm", threads_per_worker=2, jobqueue=SLURM)
    with jobqueue_cluster(spec, "slurm") as slurm:
        script = slurm.job_script()
    sbatch = directives(script, "#SBATCH")
    assert ["-t", SLURM["walltime"]] in sbatch
    assert ["-p", SLURM["queue"]] in sbatch and ["-A", SLURM["account"]] in sbatch
    assert [f"--cpus-per-task={SLURM['cores']}"] in sbatch
    assert [f"--mem={math.ceil(parse_bytes(SLURM['memory']) / 2**30)}G"] in sbatch
    assert all([d] in sbatch for d in SLURM["job_extra_directives"])
    lines = script.splitlines()
    command = worker_command(script)
    start = next(i for i, line in enumerate(lines) if "distributed.cli.dask_worker" in line)
    assert lines.index(SLURM["job_script_prologue"][-1]) < start  # set up, then the worker
    assert lines.index(SLURM["job_script_prologue"][0]) < lines.index(SLURM["job_script_prologue"][1])
    assert command[0] == sys.executable
    assert option(command, "--nthreads") == str(SLURM["cores"] // SLURM["processes"])
    assert option(command, "--nworkers") == str(SLURM["processes"])
    assert parse_bytes(option(command, "--memory-limit")) == pytest.approx(
        parse_bytes(SLURM["memory"]) / SLURM["processes"], rel=0.01)
    lifetime = parse_timedelta(option(command, "--lifetime"))
    stagger = parse_timedelta(option(command, "--lifetime-stagger"))
    assert lifetime + stagger <= walltime_seconds(SLURM["walltime"]) - 60
    assert "--lifetime-restart" not in command  # a restarted worker would die with its job


def test_pbs_job_script_follows_the_geoseg_config():
    jq = {**SLURM, "walltime": "1-12:00:00", "queue": "workq", "job_extra_directives": ["-l place=excl"]}
    with jobqueue_cluster(cluster(kind="pbs", jobqueue=jq), "pbs") as pbs:
        script = pbs.job_script()
    lines = directives(script, "#PBS")
    assert ["-l", "walltime=36:00:00"] in lines  # PBS has no D-HH:MM:SS
    assert ["-q", "workq"] in lines and ["-A", jq["account"]] in lines and ["-l", "place=excl"] in lines
    (select,) = [d[1] for d in lines if d[0] == "-l" and d[1].startswith("select=")]
    assert f"ncpus={jq['cores']}" in select.split(":")
    command = worker_command(script)
    assert option(command, "--nthreads") == str(jq["cores"] // jq["processes"])
    assert parse_timedelta(option(command, "--lifetime")) < 36 * 3600


def test_processes_default_to_cores_over_threads_and_jobs_cover_n_workers():
    spec = cluster(kind="slurm", n_workers=10, threads_per_worker=4,
                   jobqueue={**SLURM, "processes": None, "cores": 16})
    kwargs = jobqueue_kwargs(spec, "slurm")
    assert kwargs["processes"] == 4
    from geoseg.parallel.cluster import job_range

    assert job_range(spec.jobqueue, spec.n_workers, kwargs["processes"]) == (3, 3)
    adaptive = cluster(kind="slurm", jobqueue={**SLURM, "minimum_jobs": 1, "maximum_jobs": 5})
    assert job_range(adaptive.jobqueue, None, 4) == (1, 5)


def test_unset_settings_come_from_dask_jobqueue_config(tmp_path):
    import dask

    spec = cluster(kind="slurm", jobqueue={"dashboard_address": None})
    with dask.config.set({"jobqueue.slurm.cores": 6, "jobqueue.slurm.memory": "12GB",
                          "jobqueue.slurm.walltime": "00:45:00"}):
        kwargs = jobqueue_kwargs(spec, "slurm")
    assert (kwargs["cores"], kwargs["memory"], kwargs["walltime"]) == (6, "12GB", "00:45:00")
    missing = r"cluster.jobqueue.cores: required .* jobqueue.slurm.cores"
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": "12GB"}), \
            pytest.raises(ClusterConfigError, match=missing):
        jobqueue_kwargs(spec, "slurm")


def test_the_slurm_job_script_starts_a_worker_that_retires_before_the_walltime(tmp_path):
    """Outside SLURM, #SBATCH lines are comments: bash runs the script's prologue and worker."""
    jq = {"cores": 2, "memory": "2GiB", "processes": 1, "walltime": "00:20:00", "interface": "lo",
          "dashboard_address": None, "local_directory": str(tmp_path),
          "job_script_prologue": ["export GEOSEG_PROLOGUE_MARK=ran-before-the-worker"]}
    with slurm_job_script_worker(jq, tmp_path) as client:
        marks = client.run(lambda: os.environ.get("GEOSEG_PROLOGUE_MARK"))  # the worker's
        lifetimes = client.run(lambda dask_worker: dask_worker.lifetime)
        threads = [w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    assert list(marks.values()) == ["ran-before-the-worker"]
    assert threads == [2]
    (lifetime,) = lifetimes.values()  # drawn by the worker within lifetime +- stagger
    assert 0 < lifetime <= walltime_seconds(jq["walltime"]) - 60


SBATCH = """#!/usr/bin/env bash
# Stand-in for SLURM's sbatch on a machine without SLURM: runs the job script in the background,
# in its own process group, and answers like sbatch.
set -eu
job="$(mktemp "$GEOSEG_STANDIN_DIR/job-XXXXXX.sh")"
cp "$1" "$job"
setsid bash "$job" > "$job.log" 2>&1 < /dev/null &
echo "$!" >> "$GEOSEG_STANDIN_DIR/pids"
echo "Submitted batch job $!"
"""
SCANCEL = """#!/usr/bin/env bash
# Stand-in for scancel: ends the job's process group.
kill -TERM -- "-$1" 2>/dev/null || true
"""


@pytest.fixture()
def standin_slurm(tmp_path, monkeypatch):
    """``sbatch`` and ``scancel`` stand-ins on PATH (a one-node batch system); kills leftovers."""
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GEOSEG_STANDIN_DIR", str(tmp_path))
    yield tmp_path
    pids = (tmp_path / "pids").read_text().split() if (tmp_path / "pids").exists() else []
    for pid in pids:
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_job_runs_on_slurm_workers_through_sbatch(tmp_path, model_path, standin_slurm):
    image = textured_image(96, 128, seed=5)
    spec = job_dict(write_zarr(tmp_path / "in.zarr", image), model_path, str(tmp_path / "out.zarr"))
    spec["cluster"] = {"kind": "slurm", "jobqueue": {
        "cores": 2, "memory": "2GiB", "processes": 1, "walltime": "00:30:00", "interface": "lo",
        "dashboard_address": None, "jobs": 1, "local_directory": str(tmp_path)}}
    report = geoseg.jobs.run(JobSpec.from_dict(spec))
    assert report.provenance["cluster"] == {"kind": "slurm", "workers": 1, "threads": 2}
    expected = geoseg.load_model(model_path).predict_image(image).argmax(0)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"))["classes"][:], expected)
    assert len((standin_slurm / "pids").read_text().split()) == 1  # one job submitted


# --- Kubernetes (Dask operator) ------------------------------------------------------------------


def test_kubernetes_config_builds_a_daskcluster_the_operator_accepts():
    spec = cluster(kind="kubernetes", n_workers=3, threads_per_worker=2, kubernetes={
        "name": "seg-night", "namespace": "geo", "image": "registry.example.org/geoseg:cuda",
        "resources": {"limits": {"cpu": 4, "memory": "16Gi", "nvidia.com/gpu": 1}},
        "env": {"GEOSEG_DEVICE": "cuda"}, "secrets": ["geoseg-s3"]})
    body = kubernetes_cluster_spec(spec)
    assert manifest_errors(body) == []  # the dask-kubernetes CRD schema, offline
    assert body["metadata"] == {"name": "seg-night", "namespace": "geo"}
    worker = body["spec"]["worker"]
    assert worker["replicas"] == 3
    for role in ("scheduler", "worker"):
        (container,) = body["spec"][role]["spec"]["containers"]
        assert container["image"] == "registry.example.org/geoseg:cuda"
        assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
        assert {"name": "GEOSEG_DEVICE", "value": "cuda"} in container["env"]
        assert container["envFrom"] == [{"secretRef": {"name": "geoseg-s3"}}]
        assert "args" not in container  # the image's entrypoint is geoseg: Dask goes in command
    (worker_container,) = worker["spec"]["containers"]
    assert worker_container["command"][:2] == ["dask", "worker"]
    assert option(worker_container["command"], "--nthreads") == "2"
    (scheduler_container,) = body["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler_container["command"][:2] == ["dask", "scheduler"]


def test_kubernetes_commands_are_real_dask_commands():
    body = kubernetes_cluster_spec(cluster(kind="kubernetes"))
    for role in ("scheduler", "worker"):
        (container,) = body["spec"][role]["spec"]["containers"]
        check_command(container["command"])


def test_an_existing_daskcluster_is_reached_where_the_operator_points_its_jobs():
    from dask_kubernetes.operator.controller.controller import build_job_pod_spec

    pod = build_job_pod_spec("any-job", "seg-night", "geo", {"containers": [{"name": "job"}]}, {}, {})
    (env,) = pod["spec"]["containers"][0]["env"]
    settings = cluster(kind="kubernetes", kubernetes={"name": "seg-night", "namespace": "geo",
                                                      "existing": True}).kubernetes
    assert kubernetes_scheduler_address(settings) == env["value"]


# --- optional extras -----------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "kind", "extra"), [
    ("dask_jobqueue", "slurm", "geoseg[hpc]"), ("dask_jobqueue", "pbs", "geoseg[hpc]"),
    ("dask_kubernetes.operator", "kubernetes", "geoseg[kubernetes]")])
def test_a_missing_extra_names_the_pip_install(monkeypatch, module, kind, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without it imports
    spec = cluster(kind=kind, jobqueue=SLURM)
    build = kubernetes_cluster_spec if kind == "kubernetes" else lambda s: jobqueue_kwargs(s, kind)
    with pytest.raises(MissingExtraError) as err:
        build(spec)
    assert f"pip install '{extra}'" in str(err.value) and f"cluster kind {kind}" in str(err.value)
    assert isinstance(err.value, ImportError)


def test_a_local_cluster_of_more_workers_than_the_machine_holds_is_refused(monkeypatch):
    """n_workers: 100000 passed validation and a local cluster would start them, about 250 MB
    each; threads per worker had no bound either."""
    import os

    from geoseg.parallel.cluster_spec import ClusterSpec

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(ValueError, match=r"at most 8 worker processes for a local cluster on this "
                                         r"machine \(4 per core, 2 cores\)"):
        ClusterSpec(n_workers=9)
    with pytest.raises(ValueError, match="less than or equal to 1024"):
        ClusterSpec(threads_per_worker=1025)
    assert ClusterSpec(n_workers=8).n_workers == 8
    assert ClusterSpec(kind="slurm", n_workers=500).n_workers == 500  # not on this machine
    assert ClusterSpec(scheduler="tcp://h:8786", n_workers=500).n_workers == 500


def test_completed_yields_every_future_once_following_at_most_watched(monkeypatch, cluster_address):
    from distributed import Client, as_completed

    from geoseg.parallel import executor

    followed = []

    class Counted(as_completed):  # the futures followed and not yet yielded, after each addition
        def add(self, future):
            super().add(future)
            followed.append(self.count())

    monkeypatch.setattr(executor, "WATCHED", 4)
    monkeypatch.setattr(executor, "as_completed", Counted)
    with Client(cluster_address) as client:
        futures = client.map(time.sleep, [0.05 * (i % 3) for i in range(30)], pure=False)
        seen = [f.key for f in executor.completed(client, futures)]
    assert sorted(seen) == sorted(f.key for f in futures)
    assert len(followed) == 30 - 4 and max(followed) <= 4  # four followed from the start
