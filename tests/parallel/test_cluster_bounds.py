"""Cluster values checked when the spec is: ``--cluster`` overrides re-checked as the section
would be, and bounds on memory, cores, counts, Kubernetes quantities and walltimes, so that
``geoseg validate`` refuses what ``geoseg run`` would (not an internal error at run time)."""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from geoseg.errors import ClusterConfigError, JobSpecError
from geoseg.jobs.spec import JobSpec
from geoseg.parallel.cluster import jobqueue_kwargs, kubernetes_cluster_spec, with_cluster
from tests.conftest import job_dict

SLURM = {"memory": "4GB", "cores": 4, "walltime": "01:00:00"}


def cluster(**fields: object):
    """A cluster section validated as a job spec validates it."""
    return JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"), "cluster": fields}).cluster


def problems(**fields: object) -> str:
    """The job spec error for a cluster section, on one line."""
    with pytest.raises(JobSpecError) as err:
        cluster(**fields)
    return " ".join(str(err.value).split())


# --- --cluster KIND is checked as the section would be -------------------------------------------


@pytest.fixture()
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def test_cluster_local_keeps_the_per_core_limit_of_local_workers(two_cores):
    """A SLURM spec's n_workers: 400 run with --cluster local asked a local cluster for 400
    worker processes: model_copy skipped the section's check."""
    spec = cluster(kind="slurm", n_workers=400, jobqueue={"cores": 4})
    with pytest.raises(ClusterConfigError) as err:
        with_cluster(spec, "local")
    text = " ".join(str(err.value).split())
    assert "--cluster local" in text and "n_workers: received 400" in text
    assert "at most 8 worker processes for a local cluster on this machine (4 per core, 2 cores)" in text
    assert with_cluster(spec, "slurm").n_workers == 400  # not on this machine
    assert with_cluster(spec, "tcp://h:8786").n_workers == 400
    small = with_cluster(cluster(kind="slurm", n_workers=8, jobqueue={"cores": 4}), "local")
    assert (small.kind, small.n_workers, small.jobqueue.cores) == ("local", 8, 4)
    assert small.model_fields_set == {"kind", "n_workers", "jobqueue", "scheduler"}


