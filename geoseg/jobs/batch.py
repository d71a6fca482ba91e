"""``geoseg batch``: one job template over many inputs, on one cluster.

A batch spec names its inputs (a glob over any fsspec URL, a list of URLs, or a
STAC-like JSON catalog), a job template (every job section but the URLs) and an
output URL template. Each input becomes a job. An input whose output is complete,
made by the same job from an input with the same identity (see
:mod:`geoseg.jobs.identity`), is skipped; a changed input is reprocessed and its
old output replaced; anything else runs (or resumes). Up to ``concurrency`` jobs
run at once from threads sharing one Dask client; each writes only under a lease
on its output (:mod:`geoseg.jobs.lease`), so two overlapping batch runs never
write the same output. The batch ends with a report: JSON beside the outputs,
and a table. Ctrl-C starts no more jobs and waits for the running ones; a second
Ctrl-C (or SIGTERM, under ``geoseg batch``) stops them once their chunks in flight
are written. The report then says what was done and what was not started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from geoseg.core import jsontext, redact
from geoseg.core.interrupts import Terminated
from geoseg.core.records import now
from geoseg.core.spec import format_errors
from geoseg.core.text import clipped, terminal_safe
from geoseg.core.urls import public_url
from geoseg.errors import BatchSpecError, ClusterConfigError, CorruptOutputError, NestingError
from geoseg.io import mosaic
from geoseg.io.allow import overlapping
from geoseg.io.files import check_creatable, small_file, write_whole
from geoseg.io.output import OutputTarget, being_removed, half_created, output_exists
from geoseg.jobs.batch_spec import BatchInputs, BatchSpec, load_batch
from geoseg.jobs.identity import input_identity
from geoseg.jobs.lease import SUFFIX, Lease, check_name_lengths, new_owner_id, read_lease
from geoseg.jobs.prepared import PreparedJob
from geoseg.jobs.provenance import runs_dir
from geoseg.jobs.runner import job_identity, prepare, run
from geoseg.jobs.spec import InputSpec, JobSpec, OutputSpec
from geoseg.parallel.cluster import connect, with_cluster

STATES = ("done", "skipped", "changed", "failed", "leased")


# ------------------------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class BatchItem:
    """One input of the batch and the output it maps to."""

    url: str
    output: str
    id: str


Source = tuple[str, str | None]  # an input's URL and, for a catalog item, its id


def expand_inputs(inputs: BatchInputs, storage_options: dict[str, Any]) -> list[Source]:
    """``(url, catalog item id or None)`` for every input, in a stable order. Each is one
    file, opened as itself though its name holds ``*``, ``?`` or ``[`` (not as a pattern
    that would find its neighbours too, or nothing: :func:`~geoseg.io.mosaic.take_literally`)."""
    if inputs.glob is not None:
        sources: list[Source] = [(url, None) for url in _glob(inputs.glob, storage_options)]
    elif inputs.urls is not None:
        sources = [(url, None) for url in inputs.urls]
    else:
        sources = _catalog_items(inputs.catalog or "", inputs.asset or "", storage_options)
    mosaic.take_literally([url for url, _ in sources])
    return sources


def _glob(pattern: str, storage_options: dict[str, Any]) -> list[str]:
    fs, path = fsspec.core.url_to_fs(pattern, **storage_options)
    fs.invalidate_cache()
    found = sorted(p for p in fs.glob(path) if not p.endswith(SUFFIX))
    if not found:
        raise BatchSpecError(f"inputs.glob: {public_url(pattern)} matches nothing; "
                             "check the pattern (and job.input.storage_options for remote "
                             "stores).")
    return [fs.unstrip_protocol(p) for p in found] if "://" in pattern else found


def _catalog_items(url: str, asset: str, storage_options: dict[str, Any]) -> list[Source]:
    """Each feature's ``asset`` href (relative hrefs resolved against the catalog's location)."""
    shown = public_url(url)
    data = _read_catalog(url, shown, storage_options)
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list) or not features:
        raise BatchSpecError(f"inputs.catalog: {shown} has no features; {CATALOG_EXPECTED}.")
    return [(_resolve(url, _asset_href(item, i, asset, shown)), str(item["id"]))
            for i, item in enumerate(features)]


CATALOG_EXPECTED = ("expected a STAC FeatureCollection or ItemCollection (a JSON object with a "
                    "non-empty 'features' list)")


def _read_catalog(url: str, shown: str, storage_options: dict[str, Any]) -> Any:
    """The catalog's JSON document; one that is missing or cannot be read as JSON is refused,
    as is one past ``GEOSEG_MAX_METADATA_BYTES`` or a FIFO or device in its place, unread."""
    try:
        data = _catalog_bytes(url, shown, storage_options)
    except FileNotFoundError:
        raise BatchSpecError(f"inputs.catalog: no catalog at {shown}.") from None
    try:
        return jsontext.loads(data)
    except NestingError as exc:
        raise BatchSpecError(f"inputs.catalog: {shown} {exc}; {CATALOG_EXPECTED}. Point "
                             "inputs.catalog at such a file.") from None
    except ValueError as exc:
        raise BatchSpecError(f"inputs.catalog: {shown} is not JSON ({exc}); {CATALOG_EXPECTED}. "
                             "Point inputs.catalog at such a file.") from None


def _catalog_bytes(url: str, shown: str, storage_options: dict[str, Any]) -> bytes:
    """The catalog's bytes, measured before they are read (:func:`~geoseg.io.files.small_file`)."""
    return small_file(url, f"inputs.catalog: {shown}", BatchSpecError,
                      "A catalog that large is more often a wrong path or a hostile file: check "
                      "it, split the items over several batches, or raise the limit.",
                      storage_options)


