"""What geoseg says while it runs: log records as text or JSON lines, progress, the dashboard.

``setup("json")`` (``geoseg --log-format json``, or ``GEOSEG_LOG_FORMAT=json``) makes
every record of the ``geoseg`` loggers one JSON object per line on stderr: ``time``
(UTC, ISO 8601), ``level``, ``logger``, ``message`` and the record's fields (``job``,
``output``, ``chunks_done``, ...). The default, ``text``, is one readable line per
record. Fields never hold credentials: URLs are logged in their public form, and a
field named like a secret (``storage_options``, ``secret``, ``token``, ...) is hidden.

Every record's message and fields pass through :func:`geoseg.core.redact.scrub`, as do the
command line's error messages.

Dask's workers log every failed task ("Compute Failed" and its traceback); geoseg reports the
failure itself, so :func:`quiet_task_errors` (the command line's default, off with
``--debug``) drops those records in this process and in a local cluster's workers.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Self

from geoseg import config
from geoseg.core.redact import HIDE, scrub
from geoseg.core.text import terminal_safe
from geoseg.errors import SettingError

FORMATS = ("text", "json")
ENV = "GEOSEG_LOG_FORMAT"
ROOT = "geoseg"
FOREIGN = ("distributed", "py.warnings")  # other records that reach stderr, as JSON lines too
HIDDEN = frozenset({"storage_options", "secret", "key", "token", "password", "credentials",
                    "access_key", "secret_key", "session_token"})
_STANDARD = (frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
             | {"message", "asctime"})

log = logging.getLogger("geoseg.jobs")


class DropTaskErrors(logging.Filter):
    """Drops the records a Dask worker logs about a failed task (the task's error reaches geoseg,
    which reports it once); CRITICAL records still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


class DropShutdownKills(logging.Filter):
    """Drops a nanny's "Worker process still alive after N seconds, killing" when a local cluster
    closes: everything is written by then, and a worker that has imported torch often takes longer
    than the nanny's grace period to exit on its own, so the kill is routine, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Worker process still alive after")


class DropAbandonedWaits(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" for a wait Dask abandoned: a
    ``TimeoutError`` of a timed wait inside its communication (tornado's ``with_timeout``, as a
    comm's background sender uses) that ran out after closing the cluster had abandoned it, and
    the ``AllExit`` of a gather's inner wait when the command was interrupted (the command says
    so itself). Nothing awaited them, so nothing was lost."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        first = str(record.msg).split("\n", 1)[0]  # "Future (or Task) exception was never ..."
        return not (first.endswith("exception was never retrieved")
                    and (isinstance(error, TimeoutError) or type(error).__name__ == "AllExit"))


class DropInterruptedBroadcasts(logging.Filter):
    """Drops the scheduler's "broadcast to ... failed: CommClosedError" and asyncio's "Future
    exception was never retrieved" for it: a broadcast (a plugin sent to every worker) that
    Ctrl-C or SIGTERM cut short goes on while the interrupted command closes its workers; the
    command says it was interrupted."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        message = str(record.msg)
        return not (message.startswith("broadcast to ") and "CommClosedError" in message
                    or message.split("\n", 1)[0].endswith("exception was never retrieved")
                    and type(error).__name__ == "CommClosedError"
                    and "Scheduler Broadcast" in str(error))


def quiet_interrupted_broadcasts() -> None:
    """Install (once in this process) :class:`DropInterruptedBroadcasts` on
    ``distributed.scheduler`` and ``asyncio``: what an interrupted command calls before it
    closes the local cluster whose scheduler lives in its process."""
    _filtered(("distributed.scheduler", "asyncio"), DropInterruptedBroadcasts, True)


class DropSchedulerLoss(logging.Filter):
    """Drops what a client logs while it loses its scheduler ("Failed to reconnect to
    scheduler", the connection errors of its reconnection attempts): the run's own error
    (:class:`~geoseg.errors.ClusterLostError`) names the scheduler and says what to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or not (
            str(record.msg).startswith("Failed to reconnect to scheduler")
            or "_reconnect" in (record.exc_text or "") or _reconnecting(record))


def _reconnecting(record: logging.LogRecord) -> bool:
    """Whether the record's traceback passes through ``Client._reconnect``."""
    return any(_frames(record, "_reconnect"))


def _frames(record: logging.LogRecord, function: str) -> Iterator[FrameType]:
    """The frames of a function named ``function`` in the record's traceback and in those of
    the exceptions it was raised from (each exception once: a chain may loop)."""
    error, seen = (record.exc_info[1] if record.exc_info else None), set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_name == function:
                yield tb.tb_frame
            tb = tb.tb_next
        error = error.__cause__ or error.__context__


CLIENT_LOGGERS = ("distributed.client", "distributed.utils")  # log_errors records as utils


def quiet_scheduler_loss(on: bool = True) -> None:
    """Drop (``on``) or keep a client's records of losing its scheduler (:class:`DropSchedulerLoss`)."""
    _filtered(CLIENT_LOGGERS, DropSchedulerLoss, on)


