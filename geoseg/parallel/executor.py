"""The executor of store-to-store jobs: each task reads its window, segments its region, writes its own chunk(s)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import Client, Future, KilledWorker, SchedulerPlugin, as_completed

from geoseg import logs
from geoseg.core.urls import public_url
from geoseg.io import faults
from geoseg.io.output import OutputTarget, chunk_checksum, chunk_key
from geoseg.io.sources import RasterSource
from geoseg.metrics import confusion_matrix
from geoseg.parallel.tasks import RegionWork
from geoseg.tiling.plan import regions

CRASH_CULPRITS = 3  # chunks found killing workers on their own before the others are left to a rerun
# seconds a run ending early waits for its tasks already running to end: short enough for a
# container's grace period after SIGTERM (30 s by default) with the rest of the clean-up
CANCEL_WAIT = 10.0
WATCHED = 1024  # futures :func:`completed` follows at once
STALL_CHECK = 5.0  # seconds without a finished task before a run asks whether it has workers left


@dataclass(frozen=True)
class RegionStats:
    """What a task reports back: never pixels, only counts and timings."""

    region: tuple[slice, ...]
    class_counts: np.ndarray  # per class id, valid pixels only
    pixels: int
    timings: dict[str, float]
    confusion: np.ndarray | None = None  # against the reference labels, when scoring
    empty: bool = False  # no valid input pixel: written as nodata without running the model


@dataclass(frozen=True)
class ReferenceLabels:
    """Label raster on the output's grid; each scoring task reads its own window of it."""

    source: RasterSource
    ignore: tuple[int, ...] = ()  # label values left out (the reference's nodata among them)

    def confusion(self, region: tuple[slice, ...], classes: np.ndarray, valid: np.ndarray,
                  n_classes: int) -> np.ndarray:
        """Confusion matrix of one region: valid output pixels whose label is a scored class."""
        truth = self.source.read(region)[0]
        if truth.dtype == bool:  # a boolean mask: classes 0 and 1
            truth = truth.view(np.uint8)
        keep = valid & (truth >= 0) & ~np.isin(truth, self.ignore)
        return confusion_matrix(truth[keep], classes[keep], n_classes)


def segment_to_store(region: tuple[slice, ...], work: RegionWork, source: RasterSource,
                     target: OutputTarget, n_classes: int, with_probabilities: bool,
                     chunks: tuple[int, ...],
                     reference: ReferenceLabels | None = None) -> RegionStats:
    """Segment one region, write it, then record it in the manifest; the task run on a worker.

    With ``reference``, also score the region against its window of the reference labels."""
    result = work.run(source.read, region, probabilities="float16" if with_probabilities else None)
    t0 = time.perf_counter()
    classes = result.classes
    blocks = [classes]
    target.write("classes", region, classes)
    if result.probabilities is not None:
        blocks.append(result.probabilities)
        target.write("probabilities", region, blocks[-1])
    target.mark_done(chunk_key(region, chunks), chunk_checksum(*blocks))
    timings = {**result.timings, "write": time.perf_counter() - t0}
    counts = np.bincount(classes[result.valid].ravel(), minlength=n_classes)[:n_classes]
    confusion = None
    if reference is not None:
        t1 = time.perf_counter()
        confusion = reference.confusion(region, classes, result.valid, n_classes)
        timings["score"] = time.perf_counter() - t1
    return RegionStats(region, counts, int(classes.size), timings, confusion, empty=result.empty)


def score_stored(region: tuple[slice, ...], target: OutputTarget, reference: ReferenceLabels,
                 n_classes: int, nodata_class: int) -> np.ndarray:
    """Confusion matrix of a chunk an earlier run wrote (a resumed run scores the whole output)."""
    classes = target.read("classes", region)
    return reference.confusion(region, classes, classes != nodata_class, n_classes)


