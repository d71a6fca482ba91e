"""``run``: a validated job spec, end to end, store to store."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client

from geoseg import config, logs
from geoseg.core import interrupts
from geoseg.core.interrupts import Terminated
from geoseg.core.records import now
from geoseg.core.segmenter import Segmenter, band_order, band_order_said, check_dimensions
from geoseg.core.text import clipped
from geoseg.core.urls import public_url
from geoseg.ensembles import TTA, Ensemble
from geoseg.ensembles.members import trained_models
from geoseg.errors import (
    BandMismatchError,
    ChunkResultError,
    ClusterConfigError,
    GeosegError,
    JobSpecError,
    LeaseLostError,
    MethodParameterError,
    OutputExistsError,
    PlanError,
    TrackingError,
)
from geoseg.instances.stage import (
    InstanceReport,
    InstanceSettings,
    keep_other_instances,
    label_output,
    routes,
)
from geoseg.io import stages
from geoseg.io.integrity import lost_regions
from geoseg.io.output import (
    OutputTarget,
    being_removed,
    chunk_key,
    create_output,
    half_created,
    output_exists,
)
from geoseg.io.readers import open_source, source_to_dataarray
from geoseg.io.sources import RasterSource
from geoseg.jobs import checks, provenance, tracking
from geoseg.jobs.lease import Lease, taken
from geoseg.jobs.prepared import PreparedJob, model_files, output_layout
from geoseg.jobs.spec import JobSpec, ModelSpec, load_job
from geoseg.jobs.status import refuse_unreadable_group
from geoseg.methods.build import build_method, needs_fit, params_for_input
from geoseg.methods.edges import Canny, hysteresis
from geoseg.models import ranges
from geoseg.models.header import ModelHeader
from geoseg.models.modelfile import read_header
from geoseg.parallel.cluster import cluster_kind, connect, current, for_job_size, with_cluster
from geoseg.parallel.cluster_spec import ClusterSpec
from geoseg.parallel.executor import RegionStats, run_regions, score_regions
from geoseg.parallel.lazy import MIN_TASK_PIXELS, plan_work
from geoseg.parallel.plugins import load_models, unload_models
from geoseg.parallel.tasks import RegionWork
from geoseg.tiling import DEFAULT_CHUNK, Geometry, InferenceSettings, Plan
from geoseg.tiling.plan import round_up

LEASE_SECONDS = 600.0  # renewed every third; a killed run's lease on this machine is taken at once


@dataclass
class RunReport:
    """What a finished run reports; ``provenance`` is also stored in the output."""

    output_url: str
    n_tasks: int  # computed by this run
    pixels: int
    seconds: float
    class_counts: dict[str, int]
    provenance: dict[str, Any] = field(repr=False)
    skipped: int = 0  # chunks an earlier run of the same job had finished
    record_url: str | None = None  # where the run record was written in the runs folder
    instances: InstanceReport | None = None  # the instance stage, when the spec asks for it

    @property
    def mpx_per_s(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds else float("nan")


def prepare(spec: JobSpec) -> PreparedJob:
    """Open the input's metadata, load the model (or check the method) and check they fit.

    Writes nothing and computes nothing; a classical method that needs global
    statistics is fitted later, by :meth:`PreparedJob.fitted`. A job over its budgets
    (:mod:`geoseg.budgets`) raises :class:`~geoseg.errors.BudgetError`.
    """
    config.check_settings()  # a bad GEOSEG_* value is named now, not by a task
    inp = spec.input
    with _key("input.url", bands="input.bands"):
        source = open_source(inp.url, inp.storage_options, variable=inp.variable, bands=inp.bands,
                             level=inp.level, pages=inp.pages, reader=inp.reader)
    source = checks.with_missing_chunks(source, spec.input.missing_chunks)
    model = _build(spec.model, source, fit=False)
    _check_chunks(spec, source)  # before the layout of a method still to be fitted is used
    prepared = PreparedJob(spec, source, None, None) if model is None else _with_segmenter(spec, source, model)
    # opens and checks the reference labels now, before any compute
    prepared = dataclasses.replace(prepared, reference=provenance.open_reference(spec, source))
    checks.check_budgets(prepared)  # tasks and bytes per read window, from the plan alone
    planned = checks.check_job(prepared)  # what else a run would fail on: input, methods, output
    if model is None and planned is not None:  # what the fit will give: axes, plan, instances
        _with_segmenter(spec, source, planned)
    return prepared


def _build(spec: ModelSpec, source: RasterSource, *, fit: bool, key: str = "model") -> Segmenter | None:
    """The segmenter a model spec (at ``key`` in the job spec) describes; ``None`` when a method
    in it must first be fitted and ``fit`` is false (fitting computes on the active cluster)."""
    if spec.path is not None:
        with _key(f"{key}.path"):
            model: Segmenter | None = read_header(spec.path, storage_options=spec.storage_options)
    elif spec.method is not None:
        if needs_fit(spec.method) and not fit:
            return None
        with _key(f"{key}.params", only=MethodParameterError):
            params = params_for_input(spec.method, spec.params, source.dtype)
            model = build_method(spec.method, params, source_to_dataarray(source) if fit else None)
        with _key(f"{key}.params"):  # a feature's bands: where a fitted method's are keyed too
            model.check_bands(source.band_names, f"input {public_url(source.url)}")
    else:
        members = [_build(m, source, fit=fit, key=f"{key}.ensemble.members.{i}")
                   for i, m in enumerate(spec.ensemble.members)]
        if any(m is None for m in members):
            return None
        with _key("model.ensemble"):
            model = Ensemble(members, weights=spec.ensemble.weights, combine=spec.ensemble.combine)
    return TTA(model, transforms=spec.tta) if spec.tta else model


def fit_methods(prepared: PreparedJob) -> PreparedJob:
    """Fit classical methods' global statistics on the input (no-op without them)."""
    if prepared.model is not None:
        return prepared
    with _key(f"input {public_url(prepared.spec.input.url)}", only=PlanError):  # no valid pixel
        model = _build(prepared.spec.model, prepared.source, fit=True)
    fitted = _with_segmenter(prepared.spec, prepared.source, model)
    return dataclasses.replace(fitted, reference=prepared.reference)


