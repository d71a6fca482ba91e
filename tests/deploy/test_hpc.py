"""deploy/hpc: the SLURM and PBS recipes are valid job specs, and dask-jobqueue builds from them
job scripts whose directives, setup lines and worker command follow what the recipe says."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from dask.utils import parse_bytes, parse_timedelta

from geoseg.jobs.spec import load_job
from geoseg.parallel.cluster import jobqueue_cluster
from geoseg.parallel.cluster_spec import walltime_seconds

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
