"""``status`` and ``verify``: what an output's manifest says, and whether its chunks still match it.

``verify --repair`` un-marks in the manifest the task regions verify finds missing, changed or
undecodable (and marks a damaged stage so), so that a rerun of the same job, which skips only
what the manifest records, recomputes exactly those: a rerun alone notices lost chunks but not
bytes changed in place, which only verify's full read finds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import zarr

from geoseg.budgets import check_tasks
from geoseg.core.text import whole_number
from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, CorruptOutputError, RasterNotFoundError
from geoseg.io import remote
from geoseg.io.integrity import (
    LAYOUT_FIX,
    SHOWN,
    absent_objects,
    drop_region,
    layout_changed,
    layout_error,
    lost_from_complete,
)
from geoseg.io.output import (
    MANIFEST_DONE,
    MANIFEST_SHA,
    REMOVING,
    OutputTarget,
    being_removed,
    chunk_checksum,
    chunk_key,
    half_created,
    half_deleted,
    output_exists,
)
from geoseg.io.stages import mark_stage, stage_record, verify_stage
from geoseg.jobs.lease import LeaseRecord, read_lease, taken
from geoseg.tiling.plan import n_regions, regions

STAGES = ("instances", "edges")  # arrays added once the chunks are complete
# marked running, and no run holds it: its run was stopped, or failed where it could not even
# record so (a full disk); the run's own log or record says which. What redoes each stage
UNRECORDED = ("no run holds it now: its run was stopped, or failed where it could not record "
              "so, such as on a full disk")
STAGE_LEFT = f"interrupted ({UNRECORDED}; run {{}} again)"
REDONE_BY = {"instances": "geoseg instances, or the job,"}
REPAIRED = "repaired"  # the status verify --repair leaves: not complete, a rerun recomputes
REPAIR_LEASE_SECONDS = 120.0  # renewed while verify --repair reads and edits the output
NOT_REPAIRED = "nothing was repaired (no chunk deleted, no manifest entry changed)"


@dataclass
class OutputStatus:
    url: str
    status: str
    n_chunks: int
    done: int
    model: str | None = None
    stages: dict[str, str] = field(default_factory=dict)  # instances, edges: their status

    @property
    def fraction(self) -> float:
        return self.done / self.n_chunks if self.n_chunks else 1.0


@dataclass
class VerifyReport:
    url: str
    checked: int
    missing: list[str] = field(default_factory=list)  # not recorded, or its stored objects gone
    not_done: list[str] = field(default_factory=list)  # of those, never recorded done: unfinished
    mismatched: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # stored bytes that no longer decode
    layout: list[str] = field(default_factory=list)  # array metadata unlike what the run made
    shape: tuple[int, ...] = ()  # of the classes
    task: tuple[int, ...] = ()  # the task region: one or more whole chunks one task wrote
    stages: dict[str, list[str]] = field(default_factory=dict)  # a stage's problems (also in mismatched)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.undecodable or self.layout)

    @property
    def bad_regions(self) -> list[str]:
        """The task regions (``i.j`` keys) found missing, mismatched or undecodable, sorted."""
        found = {k for k in self.missing + self.mismatched + self.undecodable if _is_region(k)}
        return sorted(found, key=lambda k: tuple(int(i) for i in k.split(".")))

    def where(self, key: str) -> str:
        """A task region's ``key`` with the pixels it covers: ``1.0 [256:512, 0:256]``; a
        stage's problem (``instances (...)``) as it is."""
        if not _is_region(key):
            return key
        starts = [int(i) * t for i, t in zip(key.split("."), self.task)]
        spans = [f"{s}:{min(s + t, n)}" for s, t, n in zip(starts, self.task, self.shape)]
        return f"{key} [{', '.join(spans)}]"


@dataclass
class RepairReport:
    """What ``verify --repair`` found and changed."""

    verify: VerifyReport
    unmarked: list[str] = field(default_factory=list)  # regions the manifest recorded, now not
    unrecorded: list[str] = field(default_factory=list)  # bad regions the manifest never recorded
    stages: dict[str, list[str]] = field(default_factory=dict)  # stages now marked damaged
    status: str | None = None  # the output's status after the repair, if it changed it

    @property
    def changed(self) -> bool:
        return bool(self.unmarked or self.stages or self.status)


