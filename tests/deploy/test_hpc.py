"""deploy/hpc: the SLURM and PBS recipes are valid job specs, and dask-jobqueue builds from them
job scripts whose directives, setup lines and worker command follow what the recipe says."""

from __future__ import annotations

import math
import os
import shlex
import sys
from pathlib import Path

import dask
import pytest
from dask.utils import parse_bytes, parse_timedelta

from geoseg.jobs.spec import load_job
from geoseg.parallel.cluster import jobqueue_cluster, jobqueue_kwargs
from geoseg.parallel.cluster_spec import ClusterSpec, walltime_seconds
from tests.conftest import slurm_job_script_worker

HPC = Path(__file__).resolve().parents[2] / "deploy" / "hpc"


def job_script(name: str) -> tuple[object, str]:
    spec = load_job(HPC / name)
    with jobqueue_cluster(spec.cluster, spec.cluster.kind) as cluster:
        return spec.cluster, cluster.job_script()


def directives(script: str, prefix: str) -> list[str]:
    return [line.removeprefix(prefix).strip() for line in script.splitlines() if line.startswith(prefix)]


def worker(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    return shlex.split(line)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_the_recipes_are_there_with_their_kinds():
    assert {p.name: load_job(p).cluster.kind for p in HPC.glob("*.yaml")} == {
        "slurm.yaml": "slurm", "pbs.yaml": "pbs"}
    readme = (HPC / "README.md").read_text()
    assert "slurm.yaml" in readme and "pbs.yaml" in readme and "geoseg[hpc]" in readme


def test_slurm_recipe_job_script():
    cluster, script = job_script("slurm.yaml")
    jq = cluster.jobqueue
    sbatch = directives(script, "#SBATCH")
    assert f"-t {jq.walltime}" in sbatch and f"-p {jq.queue}" in sbatch and f"-A {jq.account}" in sbatch
    assert f"--cpus-per-task={jq.cores}" in sbatch
    assert f"--mem={math.ceil(parse_bytes(jq.memory) / 2**30)}G" in sbatch
    assert all(d in sbatch for d in jq.job_extra_directives)
    assert f"-e {jq.log_directory}/geoseg-worker-%J.err" in sbatch
    body = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert body[:len(jq.job_script_prologue)] == jq.job_script_prologue  # set up, then the worker
    command = worker(script)
    assert shlex.split(body[len(jq.job_script_prologue)]) == command
    assert option(command, "--nthreads") == str(cluster.threads_per_worker)
    assert option(command, "--nworkers") == str(jq.cores // cluster.threads_per_worker)
    assert option(command, "--local-directory") == jq.local_directory
    lifetime = parse_timedelta(option(command, "--lifetime"))
    stagger = parse_timedelta(option(command, "--lifetime-stagger"))
    assert lifetime + stagger <= walltime_seconds(jq.walltime) - 60


def test_pbs_recipe_job_script():
    cluster, script = job_script("pbs.yaml")
    jq = cluster.jobqueue
    pbs = directives(script, "#PBS")
    assert f"-l walltime={jq.walltime}" in pbs and f"-q {jq.queue}" in pbs and f"-A {jq.account}" in pbs
    (select,) = [d for d in pbs if d.startswith("-l select=")]
    assert f"ncpus={jq.cores}" in select.split(":")
    assert f"mem={math.ceil(parse_bytes(jq.memory) / 2**30)}GB" in select.split(":")  # PBS GB = GiB
    body = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert body[:-1] == jq.job_script_prologue
    command = worker(script)
    assert option(command, "--nthreads") == str(cluster.threads_per_worker)
    assert parse_timedelta(option(command, "--lifetime")) < walltime_seconds(jq.walltime)


@pytest.mark.parametrize("name", ["slurm.yaml", "pbs.yaml"])
def test_recipe_workers_run_the_python_their_prologue_activates(name):
    cluster, script = job_script(name)
    assert any(line.endswith("/bin/activate") for line in cluster.jobqueue.job_script_prologue)
    assert cluster.jobqueue.python is None
    assert worker(script)[0] == "python"  # found on PATH after the prologue, not this interpreter


def test_worker_python_an_explicit_one_wins_and_no_activation_keeps_this_one():
    def python(config: dict | None = None, **jobqueue) -> str | None:
        jq = {"cores": 2, "memory": "2GiB", "walltime": "01:00:00", **jobqueue}
        with dask.config.set(config or {}):
            return jobqueue_kwargs(ClusterSpec(kind="slurm", jobqueue=jq), "slurm").get("python")

    activate = ["source envs/geoseg/bin/activate"]
    assert python(job_script_prologue=activate) == "python"
    assert python(job_script_prologue=["conda activate geoseg"]) == "python"
    assert python(job_script_prologue=activate, python="/opt/py/bin/python3") == "/opt/py/bin/python3"
    assert python({"jobqueue.slurm.python": "python3.12"}, job_script_prologue=activate) is None
    assert python({"jobqueue.slurm.job-script-prologue": activate}) == "python"
    assert python(job_script_prologue=["module load cuda/12"]) is None  # dask-jobqueue: this one
    assert python() is None


def test_a_job_script_runs_its_worker_with_the_activated_environments_python(tmp_path):
    """Outside SLURM, #SBATCH lines are comments: bash runs the prologue, which activates an
    environment other than this process's, and the worker command, which must use it."""
    env = tmp_path / "env" / "bin"
    env.mkdir(parents=True)
    (env / "activate").write_text(f'export PATH="{env}:$PATH"\n')
    (env / "python").write_text(f'#!/bin/sh\nexport GEOSEG_WORKER_PYTHON=activated\n'
                                f'exec {shlex.quote(sys.executable)} "$@"\n')
    (env / "python").chmod(0o755)
    jq = {"cores": 1, "memory": "2GiB", "processes": 1, "walltime": "00:20:00", "interface": "lo",
          "dashboard_address": None, "local_directory": str(tmp_path),
          "job_script_prologue": [f"source {shlex.quote(str(env / 'activate'))}"]}
    with slurm_job_script_worker(jq, tmp_path) as client:
        marks = client.run(lambda: os.environ.get("GEOSEG_WORKER_PYTHON"))
    assert list(marks.values()) == ["activated"]