def input_warnings(prepared: PreparedJob) -> list[str]:
    """Warnings about the input a run would go on with: its bands named as the model's but in
    another order (:func:`band_order_warning`), its sampled value range far from the model
    file's normalisation statistics (:mod:`geoseg.models.ranges`)."""
    what = f"input {public_url(prepared.spec.input.url)}"
    said = band_order_warning(prepared, what)
    infos = trained_models(prepared.model)
    return said + (ranges.range_warnings(prepared.source, infos, what) if infos else [])


def band_order_warning(prepared: PreparedJob, what: str) -> list[str]:
    """A warning when the input's bands reach the model named as its own bands but reordered
    or repeated: the model would read each as another band."""
    model, names = prepared.model, prepared.source.band_names
    wanted = None if model is None else model.bands
    order = band_order(wanted, names)
    if order is None:
        return []
    chosen = prepared.spec.input.bands or list(range(1, len(names) + 1))
    fix = (f"Select them in the model's order: input.bands: {[chosen[i] for i in order]}." if order
           else f"Select bands holding {', '.join(wanted)} (input.bands).")
    return [f"{what}: {band_order_said(model.name, wanted, names)} {fix}"]


def _with_segmenter(spec: JobSpec, source: RasterSource, model: Segmenter) -> PreparedJob:
    with _key("input.bands"):
        model.check_bands(source.band_names, f"input {public_url(spec.input.url)}")
    _check_dimensions(spec, source, model)
    inf = spec.inference
    with _key("inference"), _warnings_logged():
        plan = Plan.create(source.shape[1:], Geometry.of(model),
                           InferenceSettings(inf.tile, inf.halo, inf.blend, inf.overlap, inf.batch_size),
                           output_layout(spec, source))
        work = plan_work(model, plan, nodata=source.georef.nodata, nodata_class=spec.output.nodata_class,
                         compile=inf.compile)
        _warn_small_tasks(plan)
    prepared = PreparedJob(spec, source, model, work)
    _check_instances(prepared)
    return prepared


# Above this many tasks, each computing fewer than MIN_TASK_PIXELS, a job warns: a task costs
# about 10 ms to schedule and record whatever its size (a threshold over 1024 x 1024 in
# 32-pixel chunks, 1,024 tasks: 10.8 s, against 0.34 s in 256-pixel chunks).
MANY_TASKS = 1000


def _warn_small_tasks(plan: Plan) -> None:
    """Warn when small output chunks make many small tasks, naming shards as the fix: a job
    writes whole chunks (shards) a task and records each in its manifest."""
    pixels = math.prod(plan.region)
    if plan.n_tasks <= MANY_TASKS or pixels >= MIN_TASK_PIXELS:
        return
    side = math.ceil(MIN_TASK_PIXELS ** (1 / len(plan.region)))  # 256 x 256, 41 x 41 x 41
    shards = [round_up(min(side, n), c) for n, c in zip(plan.shape, plan.chunks)]
    warnings.warn(
        f"Output chunks {list(plan.chunks)} make {plan.n_tasks} tasks of {pixels} pixels each; "
        f"a task costs about 10 ms whatever its size. Keep the chunks and add output.shards: "
        f"{shards} (a task then writes a whole shard), or use larger chunks.", stacklevel=2)


@contextlib.contextmanager
def _warnings_logged() -> Iterator[None]:
    """The tiling plan's warnings (:meth:`Plan.create` warns Python callers with
    ``warnings.warn``) as geoseg log warnings: one plain line each on a job's stderr, as the
    input's warnings, not a Python warning with a source line. Other warnings pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for found in caught:
        if issubclass(found.category, UserWarning):
            logs.log.warning(str(found.message))
        else:
            warnings.warn_explicit(found.message, found.category, found.filename, found.lineno)


def _check_instances(prepared: PreparedJob) -> None:
    """Resolve the instance stage's classes now, so a bad name fails before any compute."""
    if prepared.spec.instances is not None:
        with _key("instances"):
            routes(_instance_settings(prepared.spec), [c.name for c in prepared.model.classes],
                   prepared.work.nodata_class, _decoding(prepared.model),
                   ndim=len(prepared.source.spatial_dims))


def _check_dimensions(spec: JobSpec, source: RasterSource, model: Segmenter) -> None:
    """Refuse a model of another kind than the input (a 2D network on a volume), which would
    fail in the first task (:func:`geoseg.core.segmenter.check_dimensions`)."""
    check_dimensions(model, source.spatial_dims, f"the input {public_url(spec.input.url)}")