def _is_region(key: str) -> bool:
    """Whether ``key`` names a task region (``1.0``) rather than a stage's problem."""
    return all(whole_number(part) is not None for part in key.split("."))


def _target(url: str, storage_options: dict[str, Any] | None) -> tuple[OutputTarget, dict[str, Any]]:
    target = OutputTarget(url, dict(storage_options or {}))
    attrs = target.attrs() if output_exists(url, storage_options) else {}
    if "job_identity" not in attrs:
        raise no_output(url, storage_options, refuse_unreadable_group(url, storage_options))
    return target, attrs


def refuse_unreadable_group(url: str, storage_options: dict[str, Any] | None) -> Exception | None:
    """Refuse an output at ``url`` whose Zarr group metadata cannot be read (truncated,
    garbage): whether a geoseg run wrote it cannot be told, so it is neither some other data
    nor a geoseg output to resume. Returns why opening it failed otherwise (``None``: it opens,
    or nothing is there), for :func:`no_output`."""
    unreadable = _unreadable_group(url, storage_options) if output_exists(url, storage_options) \
        else None
    if unreadable is not None and not _other_data(unreadable):
        raise CorruptInputError(
            f"{url}: its Zarr group metadata cannot be read ({_said(unreadable)}), so whether "
            "a geoseg run wrote it cannot be told. If a run wrote it, restore its zarr.json "
            "from a copy, or (once sure it holds nothing else) remove it and run the job "
            "again.")
    return unreadable


def _other_data(exc: Exception) -> bool:
    """Whether opening the group failed on something else than a group: an array (someone's
    labels), or a place with no group metadata at all (a file)."""
    return isinstance(exc, zarr.errors.ContainsArrayError | zarr.errors.GroupNotFoundError)