def score_regions(client: Client, target: OutputTarget, reference: ReferenceLabels, *,
                  shape: tuple[int, ...], chunks: tuple[int, ...], keys: Collection[str],
                  n_classes: int, nodata_class: int, worker_wait: float | None = None,
                  computed: int = 0) -> np.ndarray:
    """Sum of :func:`score_stored` over the chunks named by ``keys``, one task per chunk.
    ``worker_wait`` as for :func:`run_regions` (``computed``: the chunks this run wrote, which
    its error counts if every worker leaves now)."""
    todo = [r for r in regions(shape, chunks) if chunk_key(r, chunks) in keys]
    futures = client.map(score_stored, todo, target=target, reference=reference,
                         n_classes=n_classes, nodata_class=nodata_class, pure=False)
    watch = WorkerWatch(client, lambda: computed, computed, worker_wait)
    total = np.zeros((n_classes, n_classes), np.int64)
    try:
        for future in completed(client, futures, watch, watch.every):
            total += future.result()
    except BaseException:
        _cancel(client, futures, public_url(target.url))
        raise
    return total


def completed(client: Client, futures: list[Future], stalled: Callable[[], None] | None = None,
              every: float = STALL_CHECK) -> Iterator[Future]:
    """``futures`` as they finish, on ``client``'s loop (not dask's default client's), at most
    :data:`WATCHED` followed at once, the next taken in as each finishes: ``as_completed``
    follows each future with a coroutine on the client's event loop, which for a terabyte's
    85,849 tasks at once took 7 to 8 s of that loop while the tasks were being submitted and
    about 600 MiB of the client. ``stalled`` is called each time none has finished for
    ``every`` seconds (it may raise): a wait on tasks no worker is left to run never ends."""
    waiting = iter(futures)
    followed = as_completed(list(itertools.islice(waiting, WATCHED)), loop=client.loop)
    quiet_since = time.monotonic()
    while not followed.is_empty():
        if not followed.has_ready():
            _await_one(followed)
            if stalled is not None and time.monotonic() - quiet_since >= every:
                stalled()
                quiet_since = time.monotonic()
            continue
        future = next(followed)
        quiet_since = time.monotonic()
        following = next(waiting, None)
        if following is not None:
            followed.add(following)
        yield future


def _await_one(followed: as_completed) -> None:
    """Until a future of ``followed`` finishes, or a tenth of a second (as its own iterator)."""
    with followed.thread_condition:
        if not followed.has_ready():
            followed.thread_condition.wait(timeout=0.1)


class WorkerWatch:
    """Called when a run's tasks have stalled: raises :class:`~geoseg.errors.ClusterLostError`
    (counting the chunks ``written()`` of ``total``) once the scheduler has had no worker for
    ``GEOSEG_WORKER_WAIT`` seconds, the wait a run gives a cluster before it starts (workers
    that all left mid-run would leave it waiting for good). One question to the scheduler per
    stall: nothing while tasks keep finishing."""

    def __init__(self, client: Client, written: Callable[[], int], total: int,
                 wait: float | None) -> None:
        self.client, self.written, self.total = client, written, total
        self.wait = wait  # None: never asks (a cluster the run started brings workers back)
        self.gone_since: float | None = None

    @property
    def every(self) -> float:
        """Seconds of stall between two questions to the scheduler."""
        return STALL_CHECK if self.wait is None else min(STALL_CHECK, self.wait)

    def __call__(self) -> None:
        if self.wait is None or self.client.nthreads():
            self.gone_since = None
            return
        now = time.monotonic()
        if self.gone_since is None:
            self.gone_since = now
            logs.log.warning("the Dask scheduler has no worker left: waiting up to %g s "
                             "(GEOSEG_WORKER_WAIT) for one to join", self.wait)
        elif now - self.gone_since >= self.wait:
            raise faults.workers_gone(self.client.scheduler.address, self.wait, self.written(),
                                      self.total)


