"""Where a job runs: a local cluster, a running scheduler, SLURM/PBS batch jobs or a Kubernetes
DaskCluster. One function per kind; each yields a client and cleans up what it started.
A local cluster with GPUs runs one worker process per GPU, pinned by ``CUDA_VISIBLE_DEVICES``
(as dask-cuda's ``LocalCUDACluster`` does), its threads reading the next regions meanwhile.

The kind comes from ``cluster.kind`` in the job spec or ``geoseg run --cluster VALUE`` (a kind
name or a scheduler address). dask-jobqueue and dask-kubernetes are optional extras, imported
only when their kind is used.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import dask
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster, Security
from distributed.client import _current_client  # what Client.as_current sets, less its config
from distributed.comm import connect as comm_connect
from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin
from pydantic import ValidationError

from geoseg import config, logs
from geoseg.core import redact
from geoseg.core.interrupts import children_spared_ctrl_c
from geoseg.core.spec import format_errors
from geoseg.core.urls import public_url
from geoseg.errors import ClusterConfigError, MissingExtraError
from geoseg.parallel.cluster_spec import (
    ClusterSpec,
    JobqueueSpec,
    KubernetesSpec,
    hms,
    job_lifetime,
    memory_bytes,
    walltime_seconds,
)
from geoseg.parallel.lost import scheduler_loss_said
from geoseg.parallel.plugins import check_geoseg_on_workers

NAMED_KINDS = ("local", "threads", "slurm", "pbs", "kubernetes")
ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$|^[\w.-]+:\d+$")
ACTIVATE = re.compile(r"\bactivate\b")  # a prologue line that activates an environment
POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_THREADS = 1  # threads per CPU worker when the spec gives none
CLOSE_TIMEOUT = 10  # seconds to close a cluster interrupted while it starts
HANDSHAKE_GRACE = 5  # seconds past its own deadline a scheduler handshake is given up at
INTERRUPTED_CLOSE = 3  # seconds to close an in-process cluster whose run was interrupted
EXTRAS = {"dask_jobqueue": ("dask-jobqueue", "hpc"),
          "dask_kubernetes.operator": ("dask-kubernetes", "kubernetes")}


@dataclass
class TorchThreads(WorkerPlugin):
    """Pin torch's intra-op threads on each worker, so tasks on one machine don't oversubscribe it."""

    threads: int
    name: str = "geoseg-torch-threads"

    def setup(self, worker: object) -> None:
        import torch

        torch.set_num_threads(self.threads)


@dataclass
class QuietTaskErrors(WorkerPlugin):
    """Drop the worker's own records of failed tasks ("Compute Failed" and their tracebacks):
    the command line reports each failure once (:func:`geoseg.logs.quiet_task_errors`)."""

    name: str = "geoseg-quiet-task-errors"

    def setup(self, worker: object) -> None:
        logs.quiet_task_errors()


def scheduler_address(scheduler: str | None) -> str | None:
    """The explicit address, else ``DASK_SCHEDULER_ADDRESS``, else ``None`` (start a local cluster)."""
    return _remember_secrets(scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None)


def _remember_secrets(address: str | None) -> str | None:
    """``address``, its user info and query values (``tcp://user:password@host:8786``) hidden from
    now on in every message and log record (:func:`geoseg.core.redact.scrub`): an address from
    the command line or the environment, whose secrets no spec loader has remembered."""
    if address:
        redact.remember_secrets(redact.url_secrets(address))
    return address


def with_cluster(spec: ClusterSpec, value: str | None) -> ClusterSpec:
    """``spec`` with ``--cluster VALUE`` applied: a kind name (local, slurm, pbs, kubernetes) or
    a scheduler address (tcp://host:8786, tls://..., host:port). ``None`` changes nothing."""
    if value is None:
        return spec
    if value in NAMED_KINDS:
        return _revalidated(spec, value, {"kind": value, "scheduler": None})
    if ADDRESS.match(value):  # kind address: only cluster.tls can disagree, checked on connecting
        return spec.model_copy(update={"kind": "address", "scheduler": _remember_secrets(value)})
    raise ClusterConfigError(
        f"--cluster: received {value!r}; expected one of {', '.join(NAMED_KINDS)} or a scheduler "
        "address such as tcp://host:8786 or tls://host:8786.")


def _revalidated(spec: ClusterSpec, value: str, update: dict[str, Any]) -> ClusterSpec:
    """``spec`` with ``update`` (what ``--cluster VALUE`` changes), checked as a spec's cluster
    section is: ``--cluster local`` on ``n_workers: 400`` meant for SLURM is refused as that
    section would be. Its sections (jobqueue, kubernetes, tls) were checked when it was."""
    fields = {name: getattr(spec, name) for name in spec.model_fields_set}
    try:
        return ClusterSpec.model_validate({**fields, **update})
    except ValidationError as exc:
        raise ClusterConfigError(format_errors(exc, f"--cluster {value} with the spec's cluster "
                                               "section", ClusterSpec)) from None


def cluster_kind(spec: ClusterSpec) -> str:
    """The kind asked for; without one, ``address`` when a scheduler is known, else ``local``."""
    return spec.kind or ("address" if scheduler_address(spec.scheduler) else "local")


def for_job_size(spec: ClusterSpec, pixels: int, tasks: int) -> ClusterSpec:
    """``spec``, or kind ``threads`` for a small job on a local CPU cluster: at most
    ``GEOSEG_INPROCESS_PIXELS`` pixels, no layout asked for (n_workers, threads_per_worker) and
    no GPU. Starting worker processes and loading the model in each would cost more than the job.
    One thread per task (at most one per core); torch's threads share the rest."""
    small = (cluster_kind(spec) == "local" and spec.n_workers is None
             and spec.threads_per_worker is None and pixels <= config.inprocess_pixels())
    if not small or config.gpu_ids():
        return spec
    threads = max(1, min(os.cpu_count() or 1, tasks))
    logs.log.info("small job: %.1f Mpx, %d task(s), at most GEOSEG_INPROCESS_PIXELS=%s: running on "
                  "%d thread(s) in this process, no worker processes", pixels / 1e6, tasks,
                  config.get("GEOSEG_INPROCESS_PIXELS"), threads)
    return spec.model_copy(update={"kind": "threads", "threads_per_worker": threads})


@contextmanager
def connect(cluster: ClusterSpec | str | None = None, *, n_workers: int | None = None,
            threads_per_worker: int | None = None) -> Iterator[Client]:
    """A client on the cluster ``cluster`` describes: a :class:`ClusterSpec`, or a ``--cluster``
    value (kind name or address; ``None``: ``DASK_SCHEDULER_ADDRESS``, else a local cluster).
    ``threads_per_worker=None``: 1 per CPU worker, ``GEOSEG_GPU_THREADS`` per local GPU worker."""
    if cluster is None or isinstance(cluster, str):
        base = ClusterSpec(n_workers=n_workers, threads_per_worker=threads_per_worker)
        cluster = with_cluster(base, cluster)
    with _CONNECT[cluster_kind(cluster)](cluster) as client, scheduler_loss_said(client):
        yield client




@dataclass(frozen=True)
class WorkerLayout:
    """One local worker process: its Dask threads, the environment it starts with (a GPU worker's
    ``CUDA_VISIBLE_DEVICES``) and the intra-op threads torch may use in each of its tasks."""

    nthreads: int
    torch_threads: int
    env: dict[str, str] = field(default_factory=dict)


def local_layout(cores: int, gpu_ids: list[str], n_workers: int | None = None,
                 threads_per_worker: int | None = None, *, gpu_threads: int = 4) -> list[WorkerLayout]:
    """The worker processes of a local cluster on ``cores`` cores and the GPUs ``gpu_ids``.

    Without GPUs: ``cores // threads`` processes of ``threads`` threads (default 1), torch
    threads sharing the cores. With GPUs: one process per GPU (``n_workers`` given: that many, the
    GPUs taken in turn), each seeing only its GPU and running ``gpu_threads`` threads that read
    and decode while the GPU computes, with one torch thread each. Explicit values win.
    """
    if not gpu_ids:
        threads = threads_per_worker or DEFAULT_THREADS
        workers = n_workers or max(1, cores // threads)
        return [WorkerLayout(threads, max(1, cores // (workers * threads)))] * workers
    threads = threads_per_worker or gpu_threads
    # each sees its GPU alone, as cuda:0: a GEOSEG_DEVICE=cuda:N of this process means no GPU there
    return [WorkerLayout(threads, 1, {"CUDA_VISIBLE_DEVICES": gpu_ids[i % len(gpu_ids)],
                                      "GEOSEG_DEVICE": "cuda"})
            for i in range(n_workers or len(gpu_ids))]


LOCAL_WORKER = "geoseg.parallel.local_worker"  # preloaded by each local worker process


class PinnedLocalCluster(LocalCluster):
    """A ``LocalCluster`` of Nanny worker processes named 0, 1, ..., one per layout, each with
    that layout's threads and environment (set in the process before it imports torch)."""

    def __init__(self, layouts: list[WorkerLayout], **kwargs: Any) -> None:
        self.layouts = layouts
        super().__init__(n_workers=0, threads_per_worker=layouts[0].nthreads, processes=True,
                         memory_limit=1 / len(layouts), **kwargs)  # a share of memory each
        self.scale(len(layouts))

    def new_worker_spec(self) -> dict[int, dict[str, Any]]:
        free = sorted(set(range(len(self.layouts))) - set(self.worker_spec))
        if not free:
            raise ClusterConfigError(
                f"local cluster: received a request for worker {len(self.worker_spec) + 1}; "
                f"expected at most {len(self.layouts)}, one per layout; start a new cluster with "
                "more n_workers instead of scaling this one.")
        spec = copy.deepcopy(self.new_spec)
        layout = self.layouts[free[0]]
        spec["options"].update(nthreads=layout.nthreads, env=dict(layout.env),
                               preload=[*(spec["options"].get("preload") or ()), LOCAL_WORKER])
        return {free[0]: spec}


@contextmanager
def _local(spec: ClusterSpec) -> Iterator[Client]:
    """Worker processes on this machine: one per GPU, else processes x threads on its cores."""
    layouts = local_layout(os.cpu_count() or 1, config.gpu_ids(), spec.n_workers,
                           spec.threads_per_worker, gpu_threads=config.gpu_threads())
    from importlib.util import find_spec

    dashboard = {"dashboard": find_spec("bokeh") is not None}  # if bokeh can serve one
    logs.quiet_cluster_shutdown()  # the nannies live in this process
    with closed_if_interrupted(), _spawned(layouts), \
            _started(layouts, dashboard) as cluster, \
            Client(cluster) as client:
        try:
            client.wait_for_workers(len(layouts))
            threads = config.torch_threads() or max(layout.torch_threads for layout in layouts)
            client.register_plugin(TorchThreads(threads))  # GEOSEG_TORCH_THREADS, when set, wins
            if logs.task_errors_quiet():  # these workers write to this terminal
                client.register_plugin(QuietTaskErrors())
            yield client
        except KeyboardInterrupt:  # a plugin's broadcast may go on while the workers close
            logs.quiet_interrupted_broadcasts()
            raise


def _started(layouts: list[WorkerLayout], dashboard: dict[str, bool]) -> PinnedLocalCluster:
    """The local cluster, its event loop's thread (and so its worker processes) spared the
    Ctrl-C a terminal sends the whole process group; the scheduler's HTTP server on a free port,
    not 8787."""
    with children_spared_ctrl_c():
        return PinnedLocalCluster(layouts, dashboard_address=":0", scheduler_kwargs=dashboard)


@contextmanager
def _spawned(layouts: list[WorkerLayout]) -> Iterator[None]:
    """GPU workers' processes spawned while the cluster lives (its nannies restart them too),
    whatever ``distributed.worker.multiprocessing-method`` says: CUDA cannot run in a process
    forked from one that initialised it (a notebook, a client that loaded a model there)."""
    if not any("CUDA_VISIBLE_DEVICES" in layout.env for layout in layouts):
        yield
        return
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        yield


@contextmanager
def closed_if_interrupted() -> Iterator[None]:
    """Close, quietly, the clusters started in the block when Ctrl-C or SIGTERM interrupts it.

    A signal landing while a cluster starts interrupts its constructor: the half-started cluster
    is never entered, so nothing closes it but distributed's exit-time ``close_clusters``, which
    then fails on the start the signal cancelled (``UnboundLocalError`` and a traceback) while
    its workers log that they lost the scheduler. Closed here, workers first, it is gone before
    the command says it was interrupted."""
    from distributed.deploy.spec import SpecCluster

    before = set(SpecCluster._instances)
    try:
        yield
    except KeyboardInterrupt:
        for cluster in set(SpecCluster._instances) - before:
            _close_quietly(cluster)
        raise


def _close_quietly(cluster: Any, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close ``cluster`` (one a signal may have left half started) whatever state it is in,
    waiting at most ``timeout`` seconds; mark it closed, so that distributed's exit-time clean-up
    leaves it alone. Its background start of workers, cut short, is not reported as an error."""
    logs.quiet_cancelled_start(cluster)
    try:
        cluster.close(timeout=timeout)
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the interrupt is what matters
        logs.log.debug("closing a cluster interrupted while starting failed", exc_info=True)
    finally:
        cluster.status = Status.closed


@contextmanager
def _threads(spec: ClusterSpec) -> Iterator[Client]:
    """One worker in this process, its threads sharing the cores (torch threads too): no process
    start, no model copy per process. A small job's cluster; also ``--cluster threads``."""
    cores = os.cpu_count() or 1
    threads = spec.threads_per_worker or cores
    logs.quiet_cluster_shutdown()  # its scheduler and worker live in this process
    with closed_if_interrupted():
        cluster = LocalCluster(n_workers=1, threads_per_worker=threads, processes=False,
                               dashboard_address=":0")
    try:
        with Client(cluster) as client:
            _pin_torch_threads(client, config.torch_threads() or max(1, cores // threads))
            yield client
    except KeyboardInterrupt:
        # its tasks are abandoned: waiting for them (distributed waits 30 s) would only delay the
        # clean-up, forever for a task blocked in a read no signal reaches (a FIFO, a hung mount)
        _close_quietly(cluster, INTERRUPTED_CLOSE)
        raise
    finally:
        if cluster.status != Status.closed:  # closed above: its loop may still be busy closing
            cluster.close()


@contextmanager
def _address(spec: ClusterSpec) -> Iterator[Client]:
    """A running scheduler: ``cluster.scheduler`` / ``--cluster ADDRESS``, else ``DASK_SCHEDULER_ADDRESS``."""
    address = scheduler_address(spec.scheduler)
    if not address:
        raise ClusterConfigError(
            "cluster kind address: received no scheduler address (cluster.scheduler, --cluster and "
            "DASK_SCHEDULER_ADDRESS are all unset); give one, e.g. --cluster tcp://host:8786.")
    with connected(address, tls_security(spec, address)) as client:
        _await_a_worker(client, address)
        _pin_torch_threads(client, config.torch_threads())
        yield client


def _await_a_worker(client: Client, address: str) -> None:
    """Wait (at most ``GEOSEG_WORKER_WAIT`` seconds) for the scheduler to have a worker: a
    scheduler without any would hold the job's tasks forever."""
    wait = config.worker_wait()
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        raise ClusterConfigError(
            f"The Dask scheduler at {public_url(address)} has no worker (waited {wait:g} s, "
            "GEOSEG_WORKER_WAIT). Start workers with `dask worker ADDRESS` (deploy/README.md), "
            "wait for a scaled-down cluster to scale up and raise GEOSEG_WORKER_WAIT, or drop "
            "--cluster to run on a local cluster.") from None


def tls_security(spec: ClusterSpec, address: str) -> Security | None:
    """distributed's ``Security`` from ``cluster.tls``, requiring encryption (a ``tcp://`` address
    is refused); ``None`` without it, when dask's own ``distributed.comm.tls.*`` configuration
    (``DASK_DISTRIBUTED__COMM__TLS__*`` variables) applies as it would to any client."""
    if spec.tls is None:
        if address.startswith("tls://") and not dask.config.get("distributed.comm.tls.ca-file", None):
            raise ClusterConfigError(
                f"The scheduler at {public_url(address)} speaks TLS, but no certificates were "
                "given; expected cluster.tls (ca_file, cert, key) in the job spec, or dask's "
                "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, __CLIENT__CERT and __CLIENT__KEY variables.")
        return None
    if not address.startswith("tls://"):
        raise ClusterConfigError(
            f"cluster.tls is set, so encryption is required, but the scheduler address is "
            f"{public_url(address)}; expected its tls:// address (tls://host:8786). Plain "
            "tcp:// is refused: nothing would be encrypted.")
    return Security(tls_ca_file=spec.tls.ca_file, tls_client_cert=spec.tls.cert,
                    tls_client_key=spec.tls.key, require_encryption=True)


@contextmanager
def current(client: Client) -> Iterator[None]:
    """``client`` as the one the dask computations of this thread go to (fitting methods, the
    stages), where dask's ``scheduler`` setting names none: a client the caller gives need not
    be dask's default, and the default may be another cluster's, or none (then they ran in
    this process). Only this thread's context changes: ``Client.as_current`` would also set
    dask's scheduler for the whole process, and runs in two threads would interleave its
    restoring."""
    token = _current_client.set(client)
    try:
        yield
    finally:
        _current_client.reset(token)


@contextmanager
def connected(address: str, security: Security | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``address`` (over TLS with ``security``); one that cannot be
    reached (refused, timed out, a bad address, a TLS handshake refused) raises
    :class:`ClusterConfigError` naming it."""
    _remember_secrets(address)  # distributed's errors quote it without its scheme: no URL to scrub
    failure = _handshake(address, security)
    if failure is not None:
        raise _unreachable(address, failure)
    try:
        client = Client(address, **({"security": security} if security is not None else {}))
    except (OSError, TimeoutError, ValueError, MemoryError) as exc:
        raise _unreachable(address, exc) from None
    with client:
        yield client


def _unreachable(address: str, exc: BaseException) -> ClusterConfigError:
    """The error for a scheduler address that did not answer as a Dask scheduler."""
    return ClusterConfigError(
        f"Cannot reach the Dask scheduler at {public_url(address)} "
        f"({type(exc).__name__}: {redact.scrub(str(exc))}). Check that it is running and that "
        "the address and port are right: the scheduler's own port (8786 by default), not its "
        "dashboard's (8787 by default, which speaks HTTP); dask scheduler prints both, and one "
        "started with TLS takes only its tls:// address and certificates, cluster.tls; or "
        f"{_drop(address)} to start a local cluster.")


def _handshake(address: str, security: Security | None) -> BaseException | None:
    """Why ``address`` is no Dask scheduler to connect to (``None``: it is one), found by opening
    and closing one connection with Dask's handshake within dask's
    ``distributed.comm.timeouts.connect`` (the deadline ``Client`` is given). A port that is not
    a scheduler's (an HTTP server, the dashboard's) would otherwise hold ``Client`` in its
    handshake for good, or have it read "HTTP/1.1" as the length of a message (a MemoryError).
    Run on a thread of its own, whatever event loop the caller runs."""
    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
    args = (security or Security()).get_connection_args("client")

    async def shake() -> None:
        comm = await asyncio.wait_for(comm_connect(address, timeout=timeout, **args), timeout)
        await comm.close()

    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            asyncio.run(shake())
        except TimeoutError:
            failure.append(silent)
        except Exception as exc:  # noqa: BLE001 - whatever the far end made of it
            failure.append(exc)

    silent = TimeoutError(f"no answer in Dask's protocol within {timeout:g} s")
    thread = threading.Thread(target=attempt, name="geoseg-scheduler-handshake", daemon=True)
    thread.start()
    thread.join(timeout + HANDSHAKE_GRACE)
    if thread.is_alive():
        return silent
    if not failure:
        return None
    if isinstance(failure[0], (OSError, TimeoutError, ValueError)):
        return failure[0]
    return OSError(f"the server there does not speak Dask's protocol ({type(failure[0]).__name__})")


def _drop(address: str) -> str:
    """What to leave out to start a local cluster instead of reaching ``address``: the
    environment's ``DASK_SCHEDULER_ADDRESS`` where it came from there."""
    if address == os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return ("unset DASK_SCHEDULER_ADDRESS (it names this scheduler whatever the spec says) "
                "and drop --cluster / cluster.scheduler")
    return "drop --cluster / cluster.scheduler"


@contextmanager
def _jobqueue(spec: ClusterSpec, *, kind: str) -> Iterator[Client]:
    """Workers in SLURM or PBS batch jobs, kept at ``jobs`` (or adapting between minimum_jobs and
    maximum_jobs); a worker that retires before its walltime has its job replaced."""
    kwargs = jobqueue_kwargs(spec, kind)
    with _jobqueue_class(kind)(**kwargs) as cluster:
        low, high = job_range(spec.jobqueue, spec.n_workers, kwargs["processes"])
        cluster.adapt(minimum_jobs=low, maximum_jobs=high)
        with Client(cluster) as client:
            _pin_torch_threads(client, config.torch_threads() or 1)  # one per Dask thread
            yield client


@contextmanager
def _kubernetes(spec: ClusterSpec) -> Iterator[Client]:
    """A DaskCluster made by the Dask operator for this run (deleted afterwards), or, with
    ``existing: true``, the running DaskCluster ``name`` through its scheduler service."""
    settings = spec.kubernetes
    if settings.existing:
        with connected(kubernetes_scheduler_address(settings)) as client:
            _pin_torch_threads(client, config.torch_threads())
            yield client
        return
    operator = _optional("dask_kubernetes.operator", "kubernetes")
    check_kubernetes_access()
    with operator.KubeCluster(custom_cluster_spec=kubernetes_cluster_spec(spec),
                              namespace=settings.namespace, quiet=True) as cluster, \
            Client(cluster) as client:
        _pin_torch_threads(client, config.torch_threads())
        yield client


_CONNECT: dict[str, Callable[[ClusterSpec], AbstractContextManager[Client]]] = {
    "local": _local, "threads": _threads, "address": _address, "kubernetes": _kubernetes,
    "slurm": partial(_jobqueue, kind="slurm"), "pbs": partial(_jobqueue, kind="pbs"),
}


def _pin_torch_threads(client: Client, threads: int) -> None:
    """Pin the workers' torch threads (``GEOSEG_TORCH_THREADS``), once they are known to run
    geoseg: the plugin is pickled by reference to this module, and a worker without geoseg
    would refuse it with a bare ``ModuleNotFoundError`` naming no worker."""
    if threads > 0:
        check_geoseg_on_workers(client)
        client.register_plugin(TorchThreads(threads))


# --- SLURM and PBS (dask-jobqueue) ---------------------------------------------------------------


def jobqueue_cluster(spec: ClusterSpec, kind: str) -> Any:
    """dask-jobqueue's ``SLURMCluster`` or ``PBSCluster`` for ``spec``, its scheduler started here
    and no job submitted yet (``.job_script()`` shows what each job will run)."""
    return _jobqueue_class(kind)(**jobqueue_kwargs(spec, kind))


def _jobqueue_class(kind: str) -> Any:
    jobqueue = _optional("dask_jobqueue", kind)
    return {"slurm": jobqueue.SLURMCluster, "pbs": jobqueue.PBSCluster}[kind]


def jobqueue_kwargs(spec: ClusterSpec, kind: str) -> dict[str, Any]:
    """Keyword arguments of ``SLURMCluster`` / ``PBSCluster``: the spec's values, else dask's
    ``jobqueue.<kind>.*`` config, plus worker lifetimes that retire every worker before the
    walltime (``--lifetime``, ``--lifetime-stagger``)."""

    _optional("dask_jobqueue", kind)  # registers the jobqueue.* config defaults
    jq = spec.jobqueue
    cores = _jobqueue_setting(jq, kind, "cores")
    memory = _checked_setting(jq, kind, "memory", memory_bytes)
    walltime = _checked_setting(jq, kind, "walltime", walltime_seconds)
    processes = jq.processes or max(1, cores // (spec.threads_per_worker or DEFAULT_THREADS))
    if processes > cores:
        raise ClusterConfigError(f"cluster.jobqueue.processes: received {processes} for {cores} "
                                 "cores per job; expected at most one process per core.")
    kwargs = {
        "cores": cores, "memory": memory, "processes": processes,
        "walltime": walltime if kind == "slurm" else hms(walltime_seconds(walltime)),
        "queue": jq.queue, "account": jq.account, "interface": jq.interface,
        "job_extra_directives": jq.job_extra_directives, "job_script_prologue": jq.job_script_prologue,
        "python": _worker_python(jq, kind), "local_directory": jq.local_directory,
        "log_directory": jq.log_directory,
        "job_name": "geoseg-worker",
        "worker_extra_args": _lifetime_args(jq, kind, walltime),
        "scheduler_options": {**(dask.config.get(f"jobqueue.{kind}.scheduler-options") or {}),
                              **_dashboard(jq.dashboard_address)},
    }
    return {key: value for key, value in kwargs.items() if value is not None}


def _worker_python(jq: JobqueueSpec, kind: str) -> str | None:
    """The workers' Python: the spec's ``python``, else dask's ``jobqueue.<kind>.python``, else
    ``python`` as found on the node's PATH after a prologue that activates an environment
    (``source .../bin/activate``, ``conda activate ...``), else ``None``: dask-jobqueue's default,
    this process's interpreter, which is right only where the nodes see it at the same path."""
    if jq.python or dask.config.get(f"jobqueue.{kind}.python", None):
        return jq.python
    prologue = jq.job_script_prologue or dask.config.get(f"jobqueue.{kind}.job-script-prologue", None)
    activates = any(ACTIVATE.search(line) for line in prologue or [])
    return "python" if activates else None


def _dashboard(address: str | None) -> dict[str, Any]:
    """Scheduler options for a dashboard at ``address``; ``None``: none (and its HTTP server on a
    free port rather than 8787)."""
    return {"dashboard_address": address} if address else {"dashboard": False, "dashboard_address": ":0"}


def job_range(jq: JobqueueSpec, n_workers: int | None, processes: int) -> tuple[int, int]:
    """(minimum, maximum) jobs: adaptive bounds, else ``jobs``, else enough jobs for ``n_workers``
    worker processes (else one job); equal bounds keep the number fixed."""
    if jq.maximum_jobs is not None:
        return jq.minimum_jobs or 0, jq.maximum_jobs
    jobs = jq.jobs or math.ceil((n_workers or processes) / processes)
    return jobs, jobs


def _jobqueue_setting(jq: JobqueueSpec, kind: str, key: str) -> Any:
    value = getattr(jq, key) or dask.config.get(f"jobqueue.{kind}.{key}", None)
    if value is None:
        raise ClusterConfigError(
            f"cluster.jobqueue.{key}: required for cluster kind {kind}, received none (neither in "
            f"the job spec nor in dask's config jobqueue.{kind}.{key}); set it, e.g. "
            "cluster: {jobqueue: {cores: 32, memory: 128GiB, walltime: '04:00:00'}}.")
    return value


def _checked_setting(jq: JobqueueSpec, kind: str, key: str, check: Callable[[str], Any]) -> str:
    """A setting as text, passed by ``check`` (as the spec's section checks its own) when it
    comes from dask's config."""
    value = str(_jobqueue_setting(jq, kind, key))
    try:
        check(value)
    except ValueError as exc:
        raise ClusterConfigError(f"dask config jobqueue.{kind}.{key}: received {value!r}; "
                                 f"expected {exc}; or set cluster.jobqueue.{key}.") from None
    return value


def _lifetime_args(jq: JobqueueSpec, kind: str, walltime: str) -> list[str]:
    """A spec's walltime is checked with its section; one from dask's config is checked here."""
    try:
        lifetime, spread = job_lifetime(walltime, jq.lifetime_margin, jq.lifetime_stagger)
    except ClusterConfigError as exc:
        raise ClusterConfigError(f"cluster.jobqueue.walltime (else dask config "
                                 f"jobqueue.{kind}.walltime): received {walltime!r}; expected "
                                 f"{exc}.") from None
    configured = list(dask.config.get(f"jobqueue.{kind}.worker-extra-args") or [])
    return [*configured, "--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{spread}s"]


# --- Kubernetes (Dask operator) ------------------------------------------------------------------


def kubernetes_cluster_spec(spec: ClusterSpec) -> dict[str, Any]:
    """The ``DaskCluster`` resource geoseg asks the Dask operator for (no cluster contacted):
    dask-kubernetes' ``make_cluster_spec``, adapted to the geoseg image."""
    operator = _optional("dask_kubernetes.operator", "kubernetes")
    settings = spec.kubernetes
    resources = {part: {k: str(v) for k, v in values.items()}
                 for part, values in settings.resources.items()}
    body = operator.make_cluster_spec(
        name=settings.name, image=settings.image, n_workers=spec.n_workers or 2,
        resources=resources or None, env=dict(settings.env) or None,
        worker_command=["dask", "worker", "--nthreads",
                        str(spec.threads_per_worker or DEFAULT_THREADS)])
    if settings.namespace:
        body["metadata"]["namespace"] = settings.namespace
    for role in ("scheduler", "worker"):
        for container in body["spec"][role]["spec"]["containers"]:
            _fit_container(container, settings.secrets)
    return body


def _fit_container(container: dict[str, Any], secrets: list[str]) -> None:
    """The image's entrypoint is ``geoseg``, so the Dask command becomes the container's
    ``command`` (``dask scheduler``: distributed no longer ships a ``dask-scheduler`` script);
    unset fields are dropped; each secret's keys become environment variables."""
    command = container.pop("args")
    if command[0].startswith("dask-"):
        command = ["dask", command[0].removeprefix("dask-"), *command[1:]]
    container["command"] = command
    for key in [key for key, value in container.items() if value is None]:
        del container[key]
    if secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in secrets]


def kubernetes_scheduler_address(settings: KubernetesSpec) -> str:
    """The scheduler service of the DaskCluster ``settings.name``, as pods inside Kubernetes reach it."""
    namespace = settings.namespace or _pod_namespace()
    return f"tcp://{settings.name}-scheduler.{namespace}.svc.cluster.local:8786"


def check_kubernetes_access() -> None:
    """Refuse, before any DaskCluster is made, a machine whose Kubernetes API cannot be used: no
    kube config nor service account, a broken kube config, an API server out of reach. (A
    ``KubeCluster`` that fails to start leaves dask-kubernetes an exit-time clean-up that fails
    with it, traceback and all.)"""
    import kr8s

    try:
        kr8s.api()  # reads the credentials as the operator's client will, asks the server's version
    except Exception as exc:  # noqa: BLE001 - whatever fails, no DaskCluster can be made from here
        raise ClusterConfigError(
            f"cluster kind kubernetes: {_kubernetes_failure(exc)}, looking in {_kube_config()} and "
            f"a pod's service account {POD_NAMESPACE.parent}; expected a kube config whose "
            "current context reaches the cluster's API server, or the service account of the pod "
            "geoseg runs in. Set KUBECONFIG to your kube config file (`kubectl get pods` checks "
            "it), or run on a Dask scheduler you can reach with --cluster tcp://host:8786.") from None


def _kubernetes_failure(exc: Exception) -> str:
    """What went wrong in a few words; the text of a kube config's parse error is left out (it
    quotes the file's lines, tokens included)."""
    import httpx

    if isinstance(exc, ValueError) and "credentials" in str(exc):
        return "found no Kubernetes credentials"
    if isinstance(exc, (OSError, httpx.TransportError)):
        return f"cannot reach the Kubernetes API server ({type(exc).__name__}: {redact.scrub(str(exc))})"
    return f"cannot use the Kubernetes credentials found ({type(exc).__name__}, details not shown)"


def _kube_config() -> str:
    """The kube config files looked for, as the Kubernetes clients look for them."""
    given = os.environ.get("KUBECONFIG")
    return f"KUBECONFIG={given}" if given else "~/.kube/config (KUBECONFIG unset)"


def _pod_namespace() -> str:
    """This pod's namespace (from its service account), else ``default``."""
    return POD_NAMESPACE.read_text().strip() if POD_NAMESPACE.is_file() else "default"


def _optional(module: str, kind: str) -> ModuleType:
    """Import an optional dependency, or say which ``geoseg[...]`` extra installs it."""
    package, extra = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"cluster kind {kind} needs {package}, which cannot be imported here ({exc}); "
            f"install it with: pip install 'geoseg[{extra}]'") from None
