"""``status`` and ``verify``: what an output's manifest says, and whether its chunks still match it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import zarr

from geoseg.budgets import check_tasks
from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, RasterNotFoundError
from geoseg.io import remote
from geoseg.io.integrity import absent_objects
from geoseg.io.output import OutputTarget, chunk_checksum, chunk_key, half_created, output_exists
from geoseg.io.stages import verify_stage
from geoseg.jobs.lease import read_lease
from geoseg.tiling.plan import n_regions, regions

STAGES = ("instances", "edges")  # arrays added once the chunks are complete


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
    mismatched: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # stored bytes that no longer decode
    layout: list[str] = field(default_factory=list)  # array metadata unlike what the run made
    shape: tuple[int, ...] = ()  # of the classes
    task: tuple[int, ...] = ()  # the task region: one or more whole chunks one task wrote

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.undecodable or self.layout)

    def where(self, key: str) -> str:
        """A task region's ``key`` with the pixels it covers: ``1.0 [256:512, 0:256]``; a
        stage's problem (``instances (...)``) as it is."""
        if not all(part.isdigit() for part in key.split(".")):
            return key
        starts = [int(i) * t for i, t in zip(key.split("."), self.task)]
        spans = [f"{s}:{min(s + t, n)}" for s, t, n in zip(starts, self.task, self.shape)]
        return f"{key} [{', '.join(spans)}]"


def _target(url: str, storage_options: dict[str, Any] | None) -> tuple[OutputTarget, dict[str, Any]]:
    target = OutputTarget(url, dict(storage_options or {}))
    attrs = target.attrs() if output_exists(url, storage_options) else {}
    if "job_identity" not in attrs:
        unreadable = _unreadable_group(url, storage_options) if output_exists(url, storage_options) \
            else None
        if unreadable:
            raise CorruptInputError(
                f"{url}: its Zarr group metadata cannot be read ({unreadable}), so whether a "
                "geoseg run wrote it cannot be told. Restore its zarr.json from a copy, or remove "
                "the output yourself and run the job again.")
        raise RasterNotFoundError(f"No geoseg output at {url}: give the URL a `geoseg run` wrote to.")
    return target, attrs


def _unreadable_group(url: str, storage_options: dict[str, Any] | None) -> str | None:
    """Why the group at ``url`` does not open (its metadata broken), or ``None`` when it opens."""
    try:
        zarr.open_group(url, mode="r", **remote.zarr_options(url, storage_options))
    except Exception as exc:  # noqa: BLE001 - any failure to open is what is reported
        return f"{type(exc).__name__}: {str(exc)[:160]}"
    return None


def output_status(url: str, storage_options: dict[str, Any] | None = None) -> OutputStatus:
    """Progress of the run that writes ``url``, from its manifest."""
    target, attrs = _target(url, storage_options)
    stages = {name: attrs[name].get("status", "unknown") for name in STAGES if attrs.get(name)}
    done = 0 if half_created(attrs) else target.count_done()  # its manifest may not exist yet
    n_chunks, state = int(attrs["n_chunks"]), run_state(url, storage_options, attrs)
    if state == "complete" and done != n_chunks:
        state = (f"damaged (marked complete, but its manifest records {done} of {n_chunks} "
                 "task region(s): geoseg verify names the others)")
    return OutputStatus(url, state, n_chunks, done, attrs.get("model"), stages)


def _layout_changes(attrs: dict[str, Any], classes: Any, written: tuple[int, ...]) -> list[str]:
    """What the stored array metadata says unlike the run that made the output: a shape whose
    task grid is not the one the run recorded (an edited or replaced ``zarr.json``), which
    would leave chunks unchecked or check chunks no run wrote."""
    recorded, found = attrs.get("n_chunks"), n_regions(classes.shape, written)
    if recorded is None or found == int(recorded):
        return []
    said = (f"classes: its metadata declares shape {tuple(classes.shape)}, a grid of {found} "
            f"chunk(s), but the run planned {recorded}; the array's zarr.json was changed or "
            "replaced: restore it, or run the job again with --overwrite")
    return [said]


def run_state(url: str, storage_options: dict[str, Any] | None, attrs: dict[str, Any]) -> str:
    """What the output says, checked against its lease: ``running`` only while a run holds a
    live lease on it; a ``running`` output without one was ``interrupted`` (its run was killed
    or lost); ``failed`` with the error's type."""
    status = attrs.get("status", "unknown")
    if status == "failed":
        return f"failed ({attrs.get('error', 'no error recorded')})"
    if status != "running":
        return status
    holder = read_lease(url, storage_options)
    if holder is None or holder.stale():
        return "interrupted (no run holds it now; run the job again to resume)"
    return f"running (lease held by {holder.owner})"


def verify_output(url: str, storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Check that every chunk is recorded and its bytes hash to the recorded sha256."""
    target, attrs = _target(url, storage_options)
    if half_created(attrs):
        raise RasterNotFoundError(
            f"{public_url(url)}: the run that created this output stopped before it was complete, "
            "and no chunk of it is written yet; nothing to verify. Run the job again to write it.")
    group = target.open_group(mode="r")
    classes = group["classes"]
    names = ["classes"] + (["probabilities"] if "probabilities" in group else [])
    written = tuple(attrs.get("task_region") or classes.shards or classes.chunks)  # what one task wrote
    report = VerifyReport(url, 0, shape=tuple(classes.shape), task=written)
    check_tasks(n_regions(classes.shape, written), f"output {public_url(url)}",
                "verify reads and hashes every chunk, one at a time; raise the limit to verify "
                "an output this large (memory stays bounded, time grows with the chunks).")
    report.layout = _layout_changes(attrs, classes, written)
    absent: dict[str, int] | None = None
    for region in regions(classes.shape, written):
        key = chunk_key(region, written)
        recorded = target.checksum(key)
        report.checked += 1
        if recorded is None:
            report.missing.append(key)
            continue
        try:
            actual = chunk_checksum(*(target.read(n, region) for n in names))
        except Exception:  # noqa: BLE001 - any codec's complaint: the stored bytes do not decode
            report.undecodable.append(key)
            continue
        if recorded != actual:
            absent = absent_objects(target) if absent is None else absent  # listed once, if at all
            (report.missing if key in absent else report.mismatched).append(key)
    for stage in STAGES:
        report.mismatched.extend(verify_stage(target, stage))
    return report