def submit_in_stripes(client: Client, fn: Callable[..., RegionStats], todo: list[tuple[slice, ...]],
                      **kwargs: object) -> list[Future]:
    """``fn`` on every region of ``todo`` (in raster order), each worker preferring one stripe of
    consecutive regions: neighbours then run on one worker, one after the other, and share
    the input chunks their halos reach into (the worker's read cache). The preference is
    loose: an idle worker still takes others' tasks."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if len(workers) < 2 or len(todo) < 2:
        return client.map(fn, todo, pure=False, **kwargs)
    _forget_lost_stripes(client)
    futures: list[Future] = []
    for worker, part in zip(workers, np.array_split(np.arange(len(todo)), len(workers))):
        futures += client.map(fn, [todo[i] for i in part], workers=[worker], allow_other_workers=True,
                              pure=False, **kwargs)
    return futures


FORGET_LOST_STRIPES = "geoseg-forget-lost-stripes"


def forget_lost_stripes_plugin() -> SchedulerPlugin:
    """A scheduler plugin that lets tasks whose preferred workers are all gone run anywhere once a
    worker joins.

    Dask keeps a task that lost every worker it preferred waiting for those very workers, even
    with ``allow_other_workers`` (``bulk_schedule_unrunnable_after_adding_worker`` ignores loose
    restrictions), so a run whose workers all died and were restarted under new addresses would
    wait forever. The class is made here so that it travels by value: the scheduler never
    imports geoseg (nor torch) for it."""

    class ForgetLostStripes(SchedulerPlugin):
        name = FORGET_LOST_STRIPES

        def add_worker(self, scheduler: Any, worker: str) -> None:
            for ts in scheduler.unrunnable:
                if ts.loose_restrictions and ts.worker_restrictions and \
                        not ts.worker_restrictions & scheduler.workers.keys():
                    ts.worker_restrictions = None

    return ForgetLostStripes()


def _forget_lost_stripes(client: Client) -> None:
    """The plugin of :func:`forget_lost_stripes_plugin` on the scheduler, once."""
    with contextlib.suppress(Exception):  # best effort: never fail a job for it
        if FORGET_LOST_STRIPES not in client.run_on_scheduler(_plugin_names()):
            client.register_plugin(forget_lost_stripes_plugin(), name=FORGET_LOST_STRIPES)


def _plugin_names() -> Callable[..., list[str]]:
    def names(dask_scheduler: Any) -> list[str]:  # local: travels by value
        return list(dask_scheduler.plugins)

    return names


def run_regions(client: Client, work: RegionWork, source: RasterSource, target: OutputTarget,
                *, chunks: tuple[int, int], n_classes: int, with_probabilities: bool,
                skip: Collection[str] = frozenset(),
                on_done: Callable[[RegionStats], None] | None = None,
                reference: ReferenceLabels | None = None,
                worker_wait: float | None = None) -> list[RegionStats]:
    """Submit one task per region (``chunks``: what one task writes) not in ``skip`` and wait for
    all of them. When windows reach past their regions (halos, blended windows), tasks read
    through each worker's cache of decoded input chunks. ``worker_wait``: how long a run on an
    existing cluster waits once every worker has left (:class:`WorkerWatch`); ``None`` on a
    cluster the run started, which brings its own workers back (nannies restart them, a batch
    queue starts the jobs it holds, however long they queue)."""
    source = source.for_run()
    if work.windows_reach_past_regions:
        source = source.with_read_cache()
    todo, earlier = [], 0  # earlier: chunks done by earlier runs
    for region in regions(source.shape[1:], chunks):
        if chunk_key(region, chunks) in skip:
            earlier += 1
        else:
            todo.append(region)
    kwargs = {"work": work, "source": source, "target": target, "n_classes": n_classes,
              "chunks": chunks, "reference": reference, "with_probabilities": with_probabilities}
    futures = submit_in_stripes(client, segment_to_store, todo, **kwargs)
    stats: list[RegionStats] = []

    def done(result: RegionStats) -> None:
        stats.append(result)
        if on_done is not None:
            on_done(result)

    def written() -> int:
        return target.count_done() - earlier

    kept = functools.partial(_scheduler_kept, client, written, len(todo))
    watch = WorkerWatch(client, written, len(todo), worker_wait)
    try:
        crashed = _gather(client, kept, dict(zip((f.key for f in futures), todo)), futures, done,
                          watch)
        if crashed:  # tasks that were on a dying worker: the one that killed it, and bystanders
            _retry_alone(client, kept, crashed, done, futures, watch, **kwargs)
    except BaseException:
        _cancel(client, futures, public_url(target.url))
        raise
    return stats


def _cancel(client: Client, futures: list[Future], output: str) -> None:
    """Cancel the tasks of a run that is ending early, and wait (at most :data:`CANCEL_WAIT`
    seconds) for those already running: Dask cannot stop them, and they go on writing their
    chunks and manifest entries on their workers. Once this returns (without saying some still
    run), the run's count of what it wrote is final, and no task of it writes after its lease
    is released. A client that lost its scheduler has nothing to cancel and must not hide why
    the run ended behind its own connection error."""
    if client.status != "running":
        return
    keys, running = {f.key for f in futures}, 0
    deadline = time.monotonic() + CANCEL_WAIT
    with contextlib.suppress(OSError, TimeoutError):
        client.cancel(futures)
        running = _running(client, keys, deadline)
        if running:
            logs.log.info("waiting up to %g s for %d task(s) already running to end",
                          CANCEL_WAIT, running, extra={"output": output})
        while running and time.monotonic() < deadline:
            time.sleep(0.25)
            running = _running(client, keys, deadline)
    if running:
        logs.log.warning("%d task(s) still running %g s after the run stopped (a read that "
                         "never returns?); a rerun recomputes any chunk they leave unmarked",
                         running, CANCEL_WAIT, extra={"output": output})


def _running(client: Client, keys: set[Any], deadline: float) -> int:
    """How many tasks of ``keys`` the workers are running now; the question itself given up at
    ``deadline`` (a worker that cannot be reached, or whose event loop is blocked), which
    raises ``TimeoutError``."""
    left = max(0.2, deadline - time.monotonic())
    running = client.sync(client._run, _executing, on_error="ignore", callback_timeout=left)
    return sum(key in keys for on_worker in running.values() for key in on_worker)


def _executing(dask_worker: Any) -> list[Any]:
    """The keys of the tasks this worker is running now (run on each worker)."""
    return [ts.key for ts in dask_worker.state.executing]


def _gather(client: Client, kept: Callable[[], contextlib.AbstractContextManager[None]],
            region_of: dict[str, tuple[slice, ...]], futures: list[Future],
            done: Callable[[RegionStats], None], watch: WorkerWatch) -> list[tuple[slice, ...]]:
    """Wait for every future; the regions of those that failed because workers died (Dask's
    ``KilledWorker``). A lost scheduler raises :class:`~geoseg.errors.ClusterLostError` (``kept``),
    and so does a cluster left without workers (``watch``)."""
    crashed = []
    with kept():  # the run's client's loop: it need not be dask's default client
        for future in completed(client, futures, watch, watch.every):
            try:
                done(future.result())
                future.release()  # its result is in: a worker dying now does not recompute it
            except KilledWorker:
                crashed.append(region_of[future.key])
    return crashed


@contextlib.contextmanager
def _scheduler_kept(client: Client, written: Callable[[], int], total: int) -> Iterator[None]:
    """A future cancelled because the client lost its scheduler, or a connection error once it
    has lost it, becomes :class:`~geoseg.errors.ClusterLostError`, counting the chunks this run
    wrote from the output's manifest (``written``): results a worker wrote but could no longer
    send back count too."""
    try:
        yield
    except CancelledError as exc:
        if getattr(exc, "reason", None) != "scheduler-connection-lost":
            raise
        raise faults.scheduler_lost(client.scheduler.address, written(), total) from None
    except OSError:
        if client.status == "running":
            raise
        raise faults.scheduler_lost(client.scheduler.address, written(), total) from None


def _retry_alone(client: Client, kept: Callable[[], contextlib.AbstractContextManager[None]],
                 crashed: list[tuple[slice, ...]], done: Callable[[RegionStats], None],
                 submitted: list[Future], watch: WorkerWatch, **kwargs: Any) -> None:
    """Run each region again, one at a time: a worker dying now was killed by that region's own
    task. Raise :class:`~geoseg.errors.WorkerCrashError` naming those (after
    :data:`CRASH_CULPRITS` of them the rest are left to a rerun). Each new future joins
    ``submitted``, the run's, which a run ending early cancels and waits for."""
    culprits, deaths = [], 0
    for i, region in enumerate(crashed):
        try:
            submitted.append(client.submit(segment_to_store, region, pure=False, **kwargs))
            with kept():
                for future in completed(client, submitted[-1:], watch, watch.every):
                    done(future.result())
        except KilledWorker as exc:
            culprits.append((chunk_key(region, kwargs["chunks"]), region))
            deaths = exc.allowed_failures + 1
            if len(culprits) == CRASH_CULPRITS:
                raise faults.crashed_chunks(culprits, deaths, len(crashed) - i - 1) from None
    if culprits:
        raise faults.crashed_chunks(culprits, deaths)