def _instance_settings(spec: JobSpec) -> InstanceSettings:
    s = spec.instances
    return InstanceSettings(s.method, None if s.classes is None else tuple(s.classes),
                            s.connectivity, s.halo, s.h, s.table, s.polygons)


def _check_chunks(spec: JobSpec, source: RasterSource) -> None:
    dims, url = source.spatial_dims, public_url(spec.input.url)
    for key in ("chunks", "shards"):
        value = getattr(spec.output, key)
        if value is not None and len(value) != len(dims):
            raise JobSpecError(
                f"output.{key}: received {list(value)} ({len(value)} values) but the input {url} has "
                f"spatial axes {dims}; give one size per axis, e.g. {[DEFAULT_CHUNK[len(dims)]] * len(dims)}.")
    chunks = spec.output.chunks or (DEFAULT_CHUNK[len(dims)],) * len(dims)
    if spec.output.shards is not None and any(s % c for s, c in zip(spec.output.shards, chunks)):
        raise JobSpecError(
            f"output.shards: received {list(spec.output.shards)}, which is not a whole number of chunks "
            f"{list(chunks)} per axis; give shards that are multiples of output.chunks.")


def run(job: JobSpec | str | Path, *, scheduler: str | None = None, overwrite: bool = False,
        on_start: Callable[[int], None] | None = None,
        on_done: Callable[[RegionStats], None] | None = None,
        client: Client | None = None, cluster: str | None = None,
        lease: Lease | None = None) -> RunReport:
    """Run a job: read, segment and write every output chunk, then record provenance.

    The spec's ``cluster`` section says where (``cluster.kind``: local, address, slurm, pbs,
    kubernetes); ``cluster`` (a ``--cluster`` value: a kind or a scheduler address) or
    ``scheduler`` (an address) overrides it. With none of them (nor ``DASK_SCHEDULER_ADDRESS``)
    a local cluster of worker processes is started; a ``client`` given is used instead (jobs in
    threads may share one). An existing output is refused unless ``overwrite``.

    The run writes under a lease on the output (:mod:`geoseg.jobs.lease`; a batch passes the
    one it holds), so two runs never write one output at once; the output's status says
    ``failed`` or ``interrupted`` when the run ends that way.
    """
    spec = job if isinstance(job, JobSpec) else load_job(job)
    spec.check(JobSpec.document)  # a spec built in Python skipped the loader's checks
    where = _where(spec, scheduler, cluster)
    started, t0 = now(), time.perf_counter()
    prepared = prepare(spec)
    if client is None:
        where = for_job_size(where, math.prod(prepared.source.shape[1:]), prepared.n_tasks)
    for text in input_warnings(prepared):
        logs.log.warning(text)
    out = spec.output
    _refuse_foreign_output(out.url, out.storage_options, overwrite)
    _check_before_replacing(spec, overwrite)
    tracker = tracking.open_tracker(spec)  # fails now, not after compute, if MLflow is unusable
    progress = _Progress(prepared)
    with _leased(out.url, out.storage_options, lease) as held:
        with _failure_recorded(functools.partial(_record_failure, progress, started, t0, tracker)), \
                (contextlib.nullcontext(client) if client is not None else connect(where)) as active, \
                current(active):
            prepared = progress.prepared = fit_methods(prepared)
            target, skip = _open_or_create(prepared, overwrite)
            progress.skipped = len(skip)
            progress.before = target.done_keys()  # lost chunks' entries too: not this run's gain
            progress.target = target  # its manifest counts what this run wrote from now on
            target = dataclasses.replace(target, fence=held.fence())
            if spec.instances is not None:  # refused before any compute, the output left as it was
                keep_other_instances(target, _instance_settings(spec), overwrite)
            with _status_marked(target):
                report = _compute(prepared, target, skip, active, where, on_start,
                                  _watching(held, _kept(on_done, progress.came_back)), started, t0)
        held.check()  # published only by the run that still holds the output
        _publish(report, spec, target, tracker)
    _log_finished(report)
    return report


def _worker_wait(where: ClusterSpec) -> float | None:
    """How long a run waits once every worker has left: ``GEOSEG_WORKER_WAIT`` on an existing
    cluster, whose workers may be gone for good; no limit on one the run started (nannies
    restart workers, and SLURM/PBS/Kubernetes workers may queue for hours)."""
    return config.worker_wait() if cluster_kind(where) == "address" else None


