"""Where a job runs: the ``cluster`` section of job, batch and sweep specs.

``kind`` picks how :func:`geoseg.parallel.cluster.connect` gets its workers; ``jobqueue``,
``kubernetes`` and ``tls`` hold the settings of those kinds.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from geoseg.core.spec import Section
from geoseg.errors import ClusterConfigError

# the most worker processes a local cluster may start per core (each about 250 MB idle)
LOCAL_WORKERS_PER_CORE = 4
# bounds past which a value is a typo, not a cluster: cores (or Kubernetes cpu) of one job or pod,
# its memory (1 PiB), and how many jobs, worker processes or pods a run asks for
MAX_CORES = 4096
MAX_MEMORY = 2**50
MAX_WORKERS = 10_000
MIN_LIFETIME = 60  # seconds a worker in a batch job lives at least

ClusterKind = Literal["local", "threads", "address", "slurm", "pbs", "kubernetes"]
WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


def walltime_seconds(text: str) -> int:
    """Seconds in a batch-system time limit, ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    match = WALLTIME.match(text.strip())
    if match is None:
        raise ClusterConfigError("a time limit as HH:MM:SS or D-HH:MM:SS, e.g. 01:30:00")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def hms(seconds: float) -> str:
    """``seconds`` as ``HH:MM:SS`` (hours past 23 included)."""
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def worker_lifetime(walltime: float, *, margin: float | None = None,
                    stagger: float | None = None) -> tuple[int, int]:
    """``(lifetime, stagger)`` in seconds for workers in jobs of ``walltime`` seconds.

    Each worker retires at ``lifetime`` +- ``stagger``, so the last one retires ``margin``
    before the batch system would kill its job, the first after a minute or more. Defaults: stagger 5% of the walltime (at most
    5 min), margin 5% (1 to 10 min) — for one hour 54 min +- 3 min. A walltime too short for
    that raises :class:`ClusterConfigError` saying what is expected (a spec's validation
    reports it under its key).
    """
    stagger = min(300.0, 0.05 * walltime) if stagger is None else stagger
    margin = max(60.0, min(600.0, 0.05 * walltime)) if margin is None else margin
    lifetime = walltime - margin - stagger
    if lifetime - stagger < MIN_LIFETIME:
        raise ClusterConfigError(
            f"a walltime longer than {hms(walltime)}, which is too short to retire workers "
            f"{hms(margin)} before it with a stagger of {hms(stagger)} and let each live "
            f"{MIN_LIFETIME} s (or a smaller lifetime_margin / lifetime_stagger)")
    return int(lifetime), int(stagger)


def job_lifetime(walltime: str, margin: str | None, stagger: str | None) -> tuple[int, int]:
    """:func:`worker_lifetime` of a walltime, lifetime_margin and lifetime_stagger as a spec
    gives them (``HH:MM:SS``, durations such as ``5m``)."""
    from dask.utils import parse_timedelta

    return worker_lifetime(walltime_seconds(walltime),
                           margin=parse_timedelta(margin) if margin else None,
                           stagger=parse_timedelta(stagger) if stagger else None)


def memory_bytes(text: str) -> int:
    """Bytes in an amount of memory such as ``64GiB``: more than none, at most :data:`MAX_MEMORY`."""
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(text)
    except (ValueError, OverflowError):
        size = None
    if size is None or not 0 < size <= MAX_MEMORY:
        raise ClusterConfigError("an amount of memory above 0 and at most 1PiB, such as 64GiB "
                                 "or 16GB")
    return size


# a Kubernetes quantity: a number and a binary or decimal suffix (a CPU's also in millicores)
QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
SUFFIXES = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
RESOURCE_FORMS = {"cpu": "a number of cores above 0 and at most 4096, such as 4, 0.5 or 500m",
                  "memory": "an amount of memory above 0 and at most 1Pi, such as 16Gi, 512Mi or 2G"}
RESOURCE_LIMITS = {"cpu": MAX_CORES, "memory": MAX_MEMORY}