def _filtered(names: tuple[str, ...], kind: type[logging.Filter], on: bool) -> None:
    """Loggers ``names`` with one filter of ``kind`` (``on``) or none."""
    for name in names:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, kind)]:
            logger.removeFilter(old)
        if on:
            logger.addFilter(kind())


class DropShuffleNotices(logging.Filter):
    """Drops the scheduler's shuffle plugin notices ("Shuffle ... initialized by task ...",
    "... deactivated due to stimulus ..."), logged as warnings for every peer-to-peer rechunk
    the instance stage runs: routine work, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not str(record.msg).startswith("Shuffle ")


class DropLostHeartbeats(logging.Filter):
    """Drops a local worker's "Failed to communicate with scheduler during heartbeat" and its
    traceback: its scheduler lives in the command's process, so the worker cannot outlive it
    but for the moment the command, interrupted or done, takes to close the cluster, and the
    command says what happened to the run itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to communicate with scheduler during heartbeat")


def quiet_lost_heartbeats() -> None:
    """Install (once in this process) :class:`DropLostHeartbeats` on ``distributed.worker``: what
    a local cluster's worker process runs first (:mod:`geoseg.parallel.local_worker`)."""
    _filtered(("distributed.worker",), DropLostHeartbeats, True)


class DropInterruptedSyncs(logging.Filter):
    """Drops tornado's "Exception in callback" for distributed's cancelling of a client call
    that Ctrl-C or SIGTERM interrupted before it began: ``sync``'s ``cancel`` meets the future
    it never made (a ``NameError`` in distributed 2026.8), so the call goes on uncancelled, as
    before that cancelling existed; the command says it was interrupted, and ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, NameError) and any(
            Path(frame.f_code.co_filename).parts[-2:] == ("distributed", "utils.py")
            for frame in _frames(record, "cancel")))


class DropCancelledStarts(logging.Filter):
    """Drops tornado's "Exception in callback" for a local cluster's background start of its
    workers (``SpecCluster._correct_state_internal``) that failed because Ctrl-C or SIGTERM
    closed the cluster while a worker process was starting ("Nanny failed to start"): the
    command says it was interrupted, and nothing was running yet. Only the starts of the
    clusters it was given (:func:`quiet_cancelled_start`): any other cluster's failure shows."""

    def __init__(self) -> None:
        super().__init__()
        self.clusters: weakref.WeakSet[Any] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(frame.f_locals.get("self") in self.clusters
                       for frame in _frames(record, "_correct_state_internal"))


def quiet_cancelled_start(cluster: Any) -> None:
    """Drop the records of ``cluster``'s cut-short start of workers (:class:`DropCancelledStarts`
    on ``tornado.application``): what closing a cluster interrupted while it starts calls
    (:mod:`geoseg.parallel.cluster`)."""
    logger = logging.getLogger("tornado.application")
    kept = next((f for f in logger.filters if isinstance(f, DropCancelledStarts)), None)
    if kept is None:
        kept = DropCancelledStarts()
        logger.addFilter(kept)
    kept.clusters.add(cluster)