def _compute(prepared: PreparedJob, target: OutputTarget, skip: set[str], active: Client,
             where: ClusterSpec, on_start: Callable[[int], None] | None,
             on_done: Callable[[RegionStats], None] | None, started: str,
             t0: float) -> RunReport:
    """Segment every chunk not in ``skip``, then the stages; the run's report."""
    spec, out = prepared.spec, prepared.spec.output
    dashboard = logs.dashboard_link(active)
    _log_started(spec, prepared.n_tasks, len(skip), dashboard)
    if on_start is not None:
        on_start(prepared.n_tasks - len(skip))
    t_load = time.perf_counter()
    done_at: list[float] = []  # seconds into the compute when each region came back (run report)
    with models_on_workers(active, prepared.work):  # loaded before the compute's clock starts
        t_compute = time.perf_counter()
        stats = run_regions(active, prepared.work, prepared.source, target, chunks=prepared.chunks,
                            n_classes=prepared.model.n_classes, with_probabilities=out.probabilities,
                            skip=skip, on_done=_stamped(on_done, done_at, t_compute),
                            reference=prepared.reference, worker_wait=_worker_wait(where))
    compute_seconds = time.perf_counter() - t_compute
    _check_all_recorded(target, prepared)
    finish_edges(prepared, target)
    instances = instance_stage(prepared, target)
    used = _cluster_info(active, cluster_kind(where))
    measured = {"devices": provenance.worker_devices(active), "dashboard": dashboard,
                "stored_confusion": _score_skipped(active, prepared, target, skip,
                                                   _worker_wait(where), len(stats)),
                "done_at": tuple(done_at), "model_load_seconds": t_compute - t_load}
    report = _report(prepared, stats, time.perf_counter() - t0, compute_seconds, started, used,
                     skipped=len(skip), **measured)
    if instances is not None:
        report.instances = instances
        report.provenance["instances"] = instances.record()
    return report


def _check_all_recorded(target: OutputTarget, prepared: PreparedJob) -> None:
    """Never go on to mark complete an output whose manifest lacks chunks: the last guard
    against chunks skipped by mistake, for the price of one listing of the manifest."""
    done = target.count_done()
    if done != prepared.n_tasks:
        raise ChunkResultError(
            f"Output {public_url(prepared.spec.output.url)}: after the run, {done} of "
            f"{prepared.n_tasks} chunk(s) are recorded as written; expected all of them. The output "
            "is not marked complete: run the job again to compute the others.")


def _stamped(on_done: Callable[[RegionStats], None] | None, done_at: list[float],
             t0: float) -> Callable[[RegionStats], None]:
    """``on_done``, also noting when each region came back (seconds since ``t0``)."""
    def done(stats: RegionStats) -> None:
        done_at.append(round(time.perf_counter() - t0, 3))
        if on_done is not None:
            on_done(stats)
    return done


@contextlib.contextmanager
def _leased(url: str, storage_options: dict[str, Any], lease: Lease | None) -> Iterator[Lease]:
    """Hold ``lease`` (a batch's), or take one on the output for this run and renew it."""
    if lease is not None:
        yield lease
        return
    with taken(url, storage_options, seconds=LEASE_SECONDS,
               refused="nothing was written. Wait for it (geoseg status shows it), or write "
                       "elsewhere.") as own:
        yield own


def _watching(lease: Lease, on_done: Callable[[RegionStats], None] | None) -> Callable[[RegionStats], None]:
    """``on_done``, after checking that the run still holds its lease: a run that lost it
    (stalled past its expiry, and another run took the output over) stops at its next task."""
    def done(stats: RegionStats) -> None:
        lease.check()
        if on_done is not None:
            on_done(stats)
    return done


@dataclass
class _Progress:
    """How far a run got, for the record of a run that fails: the job as last prepared (fitted
    once its methods are), the regions that came back and those done before."""

    prepared: PreparedJob
    came_back: list[RegionStats] = dataclasses.field(default_factory=list)
    skipped: int = 0
    target: OutputTarget | None = None  # once opened or created
    before: set[str] = dataclasses.field(default_factory=set)  # its manifest's entries then

    def computed(self) -> int:
        """The regions this run wrote: those that came back, and those its tasks still running
        when it stopped wrote during its wait for them (in the manifest, their results never
        came back), counted from what the manifest gained."""
        count = len(self.came_back)
        if self.target is None:
            return count
        chunks = self.prepared.chunks
        with contextlib.suppress(Exception):  # the store may be what failed: what came back
            came = {chunk_key(s.region, chunks) for s in self.came_back}
            return len(came | (self.target.done_keys() - self.before))
        return count


@contextlib.contextmanager
def _failure_recorded(ended: Callable[[str, BaseException], None]) -> Iterator[None]:
    """Tell ``ended`` (which writes the run's record) how a run that fails or is interrupted
    ended: in its cluster's start, a fit, the output's creation or the compute."""
    try:
        yield
    except KeyboardInterrupt as exc:
        ended("interrupted", exc)
        raise
    except BaseException as exc:
        ended("failed", exc)
        raise


@contextlib.contextmanager
def _status_marked(target: OutputTarget) -> Iterator[None]:
    """Mark the output ``interrupted`` or ``failed`` (with the error's type) if the run ends so;
    not when it lost its lease: the output is another run's now, its status that run's."""
    try:
        yield
    except LeaseLostError:
        raise
    except KeyboardInterrupt:
        target.finalize({"status": "interrupted"})
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the store itself may be what failed
            target.finalize({"status": "failed", "error": _error_summary(exc)})
        raise


def _kept(on_done: Callable[[RegionStats], None] | None,
          came_back: list[RegionStats]) -> Callable[[RegionStats], None]:
    """``on_done``, also keeping each region's figures in ``came_back``."""
    def done(stats: RegionStats) -> None:
        came_back.append(stats)
        if on_done is not None:
            on_done(stats)
    return done