def _asset_href(item: Any, index: int, asset: str, shown: str) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("id"), (str, int)):
        raise BatchSpecError(f"inputs.catalog: feature {index} of {shown} has no id.")
    assets = item.get("assets") if isinstance(item.get("assets"), dict) else {}
    href = assets.get(asset, {}).get("href") if isinstance(assets.get(asset), dict) else None
    if not isinstance(href, str):
        raise BatchSpecError(f"inputs.asset: item {item['id']!r} of {shown} has no asset "
                             f"{asset!r} with an href; its assets: {sorted(assets) or 'none'}.")
    if not href.strip():  # resolved, it named the catalog's own folder
        raise BatchSpecError(f"inputs.asset: item {item['id']!r} of {shown} has an empty href "
                             f"for asset {asset!r}; expected the URL or path of its raster.")
    return href


def _resolve(catalog: str, href: str) -> str:
    """``href`` as is when absolute, else relative to the catalog's folder."""
    if "://" in href or href.startswith("/"):
        return href
    if "://" in catalog:
        scheme, rest = catalog.split("://", 1)
        return f"{scheme}://{os.path.normpath(os.path.join(os.path.dirname(rest), href))}"
    return os.path.normpath(os.path.join(os.path.dirname(catalog), href))


def _section(cls: type[Any], where: str, **values: Any) -> Any:
    """``cls(**values)``, a section of one input's job, refused as a batch error naming the input
    and the field, rather than as pydantic's own text."""
    try:
        return cls(**values)
    except ValidationError as exc:
        raise BatchSpecError(format_errors(exc, where, cls)) from None


def plan_items(spec: BatchSpec) -> list[BatchItem]:
    """Every input and its output; refuses, before anything runs, two inputs with one output."""
    sources = expand_inputs(spec.inputs, spec.job.input.storage_options)
    template = spec.output.url_template
    items = [BatchItem(url, _output_url(template, url, item_id), item_id or _stem(url))
             for url, item_id in sources]
    outputs = {_same(i.output): i for i in items}
    kept = [i for i in items if _same(i.url) not in outputs or outputs[_same(i.url)] is i]
    _check_collisions(kept)
    return kept


def _output_url(template: str, url: str, item_id: str | None) -> str:
    fields = {"stem": _stem(url), "name": _name(url), "id": item_id or ""}
    for key, value in fields.items():
        unusable = not value or "/" in value or "\\" in value or value in (".", "..")
        if f"{{{key}}}" in template and unusable:
            raise BatchSpecError(f"output.url_template: {{{key}}} of input "
                                 f"{public_url(url)} is {value!r}, which cannot name an "
                                 "output; use another placeholder.")
    return template.format(**fields)