def _said(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def no_output(url: str, storage_options: dict[str, Any] | None,
              found: Exception | None = None) -> RasterNotFoundError:
    """The error for a URL with no geoseg output, saying so of a run that holds its lease but
    has not created it yet, or was stopped before it did; ``found``: what opening a group there
    met instead (an array, no group metadata)."""
    said = f"No geoseg output at {public_url(url)}"
    if isinstance(found, zarr.errors.ContainsArrayError):
        said += " (a Zarr array is there, not the group a run writes)"
    elif found is not None:
        said += " (nothing there reads as a Zarr group: if a run wrote it, its zarr.json is gone)"
    try:
        holder = read_lease(url, storage_options)
    except Exception:  # noqa: BLE001 - the lease only adds to the message
        holder = None
    if holder is None:
        return RasterNotFoundError(f"{said}: give the URL a `geoseg run` wrote to.")
    if holder.stale():
        return RasterNotFoundError(
            f"{said}: the run that took its lease ({holder.owner}) stopped before creating it. "
            "Run the job again: the new run takes the lease over.")
    return RasterNotFoundError(
        f"{said} yet: a run holds its lease ({holder.owner}, until {holder.until()}) and has "
        "not created it. Ask again in a moment; if that run was stopped, a new run of the job "
        f"can start after {holder.until()}.")


def _unreadable_group(url: str, storage_options: dict[str, Any] | None) -> Exception | None:
    """Why the group at ``url`` does not open (its metadata broken, or no group there), or
    ``None`` when it opens."""
    try:
        zarr.open_group(url, mode="r", **remote.zarr_options(url, storage_options))
    except Exception as exc:  # noqa: BLE001 - any failure to open is what is reported
        return exc
    return None


def output_status(url: str, storage_options: dict[str, Any] | None = None) -> OutputStatus:
    """Progress of the run that writes ``url``, from its manifest."""
    target, attrs = _target(url, storage_options)
    _refuse_changed_layout(target, attrs, "its progress cannot be told from it")
    stages = {name: attrs[name].get("status", "unknown") for name in STAGES if attrs.get(name)}
    asks = attrs.get("status") != "complete" or "running" in stages.values()
    holder = _live_holder(url, storage_options) if asks else None  # once: one moment's answer
    if "running" in stages.values() and holder is None:
        stages = {name: STAGE_LEFT.format(REDONE_BY.get(name, "the job")) if s == "running" else s
                  for name, s in stages.items()}
    done = (0 if half_created(attrs) or being_removed(attrs)  # its manifest may not exist
            else target.count_done())
    n_chunks, state = int(attrs["n_chunks"]), run_state(attrs, holder)
    if state == "complete" and done != n_chunks:
        state = (f"damaged (marked complete, but its manifest records {done} of {n_chunks} "
                 "task region(s): geoseg verify names the others)")
    elif state == "complete":
        state = _lost_since(target) or state
    return OutputStatus(url, state, n_chunks, done, attrs.get("model"), stages)


def _refuse_changed_layout(target: OutputTarget, attrs: dict[str, Any], nothing: str) -> None:
    """Raise :class:`CorruptOutputError`, saying ``nothing`` (what was not done), for an output
    whose ``classes`` metadata is not what its run wrote: its grid would be counted, and its
    chunks listed, on a layout no run made (an edited shape can declare any number of them)."""
    if half_created(attrs) or being_removed(attrs):  # its arrays may not exist: nothing to check
        return
    changed = layout_changed(target, attrs)
    if changed is not None:
        raise layout_error(target.url, changed, nothing)


def _lost_since(target: OutputTarget) -> str | None:
    """What status says of a complete output whose stored chunks were deleted since its run (a
    rerun recomputes those regions), found by one listing; ``None`` if none was. Bytes changed
    in place are left to verify, a full read that status must not pay."""
    lost = lost_from_complete(target)
    if not lost:
        return None
    more = ", ..." if len(lost) > SHOWN else ""
    return (f"complete per its record, but {len(lost)} task region(s) lost stored chunks since "
            f"({', '.join(lost[:SHOWN])}{more}): run the job again (the same spec, without "
            "--overwrite) to recompute them")


def _live_holder(url: str, storage_options: dict[str, Any] | None) -> LeaseRecord | None:
    """The live lease on the output at ``url`` (a run or command holds it now), else ``None``."""
    holder = read_lease(url, storage_options)
    return holder if holder is not None and not holder.stale() else None


def run_state(attrs: dict[str, Any], holder: LeaseRecord | None) -> str:
    """What the output says, checked against the live lease ``holder`` (``None`` without one):
    ``running`` while a run holds it on an output not complete (a resume, whatever the last
    run left it as); a ``running`` output without one was ``interrupted`` (its run was killed
    or lost); ``failed`` with the error's type."""
    status = attrs.get("status", "unknown")
    if holder is not None and status != "complete":
        return f"running (lease held by {holder.owner})"
    if status == "failed":
        return f"failed ({attrs.get('error', 'no error recorded')})"
    if status == REPAIRED:
        return ("incomplete (geoseg verify --repair un-marked its damaged task regions; run the "
                "job again, the same spec without --overwrite, to recompute them)")
    if status == "running":
        return f"interrupted ({UNRECORDED}; run the job again to resume)"
    if status == REMOVING:
        return ("being deleted (an --overwrite stopped while it deleted this output; run the job "
                "again, which deletes the rest and writes it anew)")
    return status


def verify_output(url: str, storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Check that every chunk is recorded and its bytes hash to the recorded sha256. Array
    metadata unlike what the run recorded (an edited ``zarr.json``) is reported as ``layout``
    instead, and no chunk is judged: its grid is not the one the run wrote."""
    target, attrs = _target(url, storage_options)
    if being_removed(attrs):
        raise RasterNotFoundError(half_deleted(url, "nothing to verify"))
    if half_created(attrs):
        raise RasterNotFoundError(
            f"{public_url(url)}: the run that created this output stopped before it was complete, "
            "and no chunk of it is written yet; nothing to verify. Run the job again to write it.")
    # first: an output that lost its classes or manifest arrays is named, as status names it
    changed = layout_changed(target, attrs)
    group = target.open_group(mode="r")
    classes = group["classes"]
    names = ["classes"] + (["probabilities"] if "probabilities" in group else [])
    written = tuple(attrs.get("task_region") or classes.shards or classes.chunks)  # what one task wrote
    report = VerifyReport(url, 0, shape=tuple(classes.shape), task=written)
    if changed is None:
        _check_regions(target, report, names)
    else:  # its grid is not the run's: chunks checked on it would be judged on a layout no run made
        report.layout = [f"{changed}. {LAYOUT_FIX}."]
    for stage in STAGES:
        problems = verify_stage(target, stage)
        if problems:
            report.stages[stage] = problems
            report.mismatched.extend(problems)
    return report


def _check_regions(target: OutputTarget, report: VerifyReport, names: list[str]) -> None:
    """Hash every task region of ``report``'s grid, one at a time, and file each that is not
    recorded, does not decode or does not match what the manifest records."""
    shape, written = report.shape, report.task
    check_tasks(n_regions(shape, written), f"output {public_url(report.url)}",
                "verify reads and hashes every chunk, one at a time; raise the limit to verify "
                "an output this large (memory stays bounded, time grows with the chunks).")
    absent: dict[str, int] | None = None
    for region in regions(shape, written):
        key = chunk_key(region, written)
        report.checked += 1
        try:
            recorded = target.checksum(key)
        except CorruptOutputError:  # its manifest entry does not decode: --repair un-marks it
            report.undecodable.append(key)
            continue
        if recorded is None:
            report.missing.append(key)
            report.not_done.append(key)
            continue
        try:
            actual = chunk_checksum(*(target.read(n, region) for n in names))
        except Exception:  # noqa: BLE001 - any codec's complaint: the stored bytes do not decode
            report.undecodable.append(key)
            continue
        if recorded != actual:
            absent = absent_objects(target) if absent is None else absent  # listed once, if at all
            (report.missing if key in absent else report.mismatched).append(key)


def repair_output(url: str, storage_options: dict[str, Any] | None = None) -> RepairReport:
    """Verify ``url`` and un-mark what it finds damaged, under the output's lease (no run may
    write it meanwhile): each bad task region's manifest entries are cleared, a damaged stage
    is marked ``damaged``, and a complete output becomes ``repaired`` (not complete), so that a
    rerun of its job recomputes exactly those. An output whose array metadata changed (a layout
    problem) is refused, left as it is (:class:`CorruptOutputError`): its grid cannot be trusted
    to say which entries to clear, nor which stored objects are a region's."""
    target, attrs = _target(url, storage_options)
    _refuse_changed_layout(target, attrs, NOT_REPAIRED)  # before the lease: nothing is changed
    with taken(url, storage_options, seconds=REPAIR_LEASE_SECONDS,
               refused="nothing was repaired. Wait for it to end (geoseg status shows it), then "
                       "run geoseg verify --repair again."):
        report = RepairReport(verify_output(url, storage_options))
        if report.verify.layout:  # changed since the check above
            raise CorruptOutputError(f"{public_url(url)}: {NOT_REPAIRED}: {report.verify.layout[0]}")
        _unmark_regions(target, report)
        _mark_damaged_stages(target, report)
        if report.changed or report.unrecorded:
            _leave_incomplete(target, report)
    return report


def _unmark_regions(target: OutputTarget, report: RepairReport) -> None:
    """Clear the manifest entries (done flag and sha256) of the bad regions it records."""
    bad = report.verify.bad_regions
    if not bad:
        return
    recorded = target.done_keys()
    report.unmarked = [k for k in bad if k in recorded]
    report.unrecorded = [k for k in bad if k not in recorded]
    group = target.open_group()
    done, sha = group[MANIFEST_DONE], group[MANIFEST_SHA]
    for key in report.unmarked:
        index = tuple(int(i) for i in key.split("."))
        done[index] = False  # the fill value: the entry's object is removed, as listings count
        sha[index] = 0
    for key in report.verify.undecodable:  # unreadable anyway; a rerun must not merge into them
        if _is_region(key):
            drop_region(target, key)


def _mark_damaged_stages(target: OutputTarget, report: RepairReport) -> None:
    """Mark each complete stage verify found damaged ``damaged``, keeping its settings: its
    next run (the job's, or ``geoseg instances``) redoes a stage that is not complete."""
    for stage, problems in report.verify.stages.items():
        record = stage_record(target, stage)
        if record.get("status") != "complete":
            continue  # not complete already: its next run redoes it anyway
        mark_stage(target, stage, {**record, "status": "damaged", "damaged": problems[:SHOWN]})
        report.stages[stage] = problems


def _leave_incomplete(target: OutputTarget, report: RepairReport) -> None:
    """A complete output whose regions were un-marked (or never all recorded) is ``repaired``;
    metadata is consolidated again either way, so readers see the new attributes."""
    attrs = target.attrs()
    if attrs.get("status") == "complete" and (report.unmarked or report.unrecorded):
        report.status = REPAIRED
        target.finalize({"status": REPAIRED, "repaired_regions": len(report.unmarked)
                         + len(report.unrecorded)})
    else:
        target.finalize({})