def _record_failure(progress: _Progress, started: str, t0: float,
                    tracker: tracking.MlflowTracker | None, status: str,
                    exc: BaseException) -> None:
    """Write the run record of a run that ended ``status``, into its runs folder (the night's
    failures are listed with its successes: ``geoseg runs``), and log it to MLflow if tracking.
    Never raises: the runs folder or MLflow may be what failed, and the run's own error is the
    one to show."""
    error = (("terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (SIGINT)")
             if isinstance(exc, KeyboardInterrupt) else _error_summary(exc))
    prepared = progress.prepared
    folder = provenance.runs_dir(prepared.spec)
    unwritten = f"the record of this {status} run could not be written into {public_url(folder)}"
    with _warned(unwritten):
        record = provenance.failure_record(
            prepared, status=status, error=error, started=started,
            seconds=time.perf_counter() - t0, computed=progress.computed(),
            skipped=progress.skipped, identity=job_identity(prepared),
            model=_model_record(prepared))
        with _warned(f"this {status} run is not logged to MLflow"):
            if tracker is not None:
                record["tracking"] = {"mlflow": tracker.start(record)}
        with _warned(unwritten):
            provenance.save_record(record, folder)
        with _warned(f"this {status} run is not logged to MLflow"):  # ended, record or not
            if tracker is not None and tracker.run_id is not None:
                tracker.finish(record)


@contextlib.contextmanager
def _warned(what: str) -> Iterator[None]:
    """Any error inside logged as a warning saying ``what`` and why (geoseg's own message, else
    the error's type: another's may hold a secret), not raised."""
    try:
        yield
    except Exception as failed:  # noqa: BLE001 - logged, the run's error raised as it is
        why = str(failed).splitlines()[0] if isinstance(failed, GeosegError) else type(failed).__name__
        logs.log.warning(f"{what}: {why}")


def _error_summary(exc: BaseException) -> str:
    """The error's type, and for geoseg's own errors (public URLs only) its first line."""
    if isinstance(exc, GeosegError):
        return f"{type(exc).__name__}: {clipped(str(exc).splitlines()[0], 1000)}"
    return type(exc).__name__


@contextlib.contextmanager
def models_on_workers(client: Client, work: RegionWork) -> Iterator[None]:
    """The job's model files loaded on every worker (once per worker, by a worker plugin)
    while the job runs, and freed after it."""
    plugin = load_models(client, work.model, compile=work.compile)
    try:
        yield
    finally:
        unload_models(client, plugin)


def finish_edges(prepared: PreparedJob, target: OutputTarget) -> None:
    """Exact Canny: a ``hysteresis="deferred"`` Canny writes none/weak/strong classes per
    region; the ``edges`` array keeps the weak edges connected to a strong one over the
    whole raster (:func:`geoseg.methods.hysteresis`)."""
    if not (isinstance(prepared.model, Canny) and prepared.model.hysteresis == "deferred"):
        return
    if (stages.stage_record(target, "edges").get("status") == "complete"
            and not stages.lost_since_written(target, "edges")):
        return
    stages.mark_stage(target, "edges", {"status": "running"})
    classes = da.from_zarr(target.open_group(mode="r")["classes"])
    digest = stages.store_hashed(target, "edges", hysteresis(classes).astype(np.uint8))
    stages.mark_stage(target, "edges", {"status": "complete", "chunks_sha256": digest})


def instance_stage(prepared: PreparedJob, target: OutputTarget) -> InstanceReport | None:
    """Instance labels, table and polygons of the written classes, if the spec asks for them."""
    if prepared.spec.instances is None:
        return None
    with _key("instances"):
        return label_output(target, _instance_settings(prepared.spec), georef=prepared.source.georef)


def _score_skipped(client: Client, prepared: PreparedJob, target: OutputTarget,
                   skip: set[str], worker_wait: float | None,
                   computed: int) -> np.ndarray | None:
    """Scores of the chunks an earlier run wrote, so that a resumed run scores the whole output."""
    if prepared.reference is None or not skip:
        return None
    return score_regions(client, target, prepared.reference, shape=prepared.source.shape[1:],
                         chunks=prepared.chunks, keys=skip, n_classes=prepared.model.n_classes,
                         nodata_class=prepared.work.nodata_class, worker_wait=worker_wait,
                         computed=computed)


def _publish(report: RunReport, spec: JobSpec, target: OutputTarget,
             tracker: tracking.MlflowTracker | None) -> None:
    """Mark the output complete, store the run record in the runs folder and in the output, and
    log it to MLflow if tracking. The output is finalized before MLflow is asked anything and
    the record written whatever MLflow does: a tracking server that fails now (gone, refusing)
    leaves them complete, the record noting why the run is not in MLflow, and then raises its
    :class:`~geoseg.errors.TrackingError` (saying so, and how to log it). A signal from the
    moment the output is being marked is raised as
    :class:`~geoseg.core.interrupts.StoppedOnceComplete`: the run is complete and recorded."""
    record = report.provenance
    folder = provenance.runs_dir(spec)
    path = provenance.name_record(record, folder)
    report.record_url = record["run_record"]
    marked = False
    try:
        # per-region figures stay in the runs folder: thousands of them would swell the output's
        # metadata. The output first: a runs folder that fails (full, gone) loses no finished
        # output. A signal waits until the output is marked and its record written: stopped
        # between the two, the output would name a record that was never written
        with interrupts.deferred() as held:
            target.finalize({"status": "complete", "provenance": _stored(record)},
                            drop=("error", "repaired_regions"))  # an earlier run's failure, or repair
            marked = True
            if tracker is None:
                provenance.write_record(record, folder, path)
            else:
                _tracked(record, target, tracker, folder, path, held)
    except KeyboardInterrupt as exc:
        if not marked:
            raise
        raise interrupts.StoppedOnceComplete(exc, report.output_url, report.record_url,
                                             _untracked(record)) from None
    except TrackingError:
        _log_finished(report)
        raise