def _name(url: str) -> str:
    """The last segment of ``url``'s path, without user info, query or fragment: a signed URL's
    signature must never reach an output path, a table or a report."""
    return public_url(url).rstrip("/").rsplit("/", 1)[-1]


def _stem(url: str) -> str:
    return PurePosixPath(_name(url)).stem


def _same(url: str) -> str:
    """A form of ``url`` in which two spellings of one local path compare equal."""
    return url.rstrip("/") if "://" in url else os.path.abspath(url)


def _check_collisions(items: list[BatchItem]) -> None:
    by_output: dict[str, list[BatchItem]] = {}
    for item in items:
        if _same(item.output) == _same(item.url):
            shown = public_url(item.url)
            raise BatchSpecError(f"output.url_template maps input {shown} onto itself; choose a "
                                 "template that writes elsewhere (e.g. masks/{stem}.zarr).")
        by_output.setdefault(_same(item.output), []).append(item)
    clashes = [group for group in by_output.values() if len(group) > 1]
    if clashes:
        lines = [f"  - {', '.join(public_url(i.url) for i in g)} -> "
                 f"{public_url(g[0].output)}" for g in clashes[:10]]
        raise BatchSpecError("output.url_template: inputs would write the same output; nothing "
                             "was run. Make the template tell them apart ({stem}, {name}, {id}); "
                             "files of one name in different folders cannot be: batch each folder "
                             "on its own (one glob, and output folder, per batch):\n"
                             + "\n".join(lines))


# ------------------------------------------------------------------------------------- the report


@dataclass
class ItemResult:
    """What happened to one input: ``state`` is one of :data:`STATES`; in a dry run, what would
    happen: one of :func:`decide`'s answers, ``leased`` or ``failed`` (and ``chunks_computed``
    counts the chunks a run would compute). An interrupted batch adds ``not-started`` and
    ``interrupted`` (stopped after ``chunks_computed`` chunks; a rerun resumes it)."""

    input: str
    output: str
    state: str
    seconds: float = 0.0
    chunks_computed: int = 0
    error: str | None = None
    input_identity: str | None = None
    lease_holder: str | None = None


@dataclass
class BatchReport:
    """Every input's result, with the run's id (also its lease owner id) and times."""

    name: str
    run: str
    started: str
    finished: str = ""
    dry_run: bool = False
    items: list[ItemResult] = field(default_factory=list)
    url: str | None = None
    interrupted: str | None = None  # SIGINT (Ctrl-C) or SIGTERM when the batch was stopped

    @property
    def totals(self) -> dict[str, int]:
        counts = Counter(i.state for i in self.items)
        return {"inputs": len(self.items), **{s: counts.get(s, 0) for s in STATES},
                **{s: n for s, n in counts.items() if s not in STATES}}

    @property
    def failed(self) -> bool:
        return any(i.state == "failed" for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.name, "run": self.run, "started": self.started,
                "finished": self.finished, "dry_run": self.dry_run,
                "interrupted": self.interrupted, "totals": self.totals,
                "items": [asdict(i) for i in self.items]}

    def table(self) -> Table:
        """A rich table: one row per input, totals in the caption."""
        kind = "plan" if self.dry_run else "report"
        kind += ", interrupted" if self.interrupted else ""
        caption = ", ".join(f"{k} {v}" for k, v in self.totals.items() if v or k == "inputs")
        table = Table(title=f"batch {self.name} {kind} (run {self.run})", title_justify="left",
                      caption=caption, caption_justify="left")
        for column in ("input", "state", "output", "chunks", "seconds", "error"):
            table.add_column(column, overflow="fold")
        for i in self.items:
            state = Text(i.state, style=_COLOURS.get(i.state, ""))
            safe = [terminal_safe(t, one_line=True) for t in (i.input, i.output,
                                                              clipped(i.error or "", 200))]
            table.add_row(safe[0], state, safe[1], str(i.chunks_computed), f"{i.seconds:.1f}",
                          safe[2])  # file names a glob found may hold escape codes
        return table


_COLOURS = {"done": "green", "changed": "cyan", "failed": "red", "leased": "yellow",
            "interrupted": "magenta", "not-started": "yellow"}