def quiet_cluster_shutdown() -> None:
    """Install (once in this process) :class:`DropShutdownKills` on ``distributed.nanny``,
    :class:`DropAbandonedWaits` on ``asyncio`` and :class:`DropShuffleNotices` on the
    shuffle plugin: what a local cluster, whose scheduler lives here, prints as noise."""
    for name, kind in (("distributed.nanny", DropShutdownKills), ("asyncio", DropAbandonedWaits),
                       ("distributed.shuffle._scheduler_plugin", DropShuffleNotices)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


# their own records only: distributed.worker.memory still logs
TASK_LOGGERS = ("distributed.worker", "distributed.worker.state_machine")
_quiet = {"tasks": False}


def quiet_task_errors(on: bool = True) -> None:
    """Drop (``on``) or keep Dask's worker-side records of failed tasks in this process; also
    what a local cluster started afterwards asks of its workers (:func:`task_errors_quiet`)."""
    _quiet["tasks"] = on
    _filtered(TASK_LOGGERS, DropTaskErrors, on)


def task_errors_quiet() -> bool:
    """Whether :func:`quiet_task_errors` is on in this process."""
    return _quiet["tasks"]


def log_format(value: str | None = None) -> str:
    """``value``, else ``GEOSEG_LOG_FORMAT``, else ``"text"``; checked against :data:`FORMATS`."""
    chosen = value if value is not None else config.log_format() or "text"
    if chosen.lower() not in FORMATS:
        source = "--log-format" if value is not None else ENV
        raise SettingError(f"{source}: received {chosen!r}; expected one of {', '.join(FORMATS)}. "
                           f"Use text (the default) or json (one JSON object per line on stderr).")
    return chosen.lower()


def setup(fmt: str | None = None, level: int | str = logging.INFO, *,
          quiet_tasks: bool = False) -> str:
    """Send the ``geoseg`` loggers' records to stderr as text or JSON lines; returns the format.

    Dask's ``distributed`` records and Python warnings that reach this process's stderr go
    through the same formatter, so that they are scrubbed of credentials too (a library's
    warning may quote a URL with its user info) and, with JSON, stderr stays machine-readable.
    ``quiet_tasks``: :func:`quiet_task_errors`, :func:`quiet_scheduler_loss` and
    :class:`DropInterruptedSyncs`. Calling it again replaces the handlers it
    installed.
    """
    chosen = log_format(fmt)
    quiet_task_errors(quiet_tasks)
    quiet_scheduler_loss(quiet_tasks)  # without --debug, the run's error says it once
    _filtered(("tornado.application",), DropInterruptedSyncs, quiet_tasks)
    _install(logging.getLogger(ROOT), chosen)
    logging.getLogger(ROOT).setLevel(level)
    logging.captureWarnings(True)
    for name in FOREIGN:
        foreign = logging.getLogger(name)
        for handler in [h for h in foreign.handlers if _writes_to_stderr(h)]:
            foreign.removeHandler(handler)
        _install(foreign, chosen)
    return chosen


def _install(logger: logging.Logger, chosen: str) -> None:
    """``logger``'s records to stderr in the ``chosen`` format, replacing a handler of ours."""
    for handler in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        logger.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.propagate = False


def _writes_to_stderr(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stderr, sys.__stderr__)


def current_format() -> str:
    """``"json"`` when :func:`setup` installed JSON lines, else ``"text"``."""
    handlers = [h for h in logging.getLogger(ROOT).handlers if isinstance(h, StderrHandler)]
    return "json" if handlers and isinstance(handlers[-1].formatter, JsonFormatter) else "text"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a progress display may have
    wrapped it), not to the stream of the moment the handler was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # logging assigns it once; the property ignores it
        pass


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries besides the standard ones (``extra=``), secrets hidden."""
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    return {key: HIDE if key.lower() in HIDDEN else scrub(value) if isinstance(value, str) else value
            for key, value in extra.items()}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        data = {"time": stamp, "level": record.levelname, "logger": record.name,
                "message": scrub(record.getMessage()), **fields(record)}
        if record.exc_info:
            data["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL message (field=value, ...)``, leaving out values the message shows."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        message = terminal_safe(scrub(record.getMessage()))
        extra = terminal_safe(", ".join(f"{k}={v}" for k, v in fields(record).items()
                                        if str(v) not in message), one_line=True)
        text = f"{stamp} {record.levelname:<7} {message}"
        text += f" ({extra})" if extra else ""
        if record.exc_info:
            text += "\n" + scrub(self.formatException(record.exc_info))
        return text


def dashboard_link(client: Any) -> str | None:
    """The Dask dashboard of ``client``'s scheduler, or ``None`` when it serves none.

    A local cluster serves one only when bokeh is installed here; for any other
    scheduler, the link its client reports.
    """
    from distributed import LocalCluster

    if isinstance(getattr(client, "cluster", None), LocalCluster) and not _has_bokeh():
        return None
    try:
        if "dashboard" not in client.scheduler_info(n_workers=0).get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a missing link must never fail a job
        return None


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


class Rate:
    """Chunks done out of a total, Mpx/s and the time left, measured from :meth:`start`."""

    def __init__(self) -> None:
        self.total, self.done, self.pixels, self.started = 0, 0, 0, time.perf_counter()

    def start(self, total: int) -> None:
        self.total, self.done, self.pixels, self.started = total, 0, 0, time.perf_counter()

    def add(self, pixels: int) -> None:
        self.done += 1
        self.pixels += pixels

    @property
    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @property
    def mpx_per_s(self) -> float:
        return self.pixels / 1e6 / self.seconds

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the mean pace so far; ``None`` before the first chunk."""
        if not self.done:
            return None
        return self.seconds / self.done * max(self.total - self.done, 0)


class ProgressLog:
    """Job progress as log records (for JSON logs, where a progress bar would garble stderr):
    one record each time another tenth of the chunks is done, and one for the last chunk."""

    def __init__(self, steps: int = 10) -> None:
        self.rate, self.steps, self.next = Rate(), steps, 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, n_tasks: int) -> None:
        self.rate.start(n_tasks)
        self.next = 1

    def done(self, stats: Any) -> None:
        rate = self.rate
        rate.add(stats.pixels)
        if rate.done < rate.total and rate.done * self.steps < self.next * rate.total:
            return
        while self.next * rate.total <= rate.done * self.steps:
            self.next += 1
        eta = rate.eta_s
        log.info("progress", extra={"chunks_done": rate.done, "chunks_total": rate.total,
                                    "mpx_per_s": round(rate.mpx_per_s, 3),
                                    "eta_s": None if eta is None else round(eta, 1)})