BEFORE_MLFLOW = "interrupted before the run was logged to MLflow"  # a record's tracking error


def _untracked(record: dict[str, Any]) -> str:
    """What a run stopped once complete left undone in MLflow, as its record says ("" if it was
    not tracking, or was logged)."""
    logged = record.get("tracking", {}).get("mlflow", {})
    if logged.get("error") == BEFORE_MLFLOW:
        return f"it was stopped before it was logged to MLflow. {tracking.RELOG}"
    if logged.get("error"):
        return "its MLflow run was stopped while being logged and is marked KILLED"
    return ""



def _tracked(record: dict[str, Any], target: OutputTarget, tracker: tracking.MlflowTracker,
             folder: str, path: str, held: interrupts.Held) -> None:
    """Log the run to MLflow, then write its record (whatever MLflow did) and say in the
    output's copy where it is logged. ``held``: the signals held while the output was marked,
    taken here (MLflow may take minutes: it must stay interruptible). Stopped before or while
    MLflow answers, its run there ends KILLED and the record says so."""
    failed: TrackingError | None = None
    try:
        held.release()
        record["tracking"] = {"mlflow": tracker.start(record)}
        tracker.finish(record)
    except TrackingError as exc:
        failed = exc
        logged = record.get("tracking", {}).get("mlflow") or tracker.where()
        record["tracking"] = {"mlflow": {**logged, "error": str(exc)}}
    except BaseException:
        said = (BEFORE_MLFLOW if tracker.run_id is None else
                "interrupted while logging to MLflow; the run there is KILLED")
        tracker.abandon()
        logged = record.get("tracking", {}).get("mlflow") or tracker.where()
        record["tracking"] = {"mlflow": {**logged, "error": said}}
        raise
    finally:  # even when stopped while MLflow is slow to answer: the record is the run's account
        with interrupts.deferred():
            provenance.write_record(record, folder, path)
    with _warned("the output's copy of the run record does not say where it is logged in MLflow"):
        target.finalize({"provenance": _stored(record)})
    if failed is not None:
        raise failed


def _stored(record: dict[str, Any]) -> dict[str, Any]:
    """The run record as the output keeps it: without its per-region figures."""
    return {k: v for k, v in record.items() if k != "regions"}


def _identity_parts(prepared: PreparedJob) -> dict[str, Any]:
    """What makes two runs write the same output: input, model weights, output layout, inference."""
    spec = prepared.spec
    return {
        "input": spec.input.model_dump(mode="json", exclude={"storage_options", "missing_chunks"}),
        "model_sha256": prepared.model_id,
        "output": spec.output.model_dump(mode="json", include={"chunks", "probabilities", "nodata_class"}),
        "inference": spec.inference.model_dump(mode="json"),
    }


def _digest(what: Any) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def job_identity(prepared: PreparedJob) -> str:
    """One digest of :func:`_identity_parts`: equal for two runs that write the same output."""
    return _digest(_identity_parts(prepared))


def identity_parts(prepared: PreparedJob) -> dict[str, str]:
    """A digest per part of the job's identity, kept in the output so that a different job's
    refusal can name the parts that differ."""
    return {name: _digest(part) for name, part in _identity_parts(prepared).items()}


_PART_NAMES = {"input": "the input (url, variable, bands, level, reader)",
               "model_sha256": "the model (a network's weights, or a method and its parameters)", "output": "the output layout (chunks, "
               "probabilities, nodata_class)", "inference": "the inference settings"}


def _what_differs(attrs: dict[str, Any], prepared: PreparedJob) -> str:
    """The parts of the job's identity unlike the output's, as words; all four named when the
    output predates the parts being kept."""
    then, now = attrs.get("job_identity_parts") or {}, identity_parts(prepared)
    differ = [name for name in now if then.get(name) != now[name]] if then else list(now)
    said = ", ".join(_PART_NAMES[name] for name in differ)
    return said if then else f"{said}: one or more"


def _check_before_replacing(spec: JobSpec, overwrite: bool) -> None:
    """Before ``overwrite`` deletes an output there, hash the model files' weights against
    their headers (as the workers would when they load them, too late): a damaged file is
    refused while what the last run wrote is still there."""
    out = spec.output
    if overwrite and output_exists(out.url, out.storage_options):
        checks.check_model_weights(spec.model)


def _refuse_foreign_output(url: str, storage_options: dict[str, Any], overwrite: bool) -> None:
    """Refuse, before starting anything, an existing output that no geoseg job wrote."""
    if overwrite or not output_exists(url, storage_options):
        return
    if "job_identity" not in OutputTarget(url, dict(storage_options)).attrs():
        refuse_unreadable_group(url, storage_options)  # a damaged one is not said to be foreign
        raise OutputExistsError(f"Output {url} already exists and is not a geoseg output; nothing was "
                                "written. Choose another output URL: geoseg never deletes what it did "
                                "not write, even with --overwrite (remove it yourself if it is to go).")