def write_report(report: BatchReport, spec: BatchSpec) -> str:
    """Write the JSON report (see :func:`report_url`); returns where it went."""
    url = report_url(spec, report.run, report.started)
    write_whole(url, json.dumps(report.to_dict(), indent=1), what="Writing the batch report",
                storage_options=spec.job.output.storage_options)
    return url


def report_url(spec: BatchSpec, run_id: str, started: str) -> str:
    """``report`` with ``{run}``/``{started}`` filled in; by default a file per run in the
    outputs' folder (the template's part before its first placeholder)."""
    stamp = re.sub(r"[^0-9T]", "", started.split("+")[0]) + "Z"
    short = run_id.rsplit("-", 1)[-1]
    if spec.report is not None:
        return spec.report.format(run=short, started=stamp)
    head = spec.output.url_template.split("{", 1)[0]
    folder = head.rsplit("/", 1)[0] if "/" in head else "."
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name)
    return f"{folder}/batch-{safe}-{stamp}-{short}.json"


# ---------------------------------------------------------------------------------------- running


@dataclass
class _Check:
    """What the output says about an input: ``decision`` is one of :func:`decide`'s answers."""

    decision: str
    identity: str
    prepared: PreparedJob


def decide(attrs: dict[str, Any] | None, job_id: str, identity: str) -> str:
    """What to do with an input given its output's ``geoseg`` attributes (``None``: no output).

    ``new``, ``foreign`` (not a geoseg output), ``changed`` (another input identity),
    ``other-job`` (another job identity), ``skipped`` (complete, same job and input) or
    ``resume``.
    """
    if attrs is None or being_removed(attrs):  # a stopped --overwrite's: the run recreates it
        return "new"
    if "job_identity" not in attrs:
        return "foreign"  # not a geoseg output: the runner refuses it, naming the fix
    if attrs["job_identity"] != job_id:  # first: a new input never lets one job replace another's
        return "other-job"
    recorded = attrs.get("input_identity")
    if recorded is not None and recorded != identity:
        return "changed"
    if attrs.get("status") == "complete" and recorded == identity:
        return "skipped"
    return "resume"  # unfinished, or finished without a recorded identity: the runner resumes it


