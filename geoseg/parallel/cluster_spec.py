"""Where a job runs: the ``cluster`` section of job, batch and sweep specs.

``kind`` picks how :func:`geoseg.parallel.cluster.connect` gets its workers; ``jobqueue``,
``kubernetes`` and ``tls`` hold the settings of those kinds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from geoseg.core.spec import Section
from geoseg.errors import ClusterConfigError

# the most worker processes a local cluster may start per core (each about 250 MB idle)
LOCAL_WORKERS_PER_CORE = 4

ClusterKind = Literal["local", "threads", "address", "slurm", "pbs", "kubernetes"]
WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


def walltime_seconds(text: str) -> int:
    """Seconds in a batch-system time limit, ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    match = WALLTIME.match(text.strip())
    if match is None:
        raise ClusterConfigError("a time limit as HH:MM:SS or D-HH:MM:SS, e.g. 01:30:00")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class JobqueueSpec(Section):
    """Batch jobs of Dask workers (SLURM or PBS, through dask-jobqueue). Unset values come from
    dask's ``jobqueue.slurm.*`` / ``jobqueue.pbs.*`` configuration."""

    cores: int | None = Field(None, ge=1, description="Cores per batch job.")
    memory: str | None = Field(None, description="Memory per batch job, e.g. 64GiB.")
    processes: int | None = Field(None, ge=1, description="Worker processes per job "
                                  "(default cores / threads_per_worker).")
    walltime: str | None = Field(None, description="Job time limit, HH:MM:SS or D-HH:MM:SS.")
    queue: str | None = Field(None, description="SLURM partition or PBS queue.")
    account: str | None = Field(None, description="Account charged for the jobs.")
    interface: str | None = Field(None, description="Network interface of workers and scheduler, "
                                  "e.g. ib0.")
    job_extra_directives: list[str] | None = Field(None, description="More #SBATCH / #PBS lines.")
    job_script_prologue: list[str] | None = Field(None, description="Setup lines run before the "
                                                  "worker, e.g. source .venv/bin/activate.")
    python: str | None = Field(None, description="Python of the workers (default: `python` on "
                               "the PATH a prologue that activates an environment sets, else "
                               "this one).")
    local_directory: str | None = Field(None, description="Worker scratch space, e.g. $TMPDIR.")
    log_directory: str | None = Field(None, description="Where the jobs write their logs.")
    jobs: int | None = Field(None, ge=1, description="Fixed number of jobs (default: enough for "
                             "n_workers, else 1); retired workers' jobs are replaced.")
    minimum_jobs: int | None = Field(None, ge=0, description="Adaptive: fewest jobs.")
    maximum_jobs: int | None = Field(None, ge=1, description="Adaptive: most jobs.")
    lifetime_margin: str | None = Field(None, description="Time between the last worker's "
                                        "retirement and the walltime (default 5%, 1 to 10 min).")
    lifetime_stagger: str | None = Field(None, description="Spread of worker retirements "
                                         "(default 5% of the walltime, at most 5 min).")
    dashboard_address: str | None = Field(":8787", description="Scheduler dashboard; null: none.")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str | None) -> str | None:
        if value is not None:
            walltime_seconds(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        from dask.utils import parse_bytes

        if value is not None:
            try:
                parse_bytes(value)
            except ValueError:
                raise ValueError("an amount of memory such as 64GiB or 16GB") from None
        return value

    @field_validator("lifetime_margin", "lifetime_stagger")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        from dask.utils import parse_timedelta

        if value is not None:
            try:
                parse_timedelta(value)
            except (ValueError, KeyError):
                raise ValueError("a duration such as 5m or 300s") from None
        return value

    @model_validator(mode="after")
    def _one_scaling(self) -> JobqueueSpec:
        if self.jobs is not None and (self.minimum_jobs, self.maximum_jobs) != (None, None):
            raise ValueError("either jobs (a fixed number) or minimum_jobs/maximum_jobs (adaptive)")
        if self.minimum_jobs is not None and self.maximum_jobs is None:
            raise ValueError("maximum_jobs together with minimum_jobs")
        if self.maximum_jobs is not None and (self.minimum_jobs or 0) > self.maximum_jobs:
            raise ValueError("minimum_jobs <= maximum_jobs")
        return self


class TlsSpec(Section):
    """Certificates for a ``tls://`` scheduler (distributed's ``Security``); with them the client
    requires encryption, so a plain ``tcp://`` address is refused."""

    ca_file: str = Field(description="CA certificate (PEM) that signed the scheduler's and workers'.")
    cert: str = Field(description="This client's certificate (PEM), signed by that CA.")
    key: str | None = Field(None, description="Its private key (PEM), unless cert holds it.")

    @field_validator("ca_file", "cert", "key")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("the path of an existing PEM file (relative to the spec file's folder)")
        return value


class KubernetesSpec(Section):
    """A DaskCluster made by the Dask Kubernetes operator for the run, or an existing one."""

    name: str = Field("geoseg", description="Name of the DaskCluster resource.")
    namespace: str | None = Field(None, description="Namespace (default: the current context's).")
    image: str = Field("geoseg:latest", description="Image of scheduler and workers "
                       "(deploy/Dockerfile).")
    existing: bool = Field(False, description="Connect to the running DaskCluster `name` through its "
                           "scheduler service (from inside Kubernetes) instead of creating one.")
    resources: dict[Literal["requests", "limits"], dict[str, str | int | float]] = Field(
        default_factory=dict, description="Per container, e.g. {limits: {cpu: 4, memory: 16Gi}}.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of every container "
                                "(recorded in provenance: no credentials here, use secrets).")
    secrets: list[str] = Field(default_factory=list, description="Kubernetes Secrets whose keys "
                               "become environment variables (credentials).")


class ClusterSpec(Section):
    """Where the job runs. ``kind`` defaults to ``address`` when a scheduler is given (here or in
    ``DASK_SCHEDULER_ADDRESS``), else ``local``; ``jobqueue`` and ``kubernetes`` hold the settings
    of those kinds (a spec may carry both, ``--cluster`` picks one)."""

    kind: ClusterKind | None = Field(
        None, description="local (worker processes; small jobs on threads), threads (this process), "
                          "address, slurm, pbs or kubernetes.")
    scheduler: str | None = Field(None, description="Address of a running scheduler; none starts a local cluster.")
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(
        None, ge=1, le=1024, description="Threads per worker process; default 1 on CPU workers, "
                                "GEOSEG_GPU_THREADS (4) on a local cluster's GPU workers.")
    jobqueue: JobqueueSpec = Field(JobqueueSpec(), description="Settings of kinds slurm and pbs.")
    kubernetes: KubernetesSpec = Field(KubernetesSpec(), description="Settings of kind kubernetes.")
    tls: TlsSpec | None = Field(None, description="Certificates for a tls:// scheduler (kind address).")

    @field_validator("n_workers")
    @classmethod
    def _local_workers_fit(cls, n_workers: int | None, info: ValidationInfo) -> int | None:
        """A local cluster's worker processes are started on this machine: at most
        :data:`LOCAL_WORKERS_PER_CORE` per core (a typo of 100 would take 25 GB idle)."""
        cores = os.cpu_count() or 1
        local = info.data.get("kind") in (None, "local") and info.data.get("scheduler") is None
        if local and n_workers is not None and n_workers > LOCAL_WORKERS_PER_CORE * cores:
            raise ValueError(
                f"at most {LOCAL_WORKERS_PER_CORE * cores} worker processes for a local cluster "
                f"on this machine ({LOCAL_WORKERS_PER_CORE} per core, {cores} cores): each takes "
                "about 250 MB before any work. "
                "Leave n_workers out (one per core), or run on a cluster (kind slurm, pbs, "
                "kubernetes, or a scheduler address)")
        return n_workers

    @model_validator(mode="after")
    def _scheduler_means_address(self) -> ClusterSpec:
        if self.scheduler is not None and self.kind not in (None, "address"):
            raise ValueError("scheduler only with kind address (or no kind), "
                             f"not with kind {self.kind}")
        if self.tls is not None and self.kind not in (None, "address"):
            raise ValueError(f"tls only with kind address (or no kind), not with kind {self.kind}")
        if self.tls is not None and self.scheduler and not self.scheduler.startswith("tls://"):
            raise ValueError(f"a tls:// scheduler address with tls, not {self.scheduler!r}: "
                             "encryption is required, plain tcp:// is refused")
        return self