def existing_output(prepared: PreparedJob) -> str | None:
    """What ``geoseg run`` will do with an output already at the job's URL, for ``validate``:
    ``None`` when there is none; raises as the run would for one that no geoseg job wrote."""
    out = prepared.spec.output
    if not output_exists(out.url, out.storage_options):
        return None
    _refuse_foreign_output(out.url, out.storage_options, overwrite=False)
    attrs = OutputTarget(out.url, dict(out.storage_options)).attrs()
    if being_removed(attrs):
        return (f"output {out.url} exists, left half deleted by a stopped --overwrite: `geoseg "
                "run` deletes the rest and writes it anew")
    if attrs["job_identity"] != job_identity(prepared):
        return (f"output {out.url} exists, made by a different job ({_what_differs(attrs, prepared)} "
                "differ): `geoseg run` refuses it unless --overwrite, which replaces it")
    return f"output {out.url} exists, written by this job: `geoseg run` resumes it"


def _open_or_create(prepared: PreparedJob, overwrite: bool) -> tuple[OutputTarget, set[str]]:
    """Resume an output this same job started, else create it (refusing anything else)."""
    out = prepared.spec.output
    existing = OutputTarget(out.url, dict(out.storage_options))
    if overwrite or not output_exists(out.url, out.storage_options):
        return _create(prepared, overwrite), set()
    _refuse_foreign_output(out.url, out.storage_options, overwrite)
    attrs = existing.attrs()
    if being_removed(attrs):  # condemned by an --overwrite that was stopped: nothing to keep
        logs.log.info(f"the output at {public_url(out.url)} was left half deleted by a stopped "
                      "--overwrite; deleting the rest and creating it again")
        return _create(prepared, overwrite=True), set()
    if attrs["job_identity"] != job_identity(prepared):
        raise OutputExistsError(
            f"Output {out.url} already exists and was made by a different job "
            f"({_what_differs(attrs, prepared)} differ); nothing was written. Choose another "
            "output URL, or pass --overwrite to replace it.")
    if half_created(attrs):  # stopped before its first chunk: nothing to keep
        logs.log.info(f"the output at {public_url(out.url)} was left half created by a stopped run; "
                      "creating it again")
        return _create(prepared, overwrite=True), set()
    _check_layout(existing, prepared)
    _check_input_unchanged(attrs.get("input_version"), prepared)
    done = _still_done(existing)  # refuses edited array metadata before anything is changed
    if attrs.get("status") != "running":  # resumed: no longer what the last run left it as
        existing.finalize({"status": "running"})
    return existing, done


def _still_done(target: OutputTarget) -> set[str]:
    """The regions the manifest records, less those whose stored chunks were lost since (they
    would read as no-data): those are computed again."""
    done = target.done_keys()
    lost = lost_regions(target, done)
    if lost:
        logs.log.warning(f"{len(lost)} task region(s) recorded as done lost stored chunks since "
                         f"their run ({', '.join(lost[:10])}); computing them again")
    return done - set(lost)


def _check_input_unchanged(then: dict[str, Any] | None, prepared: PreparedJob) -> None:
    """Refuse resuming from an input that changed since the output was started (``then``: its
    size and version marks, mtime, ETag..., recorded then): the chunks already written came
    from the old input, and the new ones would be mixed with them."""
    now = provenance.identity(prepared.source)
    if not then or "unavailable" in then or "unavailable" in now:
        return
    differs = [k for k in then if k in now and k != "object" and then[k] != now[k]]  # a mark
    if not differs:  # an older run did not record is not compared
        return
    spec = prepared.spec
    raise OutputExistsError(
        f"Input {public_url(spec.input.url)} changed since output {public_url(spec.output.url)} was "
        f"started (then {_marks(then, differs)}, now {_marks(now, differs)}): resuming would mix "
        "chunks of both; nothing was written. Pass --overwrite to start again from the input as "
        "it is now, or restore the input the run was started from.")


def _marks(identity: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k} {identity[k]}" for k in keys[:3])


def _check_layout(existing: OutputTarget, prepared: PreparedJob) -> None:
    """Refuse resuming an output laid out otherwise than this run writes: its manifest counts
    finished tasks on the stored grid, and read on another grid it would pass unwritten chunks
    for done."""
    sharded = prepared.spec.output.shards is not None
    layout = prepared.layout
    wanted = (tuple(prepared.chunks), tuple(prepared.inner_chunks if sharded else layout.shards),
              tuple(layout.shards) if sharded else None)
    stored = existing.stored_layout()
    if stored != wanted:
        raise OutputExistsError(
            f"Output {public_url(prepared.spec.output.url)} was started with {_grid(*stored)}; this run "
            f"would write {_grid(*wanted)}, so it cannot resume it; nothing was written. Run it with "
            "the settings it was started with (output.chunks, output.shards, inference.tile, "
            "or when the spec gives no tile GEOSEG_TILE/GEOSEG_VOLUME_TILE; GEOSEG_REGION_BYTES), "
            "or pass --overwrite to start it again.")


def _grid(task: tuple[int, ...], chunks: tuple[int, ...], shards: tuple[int, ...] | None) -> str:
    sharding = f", shards {list(shards)}" if shards else ", no shards"
    return f"tasks of {list(task)} (chunks {list(chunks)}{sharding})"