def test_run_with_cluster_local_refuses_before_reading_anything(tmp_path, monkeypatch, capsys,
                                                                 two_cores):
    from geoseg.cli import main

    job = tmp_path / "job.yaml"
    spec = job_dict(str(tmp_path / "missing.zarr"), "m.safetensors", str(tmp_path / "o.zarr"))
    job.write_text(yaml.safe_dump({**spec, "cluster": {"kind": "slurm", "n_workers": 400}}))
    monkeypatch.setattr(sys, "argv", ["geoseg", "run", str(job), "--cluster", "local"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "--cluster local" in error and "at most 8 worker processes" in error
    assert "missing.zarr" not in error


# --- bounds of batch jobs ------------------------------------------------------------------------


@pytest.mark.parametrize("memory", ["-1GB", "0", "1e30TB", "2PiB", "1e400TB", "infGB", "lots"])
def test_job_memory_is_above_zero_and_at_most_a_pebibyte(memory):
    text = problems(kind="slurm", jobqueue={**SLURM, "memory": memory})
    assert f"cluster.jobqueue.memory: received {memory!r}" in text
    assert "expected an amount of memory above 0 and at most 1PiB, such as 64GiB" in text


def test_valid_job_memory_is_kept():
    for memory in ("64GiB", "16GB", "1PiB", "512MB"):
        assert cluster(kind="slurm", jobqueue={**SLURM, "memory": memory}).jobqueue.memory == memory


def test_cores_jobs_and_workers_have_upper_bounds():
    text = problems(kind="slurm", n_workers=10_001,
                    jobqueue={**SLURM, "cores": 100_000_000, "jobs": 1_000_000_000})
    assert "cluster.jobqueue.cores: received 100000000 (int); expected at most 4096 cores per job" in text
    assert "cluster.jobqueue.jobs: received 1000000000 (int); expected at most 10000" in text
    assert "cluster.n_workers: received 10001 (int); expected at most 10000" in text
    text = problems(kind="pbs", jobqueue={**SLURM, "processes": 5000, "maximum_jobs": 20_000})
    assert "cluster.jobqueue.processes: received 5000 (int); expected at most 4096" in text
    assert "cluster.jobqueue.maximum_jobs: received 20000 (int); expected at most 10000" in text
    edge = cluster(kind="slurm", n_workers=10_000, jobqueue={**SLURM, "cores": 4096, "jobs": 10_000})
    assert (edge.n_workers, edge.jobqueue.cores, edge.jobqueue.jobs) == (10_000, 4096, 10_000)
    assert "greater than or equal to 1" in problems(kind="slurm", jobqueue={"jobs": 0})


def test_a_walltime_too_short_to_retire_workers_is_refused_by_validation():
    """walltime 00:00:30 passed validation; only the run refused it."""
    text = problems(kind="slurm", jobqueue={**SLURM, "walltime": "00:00:30"})
    assert "cluster.jobqueue.walltime: received '00:00:30'" in text
    assert ("a walltime longer than 00:00:30, which is too short to retire workers 00:01:00 "
            "before it with a stagger of 00:00:01 and let each live 60 s") in text
    long_margin = {**SLURM, "walltime": "00:30:00", "lifetime_margin": "28m"}
    assert "which is too short" in problems(kind="slurm", jobqueue=long_margin)
    short_margin = {**SLURM, "walltime": "00:03:00", "lifetime_margin": "30s", "lifetime_stagger": "10s"}
    assert cluster(kind="slurm", jobqueue=short_margin).jobqueue.walltime == "00:03:00"
    bad_margin = problems(kind="slurm", jobqueue={**SLURM, "lifetime_margin": "soon"})
    assert "lifetime_margin" in bad_margin and "walltime" not in bad_margin.split("lifetime_margin")[1]


def test_a_walltime_or_memory_from_dask_config_is_still_checked_at_run_time():
    import dask

    pytest.importorskip("dask_jobqueue")  # its config defaults first, or the blocks below drop them
    spec = cluster(kind="slurm", jobqueue={"cores": 4, "dashboard_address": None})
    with dask.config.set({"jobqueue.slurm.walltime": "00:00:30", "jobqueue.slurm.memory": "4GB"}), \
            pytest.raises(ClusterConfigError, match=r"jobqueue.slurm.walltime\): received '00:00:30'"):
        jobqueue_kwargs(spec, "slurm")
    with dask.config.set({"jobqueue.slurm.walltime": "01:00:00", "jobqueue.slurm.memory": "-1GB"}), \
            pytest.raises(ClusterConfigError, match=r"dask config jobqueue.slurm.memory: received "
                                                    r"'-1GB'; expected an amount of memory above 0"):
        jobqueue_kwargs(spec, "slurm")


# --- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_quantities_are_positive_and_replicas_bounded():
    text = problems(kind="kubernetes", n_workers=1_000_000,
                    kubernetes={"resources": {"limits": {"memory": "-1Gi", "cpu": -4},
                                              "requests": {"memory": "1K", "cpu": "0m"}}})
    assert "cluster.n_workers: received 1000000 (int); expected at most 10000" in text
    assert "limits.memory: an amount of memory above 0 and at most 1Pi" in text and "'-1Gi'" in text
    assert "limits.cpu: a number of cores above 0 and at most 4096" in text and "(received -4)" in text
    assert "requests.memory" in text and "requests.cpu" in text
    assert "memory" in problems(kind="kubernetes", kubernetes={"resources": {"limits": {"memory": "2Ei"}}})
    assert "cpu" in problems(kind="kubernetes", kubernetes={"resources": {"limits": {"cpu": "5000"}}})
    assert "cpu" in problems(kind="kubernetes", kubernetes={"resources": {"limits": {"cpu": "1e3"}}})


def test_valid_kubernetes_quantities_are_kept():
    pytest.importorskip("dask_kubernetes.operator")
    limits = {"cpu": "500m", "memory": "16Gi", "nvidia.com/gpu": 1}
    requests = {"cpu": 0.5, "memory": "512M", "ephemeral-storage": "10G"}
    spec = cluster(kind="kubernetes", n_workers=10_000,
                   kubernetes={"resources": {"limits": limits, "requests": requests}})
    body = kubernetes_cluster_spec(spec)
    assert body["spec"]["worker"]["replicas"] == 10_000
    (container,) = body["spec"]["worker"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "16Gi", "nvidia.com/gpu": "1"}
    for memory in ("1k", "2M", "3Mi", "1.5Gi", 1073741824):
        assert cluster(kind="kubernetes", kubernetes={"resources": {"limits": {"memory": memory}}})