class BatchRunner:
    """Runs a planned batch: per input, check, lease, run (or resume, or replace), release."""

    def __init__(self, spec: BatchSpec, *, overwrite: bool = False, cluster: str | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.spec, self.overwrite, self.cluster = spec, overwrite, cluster
        self.log = log or (lambda message: None)
        self.owner = new_owner_id()
        self._secrets = redact.secrets_in(spec.model_dump())  # a spec built in Python too
        self._log_lock = threading.Lock()
        self.interrupted: str | None = None  # SIGINT or SIGTERM, once the batch is interrupted
        self.stopping = threading.Event()  # set: running jobs stop after their chunks in flight

    def run(self, items: list[BatchItem], client: Any) -> list[ItemResult]:
        """Every item, up to ``concurrency`` at once, sharing ``client``."""
        return self._map(lambda item: self._process(item, client), items)

    def plan(self, items: list[BatchItem]) -> list[ItemResult]:
        """What :meth:`run` would do, writing nothing."""
        return self._map(self._plan_one, items)

    def _map(self, work: Callable[[BatchItem], ItemResult],
             items: list[BatchItem]) -> list[ItemResult]:
        """``work`` on every item in a pool of ``concurrency`` threads. Interrupted (Ctrl-C or
        SIGTERM), it starts nothing more and returns once the running jobs have ended: a job
        left running past the batch could write an output after its lease is gone."""
        pool = ThreadPoolExecutor(self.spec.concurrency, thread_name_prefix="geoseg-batch")
        futures = [pool.submit(self._timed, work, item) for item in items]
        try:
            _until_done(futures)
        except KeyboardInterrupt as stop:
            pool.shutdown(wait=False, cancel_futures=True)
            self._wind_down(futures, stop)
        pool.shutdown(wait=True)
        return [self._result(item, "not-started") if future.cancelled() else future.result()
                for future, item in zip(futures, items, strict=True)]

    def _wind_down(self, futures: list[Future[ItemResult]], stop: KeyboardInterrupt) -> None:
        """Wait for the running jobs after a first Ctrl-C; after a second one, or SIGTERM, stop
        them after the chunks they are computing (:meth:`_stop_point`). Outputs resume: a chunk
        is marked done only once it is written. A further Ctrl-C leaves at once."""
        self.interrupted = _signal_name(stop)
        running = [f for f in futures if not f.done()]
        if self.interrupted == "SIGINT":
            try:  # a second Ctrl-C right after the message below still stops the jobs
                self._say(f"interrupted: waiting for {len(running)} running job(s) to finish; "
                          "press Ctrl-C again to stop at once")
                _until_done(running)
                return
            except KeyboardInterrupt as again:
                self.interrupted = _signal_name(again)
                running = [f for f in running if not f.done()]
        self.stopping.set()
        self._say(f"stopping {len(running)} running job(s) as the chunks they are computing "
                  "are written (their leases released; a rerun resumes them)")
        _until_done(running)

    def _stop_point(self) -> None:
        """In a job's thread: raise ``KeyboardInterrupt`` once the batch is stopping, so that the
        job ends as ``geoseg run`` does on Ctrl-C (tasks cancelled, output marked interrupted)."""
        if self.stopping.is_set():
            raise KeyboardInterrupt

    def _say(self, message: str) -> None:
        with self._log_lock:
            self.log(terminal_safe(message, one_line=True))  # names a glob found: escapes, newlines

    def _timed(self, work: Callable[[BatchItem], ItemResult], item: BatchItem) -> ItemResult:
        t0 = time.perf_counter()
        try:
            result = work(item)
        except Exception as exc:  # noqa: BLE001 - one input failing never stops the others
            result = self._failed(item, exc)
        result.seconds = round(time.perf_counter() - t0, 3)
        said = f"{result.state}: {result.input} -> {result.output} ({result.seconds:.1f} s)"
        self._say(said + (f": {result.error}" if result.error else ""))
        return result

    def _failed(self, item: BatchItem, exc: Exception, **facts: Any) -> ItemResult:
        return self._result(item, "failed", error=self._scrub(f"{type(exc).__name__}: {exc}"),
                            **facts)

    def _process(self, item: BatchItem, client: Any) -> ItemResult:
        job = self.job_spec(item)
        check = self._check(job)
        if check.decision == "skipped":
            return self._result(item, "skipped", identity=check.identity)
        if self.stopping.is_set():
            return self._result(item, "not-started", identity=check.identity)
        lease = Lease(item.output, job.output.storage_options, owner=self.owner,
                      seconds=self.spec.lease_seconds, batch=self.spec.name)
        if not lease.acquire(wait=self.spec.wait, poll=min(1.0, max(0.05, self.spec.wait / 20))):
            return self._result(item, "leased", identity=check.identity,
                                holder=lease.holder.owner if lease.holder else None)
        with lease.renewing():
            check = self._check(job, check)  # another run may have finished it meanwhile
            if check.decision == "skipped":
                return self._result(item, "skipped", identity=check.identity)
            return self._run_job(item, job, check, lease, client)

    def _run_job(self, item: BatchItem, job: JobSpec, check: _Check, lease: Lease,
                 client: Any) -> ItemResult:
        replace = check.decision == "changed" or (check.decision == "other-job" and self.overwrite)
        written: list[Any] = []
        to_compute: list[int] = []

        def started(n: int) -> None:
            to_compute.append(n)
            lease.check()
            self._stop_point()
            self._record(job, check.identity)

        def done(region: Any) -> None:
            lease.check()
            written.append(region)
            self._stop_point()

        try:
            report = run(job, cluster=self.cluster, overwrite=replace, client=client,
                         on_start=started, on_done=done, lease=lease)
        except KeyboardInterrupt:  # from _stop_point: the batch is stopping
            computed = self._computed(job, check.prepared.n_tasks, to_compute, len(written))
            return self._result(item, "interrupted", identity=check.identity,
                                chunks=computed, error="stopped; a rerun resumes it")
        except Exception as exc:  # noqa: BLE001 - reported with the chunks it wrote first
            computed = self._computed(job, check.prepared.n_tasks, to_compute, len(written))
            return self._failed(item, exc, identity=check.identity, chunks=computed)
        # "done" even when every chunk was written before (a run stopped after its last one):
        # this run finished the output; an output found complete is "skipped" before any run
        state = "changed" if check.decision == "changed" else "done"
        return self._result(item, state, identity=check.identity, chunks=report.n_tasks)

    @staticmethod
    def _computed(job: JobSpec, n_tasks: int, to_compute: list[int], came_back: int) -> int:
        """Chunks an interrupted run wrote: those its manifest records less those done before
        it started (tasks running when it stopped write theirs after their results stop coming
        back), at least the ``came_back`` counted."""
        if not to_compute:
            return came_back
        with contextlib.suppress(Exception):  # a store that fails: what came back is known
            done = OutputTarget(job.output.url, dict(job.output.storage_options)).count_done()
            return max(came_back, done - (n_tasks - to_compute[0]))
        return came_back

    def _plan_one(self, item: BatchItem) -> ItemResult:
        job = self.job_spec(item)
        check = self._check(job)
        holder = read_lease(item.output, job.output.storage_options)
        if check.decision != "skipped" and holder is not None and not holder.stale():
            return self._result(item, "leased", identity=check.identity, holder=holder.owner)
        return self._result(item, check.decision, identity=check.identity,
                            chunks=self._chunks_to_compute(job, check))

    def _chunks_to_compute(self, job: JobSpec, check: _Check) -> int:
        """How many chunks a run would compute, as far as can be known without running."""
        replaced = check.decision == "other-job" and self.overwrite
        if check.decision in ("new", "changed") or replaced:
            return check.prepared.n_tasks
        if check.decision == "resume":
            target = OutputTarget(job.output.url, dict(job.output.storage_options))
            done = set() if half_created(target.attrs()) else target.done_keys()
            return check.prepared.n_tasks - len(done)
        return 0

    def job_spec(self, item: BatchItem) -> JobSpec:
        """The job for one input: the template with the input's and output's URLs, refused as
        :func:`~geoseg.jobs.runner.run` refuses it (an output inside its input, say), so that a
        dry run says what the run would, and no lease is taken inside an input."""
        template, shown = self.spec.job, terminal_safe(item.id, one_line=True)
        where = f"input {shown}"
        job = JobSpec(
            name=f"{self.spec.name}/{shown}",  # a file's name
            input=_section(InputSpec, f"{where}: input", url=item.url,
                           **template.input.model_dump(exclude={"url"})),
            model=template.model,
            output=_section(OutputSpec, f"{where}: its output (output.url_template)",
                            url=item.output, **template.output.model_dump(exclude={"url"})),
            inference=template.inference, cluster=self.spec.cluster)
        job.check(JobSpec.document)
        check_name_lengths(item.output)  # as the run's lease would: a dry run says so too
        return job

    def _check(self, job: JobSpec, earlier: _Check | None = None) -> _Check:
        """Compare the output with this job and input; reuses an earlier check's preparation."""
        if earlier is None:
            prepared = prepare(job)
            identity = input_identity(job.input.url, job.input.storage_options,
                                      method=self.spec.inputs.identity)
        else:
            prepared, identity = earlier.prepared, earlier.identity
        out = job.output
        try:
            attrs = (OutputTarget(out.url, dict(out.storage_options)).attrs()
                     if output_exists(out.url, out.storage_options) else None)
        except CorruptOutputError:
            if not self.overwrite:
                raise
            return _Check("other-job", identity, prepared)  # damaged: --overwrite replaces it too
        return _Check(decide(attrs, job_identity(prepared), identity), identity, prepared)

    def _record(self, job: JobSpec, identity: str) -> None:
        """Write the input's identity and this run's id into the output being written."""
        group = OutputTarget(job.output.url, dict(job.output.storage_options)).open_group()
        group.attrs["geoseg"] = {**group.attrs["geoseg"], "input_identity": identity,
                                 "batch": {"name": self.spec.name, "run": self.owner}}

    def _result(self, item: BatchItem, state: str, *, identity: str | None = None, chunks: int = 0,
                error: str | None = None, holder: str | None = None) -> ItemResult:
        return ItemResult(public_url(item.url), public_url(item.output),
                          state, chunks_computed=chunks, error=error, input_identity=identity,
                          lease_holder=holder)

    def _scrub(self, message: str) -> str:
        """``message`` without the spec's secrets, and its URLs in their public form."""
        return redact.scrub(message, self._secrets)


def _signal_name(stop: KeyboardInterrupt) -> str:
    """``SIGTERM`` for :class:`~geoseg.core.interrupts.Terminated`, else ``SIGINT`` (Ctrl-C)."""
    return "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"


def _until_done(futures: list[Future[ItemResult]]) -> None:
    """Wait for ``futures``, waking often: a signal that lands on another thread (Dask's, a
    job's) is handled only once the main thread wakes."""
    while wait(futures, timeout=0.2).not_done:
        pass


def _run_on_cluster(runner: BatchRunner, items: list[BatchItem], cluster: Any) -> list[ItemResult]:
    """Every item run on one cluster. Interrupted (Ctrl-C or SIGTERM) while the cluster starts,
    before any job could: every item ``not-started``, so that the batch still writes its report
    (an interrupt once the jobs run is :meth:`BatchRunner._map`'s)."""
    results: list[ItemResult] = []
    try:
        with connect(cluster) as client:
            results = runner.run(items, client)
    except KeyboardInterrupt as stop:
        if results:  # the jobs had all ended; the cluster was closing
            return results
        runner.interrupted = runner.interrupted or _signal_name(stop)
        return [runner._result(item, "not-started") for item in items]
    return results


def _refuse_records_among_data(spec: BatchSpec, items: list[BatchItem], report: str) -> None:
    """Refuse a report or runs folder inside (or holding) an input or output of the batch: its
    files would change an input (the next run would see it changed and replace its output) or
    put into an output what its run never wrote (which --overwrite then refuses to delete)."""
    stores = [(item.url, spec.job.input.storage_options, "input") for item in items]
    stores += [(item.output, spec.job.output.storage_options, "output") for item in items]
    for setting, place in (("report", report), ("runs_dir (GEOSEG_RUNS_DIR)", runs_dir())):
        hit = next((s for s in stores if overlapping(place, None, s[0], s[1])), None)
        if hit is not None:
            raise BatchSpecError(
                f"{setting}: received {public_url(place)}, inside (or holding) the batch's "
                f"{hit[2]} {public_url(hit[0])}; expected a place outside every input and "
                f"output, where its files change no data. Choose another {setting.split()[0]} "
                "location. Nothing was run.")


def run_batch(batch: BatchSpec | str | Path, *, scheduler: str | None = None,
              cluster: str | None = None, overwrite: bool = False, dry_run: bool = False,
              log: Callable[[str], None] | None = None) -> BatchReport:
    """Run (or, with ``dry_run``, plan) a batch; writes the JSON report unless ``dry_run``.

    ``overwrite`` also replaces outputs that a different job spec made (a changed
    input's output is always replaced). All jobs share one cluster: the spec's
    ``cluster`` section, with ``cluster`` (a ``--cluster`` value: local, slurm, pbs,
    kubernetes or an address) or ``scheduler`` (an address) applied; by default a
    local one started here. Interrupted (see :meth:`BatchRunner._wind_down`), the report says
    so (``interrupted``), with the inputs not started.
    """
    if scheduler is not None and cluster is not None:
        raise ClusterConfigError(f"received both --cluster {cluster} and --scheduler {scheduler}; "
                                 "expected one of them (--cluster takes addresses too).")
    spec = batch if isinstance(batch, BatchSpec) else load_batch(batch)
    items = plan_items(spec)
    where = cluster or scheduler
    runner = BatchRunner(spec, overwrite=overwrite, cluster=where, log=log)
    report = BatchReport(spec.name, runner.owner, now(), dry_run=dry_run)
    _refuse_records_among_data(spec, items, report_url(spec, report.run, report.started))
    if not dry_run:  # places that cannot be written are refused now, not at every job
        check_creatable(report_url(spec, report.run, report.started), "report")
        check_creatable(f"{runs_dir()}/run.json", "runs_dir (GEOSEG_RUNS_DIR)")
    if dry_run:
        report.items = runner.plan(items)
    else:
        report.items = _run_on_cluster(runner, items, with_cluster(spec.cluster, where))
    report.interrupted, report.finished = runner.interrupted, now()
    if not dry_run:
        report.url = write_report(report, spec)
    return report