@contextlib.contextmanager
def _key(key: str, *, bands: str | None = None,
         only: type[GeosegError] = GeosegError) -> Iterator[None]:
    """Prefix a geoseg error (of type ``only``) raised inside with the job-spec key it concerns
    (``bands`` for a :class:`BandMismatchError`, when given)."""
    try:
        yield
    except only as exc:
        named = bands if bands is not None and isinstance(exc, BandMismatchError) else key
        if str(exc).startswith((f"{named}:", f"{named}.")):  # it names its key already
            raise
        raise type(exc)(f"{named}: {exc}") from None


def _create(prepared: PreparedJob, overwrite: bool) -> OutputTarget:
    out, model = prepared.spec.output, prepared.model
    return create_output(
        out.url, shape=prepared.source.shape[1:], chunks=prepared.layout.shards,
        inner_chunks=prepared.inner_chunks if out.shards else None, task_region=prepared.chunks,
        georef=prepared.source.georef, class_names=[c.name for c in model.classes],
        class_dtype=prepared.work.class_dtype, nodata_class=prepared.work.nodata_class,
        probabilities=out.probabilities, storage_options=out.storage_options, overwrite=overwrite,
        attrs={"class_colors": [list(c.color) for c in model.classes], "model": model.name,
               "model_sha256": prepared.model_id, "status": "running",
               "job_identity": job_identity(prepared), "n_chunks": prepared.n_tasks,
               "job_identity_parts": identity_parts(prepared),
               "instances_decoding": _decoding(model),
               "input_version": provenance.identity(prepared.source)},
    )


def _decoding(model: Segmenter) -> list[dict[str, Any]]:
    """How a model file's classes make instances (interior, boundary), if it says."""
    return list(model.info.extra.get("instances", [])) if isinstance(model, ModelHeader) else []


def _model_record(prepared: PreparedJob) -> dict[str, Any]:
    model, spec = prepared.model, prepared.spec.model
    if model is None:  # a method whose fit did not end: what the spec asked for
        return {"name": spec.method, "spec": provenance.redact_urls(prepared.spec.redacted()["model"])}
    if isinstance(model, ModelHeader):
        return {"name": model.info.name, "architecture": model.info.architecture,
                "sha256": model.info.sha256, "url": public_url(spec.path or "")}
    fitted = {k: v for k, v in vars(model).items() if isinstance(v, (int, float, str, tuple, list))}
    return {"name": model.name, "spec": provenance.redact_urls(prepared.spec.redacted()["model"]),
            "id": prepared.model_id, "fitted": json.loads(json.dumps(fitted, default=str)),
            "model_files": [{"name": m.info.name, "sha256": m.info.sha256} for m in model_files(model)]}


def _where(spec: JobSpec, scheduler: str | None, cluster: str | None) -> ClusterSpec:
    """The spec's cluster section with ``--cluster`` or ``--scheduler`` applied."""
    if scheduler is not None and cluster is not None:
        raise ClusterConfigError(f"received both --cluster {cluster} and --scheduler {scheduler}; "
                                 "expected one of them (--cluster takes addresses too).")
    return with_cluster(spec.cluster, cluster or scheduler)


def _cluster_info(client: Any, kind: str) -> dict[str, Any]:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {
        "kind": "existing" if kind == "address" else kind,
        "workers": len(workers),
        "threads": sum(w["nthreads"] for w in workers.values()),
    }


def _report(prepared: PreparedJob, stats: list[RegionStats], seconds: float, compute_seconds: float,
            started: str, cluster: dict[str, Any], skipped: int, **measured: Any) -> RunReport:
    facts = provenance.RunFacts(started, seconds, compute_seconds, cluster, skipped,
                                job_identity(prepared), **measured)
    record = provenance.run_record(prepared, stats, facts, _model_record(prepared))
    return RunReport(prepared.spec.output.url, len(stats), record["pixels"], seconds,
                     record["class_counts"], record, skipped)


def _log_started(spec: JobSpec, total: int, skipped: int, dashboard: str | None) -> None:
    """Log the start of a job (and the chunks an earlier run finished, and the dashboard)."""
    logs.log.info("job started", extra={"job": spec.name, "input": public_url(spec.input.url),
                                   "output": public_url(spec.output.url), "chunks_total": total,
                                   "chunks_to_compute": total - skipped})
    if skipped:
        logs.log.info(f"resuming: {skipped} of {total} chunk(s) already done, skipped",
                 extra={"job": spec.name, "chunks_skipped": skipped, "chunks_total": total})
    if dashboard:
        logs.log.info(f"dashboard: {dashboard}", extra={"dashboard": dashboard})


def _log_finished(report: RunReport) -> None:
    """Log the end of a job: output, chunks, time, throughput, run record (and mIoU if scored)."""
    record = report.provenance
    extra = {"job": record["job"].get("name"), "output": record["output"]["url"],
             "chunks_done": report.n_tasks, "chunks_skipped": report.skipped,
             "seconds": round(report.seconds, 3), "mpx_per_s": record["throughput_mpx_per_s"],
             "run_record": record.get("run_record")}
    if "evaluation" in record:
        extra["miou"] = record["evaluation"]["miou"]
    if record.get("tracking", {}).get("mlflow", {}).get("run_id"):
        extra["mlflow_run_id"] = record["tracking"]["mlflow"]["run_id"]
    logs.log.info("job finished", extra=extra)