def kubernetes_quantity(key: str, value: str | float) -> float:
    """A Kubernetes resource quantity (cores for ``cpu``, bytes for ``memory``): above 0, at
    most :data:`MAX_CORES` cores or :data:`MAX_MEMORY` bytes; millicores only for ``cpu``."""
    match = QUANTITY.match(str(value))
    amount = float(match[1]) * SUFFIXES[match[2] or ""] if match else 0.0
    allowed = key == "cpu" or not match or match[2] != "m"
    if not (allowed and 0 < amount <= RESOURCE_LIMITS.get(key, math.inf)):
        raise ClusterConfigError(RESOURCE_FORMS.get(key, "a quantity above 0 such as 1, 2k or 8Gi"))
    return amount


def _quantity_problem(where: str, key: str, value: str | float) -> str:
    """What is wrong with a resource quantity, in words naming ``where``; empty if nothing."""
    try:
        kubernetes_quantity(key, value)
    except ClusterConfigError as exc:
        return f"{where}: {exc} (received {value!r})"
    return ""


def _at_most(limit: int, what: str) -> AfterValidator:
    """A validator refusing numbers above ``limit``, saying so in ``what`` terms."""

    def check(value: int) -> int:
        if value > limit:
            raise ClusterConfigError(f"at most {limit} {what}")
        return value

    return AfterValidator(check)


Cores = Annotated[int, Field(ge=1), _at_most(MAX_CORES, "cores per job")]
Processes = Annotated[int, Field(ge=1), _at_most(MAX_CORES, "worker processes per job")]
Count = Annotated[int, _at_most(MAX_WORKERS, "(a larger number is most likely a typo)")]


class JobqueueSpec(Section):
    """Batch jobs of Dask workers (SLURM or PBS, through dask-jobqueue). Unset values come from
    dask's ``jobqueue.slurm.*`` / ``jobqueue.pbs.*`` configuration."""

    cores: Cores | None = Field(None, description=f"Cores per batch job (at most {MAX_CORES}).")
    memory: str | None = Field(None, description="Memory per batch job, e.g. 64GiB.")
    processes: Processes | None = Field(None, description="Worker processes per job "
                                        "(default cores / threads_per_worker).")
    # before walltime, whose check reads them
    lifetime_margin: str | None = Field(None, description="Time between the last worker's "
                                        "retirement and the walltime (default 5%, 1 to 10 min).")
    lifetime_stagger: str | None = Field(None, description="Spread of worker retirements "
                                         "(default 5% of the walltime, at most 5 min).")
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
    jobs: Count | None = Field(None, ge=1, description="Fixed number of jobs (default: enough for "
                               f"n_workers, else 1; at most {MAX_WORKERS}); retired workers' jobs "
                               "are replaced.")
    minimum_jobs: Count | None = Field(None, ge=0, description="Adaptive: fewest jobs.")
    maximum_jobs: Count | None = Field(None, ge=1, description="Adaptive: most jobs "
                                       f"(at most {MAX_WORKERS}).")
    dashboard_address: str | None = Field(":8787", description="Scheduler dashboard; null: none.")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A time limit long enough to retire the workers before it (with the margin and
        stagger given, unless one of them is itself wrong)."""
        durations = ("lifetime_margin", "lifetime_stagger")
        if value is not None and all(key in info.data for key in durations):
            job_lifetime(value, *(info.data[key] for key in durations))
        elif value is not None:  # a duration refused: its own problem, not the walltime's
            walltime_seconds(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            memory_bytes(value)
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

    @field_validator("resources")
    @classmethod
    def _quantities(cls, resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        problems = [_quantity_problem(f"{part}.{key}", key, value)
                    for part, values in resources.items() for key, value in values.items()]
        if any(problems):
            raise ValueError("; ".join(problem for problem in problems if problem))
        return resources


class ClusterSpec(Section):
    """Where the job runs. ``kind`` defaults to ``address`` when a scheduler is given (here or in
    ``DASK_SCHEDULER_ADDRESS``), else ``local``; ``jobqueue`` and ``kubernetes`` hold the settings
    of those kinds (a spec may carry both, ``--cluster`` picks one)."""

    kind: ClusterKind | None = Field(
        None, description="local (worker processes; small jobs on threads), threads (this process), "
                          "address, slurm, pbs or kubernetes.")
    scheduler: str | None = Field(None, description="Address of a running scheduler; none starts a local cluster.")
    n_workers: Count | None = Field(None, ge=1, description="Worker processes (kind kubernetes: "
                                    f"worker pods); at most {MAX_WORKERS}, on a local cluster "
                                    f"{LOCAL_WORKERS_PER_CORE} per core.")
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
