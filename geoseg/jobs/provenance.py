"""Provenance: how an output was made, stored with it and in a runs folder. Never holds credentials.

A run record holds the job spec (storage options hidden, URLs without user info or
query), the settings in effect once defaults are applied, the model's name and
hash, the identity of the input (and of the reference labels when scoring), the
git commit of the geoseg source tree, package versions, the cluster's size and
dashboard, per-stage timings, throughput, the class histogram and, when the spec
names a reference, the confusion matrix with IoU per class and mIoU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from geoseg import config
from geoseg.core.classes import is_label_dtype
from geoseg.core.records import now, package_versions, plain
from geoseg.core.urls import public_url
from geoseg.errors import EvaluationError, GeosegError
from geoseg.io import remote
from geoseg.io.files import write_whole
from geoseg.io.georef import grid_difference, resample_hint
from geoseg.io.identity import stored_path, tree_digest
from geoseg.io.mosaic import MosaicSource
from geoseg.io.readers import open_source
from geoseg.io.sources import RasterSource, ZarrSource
from geoseg.io.versions import file_stamp, version_marks
from geoseg.metrics import dice_per_class, iou_per_class
from geoseg.parallel.executor import ReferenceLabels, RegionStats

if TYPE_CHECKING:
    from geoseg.jobs.prepared import PreparedJob
    from geoseg.jobs.spec import JobSpec

FORMAT = "geoseg-run/1"
URL_KEYS = ("url", "path", "tracking_uri", "runs_dir")
RUNS_SUBDIR = ("geoseg", "runs")  # under the user's data folder


@dataclass(frozen=True)
class RunFacts:
    """What the runner measured or found out, besides the tasks' own reports."""

    started: str
    seconds: float
    compute_seconds: float
    cluster: dict[str, Any]
    skipped: int
    job_identity: str
    devices: tuple[str, ...] = ()
    dashboard: str | None = None
    stored_confusion: np.ndarray | None = None  # of chunks an earlier run wrote, when scoring
    done_at: tuple[float, ...] = ()  # seconds into the compute when each region came back
    model_load_seconds: float = 0.0  # the workers' model loads, before the compute


def redact_urls(spec: Any) -> Any:
    """Apply :func:`public_url` to every URL-like entry (``url``, ``path``, ``tracking_uri``,
    ``runs_dir``) of a (redacted) spec, at any depth."""
    if isinstance(spec, list):
        return [redact_urls(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    return {key: public_url(value) if key in URL_KEYS and isinstance(value, str)
            else redact_urls(value) for key, value in spec.items()}


def git_state(root: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout whose top folder is ``root`` (default: the one
    holding the ``geoseg`` package); ``None`` when it is not a checkout's top or git is missing.

    ``dirty`` means tracked files differ from the commit (untracked files do not count).
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return None  # not a checkout, or an installed copy inside someone else's repository
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return None
    return {"commit": commit, "dirty": bool(status)}


def _git(root: Path, *args: str) -> str | None:
    """Stripped stdout of ``git -C root ARGS``; ``None`` on any failure (no git, no repo, ...)."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


MAX_LISTED = 100_000  # chunks a Zarr input may declare for its objects to be listed each run


def identity(source: RasterSource) -> dict[str, Any]:
    """Size and version marks (mtime, ETag, ...) of a stored raster from fsspec ``info``.

    For a Zarr array, those of its metadata document (``zarr.json`` or ``.zarray``,
    named in ``object``), and in ``chunks`` a digest of one listing of its objects' names
    and stamps, so that a chunk rewritten in place changes it; an array declaring more
    than :data:`MAX_LISTED` chunks is not listed (too slow to do on each run), which
    ``chunks`` says. For a mosaic, in ``scenes`` a digest of each scene's URL and identity,
    so that a scene replaced, added or removed changes it. Never storage options;
    ``{"unavailable": reason}`` when ``info`` fails.
    """
    if isinstance(source, MosaicSource):
        return _mosaic_identity(source)
    try:
        fs, root = stored_path(source)
        zarr = isinstance(source, ZarrSource)
        doc = next((m for m in ("zarr.json", ".zarray") if zarr and fs.exists(f"{root}/{m}")), None)
        info = fs.info(f"{root}/{doc}" if doc else root)
        chunks = _chunk_listing(fs, root, source) if zarr else None
    except (OSError, ValueError, NotImplementedError) as exc:
        return {"unavailable": type(exc).__name__}
    name = f"{source.array_path}/{doc}".lstrip("/") if doc else None
    found = {"object": name, "size": info.get("size"), **version_marks(info)}
    return found if chunks is None else {**found, "chunks": chunks}


def _mosaic_identity(source: MosaicSource) -> dict[str, Any]:
    scenes = [(public_url(p.source.url), identity(p.source)) for p in source.scenes]
    failed = next((found for _, found in scenes if "unavailable" in found), None)
    if failed is not None:
        return failed
    listed = json.dumps(scenes, sort_keys=True, default=str).encode()
    return {"object": f"{len(scenes)} scenes", "scenes": hashlib.sha256(listed).hexdigest()[:16]}


def _chunk_listing(fs: Any, root: str, source: ZarrSource) -> str:
    declared = math.prod(source.open_array().cdata_shape)
    if declared > MAX_LISTED:
        return f"not listed ({declared:,} chunks declared)"
    try:
        return tree_digest(fs, root,
                           lambda _, info: file_stamp(info) or f"size={info.get('size')}")[:16]
    except Exception:  # aiohttp's 403 or 404 for a folder: the server lists none (else raised)
        if "http" not in remote.fs_protocols(fs):
            raise
        return "not listed (its HTTP server lists no folders)"


def open_reference(spec: JobSpec, source: RasterSource) -> ReferenceLabels | None:
    """The reference labels named by ``evaluate.reference`` (metadata only), checked against the
    input: one band of integer class ids on the input's grid. ``None`` without ``evaluate``."""
    if spec.evaluate is None:
        return None
    ref = spec.evaluate.reference
    try:
        labels = open_source(ref.url, ref.storage_options, variable=ref.variable)
    except GeosegError as exc:
        raise type(exc)(f"evaluate.reference.url: {exc}") from None
    _check_reference(labels, source, public_url(ref.url), public_url(spec.input.url))
    nodata = labels.georef.nodata
    ignore = set(spec.evaluate.ignore)
    if nodata is not None and float(nodata).is_integer():
        ignore.add(int(nodata))
    return ReferenceLabels(labels, tuple(sorted(ignore)))


def _check_reference(labels: RasterSource, source: RasterSource, where: str,
                     input_url: str) -> None:
    if labels.shape[0] != 1:
        raise EvaluationError(
            f"evaluate.reference: {where} has {labels.shape[0]} bands; expected one band of class "
            "ids. Point url (or variable) at a single-band label array.")
    if not is_label_dtype(labels.dtype):
        raise EvaluationError(
            f"evaluate.reference: {where} holds {labels.dtype} values; expected integer class ids "
            "(or booleans). Store the labels as an integer array (e.g. uint8).")
    differs = grid_difference(labels.shape[1:], labels.georef, source.shape[1:], source.georef)
    if differs:
        raise EvaluationError(
            f"evaluate.reference: {where} is not on the pixel grid of the input {input_url} "
            f"({differs}); the labels must lie on the input's pixel grid. Resample or crop "
            f"them to the input first ({resample_hint(labels.georef, source.georef, 'input')}).")


def scores(confusion: np.ndarray, class_names: list[str],
           ignored: tuple[int, ...] = ()) -> dict[str, Any]:
    """Confusion matrix, IoU and Dice per class, mIoU; ``None`` for a class absent from both,
    and for the ``ignored`` labels: no class to score (their pixels were left out of the
    reference, so predicting them counts only as wrong on the other classes)."""
    iou = iou_per_class(confusion, exclude=ignored)
    dice = dice_per_class(confusion)
    dice[[c for c in ignored if 0 <= c < len(dice)]] = np.nan
    present = iou[~np.isnan(iou)]
    return {
        "classes": class_names,
        "pixels_scored": int(confusion.sum()),
        "miou": round(float(present.mean()), 6) if present.size else None,
        "iou": dict(zip(class_names, _finite(iou))),
        "dice": dict(zip(class_names, _finite(dice))),
        "confusion": confusion.astype(np.int64).tolist(),
    }


def _finite(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in values]


def resolved_settings(prepared: PreparedJob, devices: tuple[str, ...]) -> dict[str, Any]:
    """The settings in effect once every default is applied (what the spec left out included)."""
    work = prepared.work
    return {"tile": list(work.tiling.tile), "halo": list(work.tiling.halo),
            "stride": list(work.tiling.stride), "batch_size": work.batch_size,
            "blend": work.tiling.blend, "overlap": work.tiling.overlap,
            "chunks": list(prepared.inner_chunks), "task_region": list(prepared.chunks),
            "nodata_class": work.nodata_class,
            "class_dtype": work.class_dtype, "device": list(devices),
            "torch_threads": config.torch_threads() or None}


def worker_devices(client: Any) -> tuple[str, ...]:
    """Devices the workers run models on (``GEOSEG_DEVICE`` as each worker resolves it)."""
    try:
        return tuple(sorted(set(client.run(config.device).values())))
    except Exception:  # noqa: BLE001 - a worker that cannot answer must not fail a finished run
        return ("unknown",)


def run_record(prepared: PreparedJob, stats: list[RegionStats], facts: RunFacts,
               model: dict[str, Any]) -> dict[str, Any]:
    """The whole run record of a finished run (``model`` as the runner describes it)."""
    spec, names = prepared.spec, [c.name for c in prepared.model.classes]
    counts = np.sum([s.class_counts for s in stats], axis=0) if stats else np.zeros(len(names))
    pixels = int(sum(s.pixels for s in stats))
    kinds = ("read", "infer", "write") + (("score",) if prepared.reference is not None else ())
    stages = {k: round(sum(s.timings.get(k, 0.0) for s in stats), 3) for k in kinds}
    record = {
        "format": FORMAT,
        "status": "complete",
        "geoseg_version": package_versions()["geoseg"],
        "started": facts.started,
        "finished": now(),
        "job": redact_urls(spec.redacted()),
        "job_identity": facts.job_identity,
        "resolved": resolved_settings(prepared, facts.devices),
        "model": model,
        "input": {"url": public_url(spec.input.url), "format": prepared.source.format,
                  "shape": list(prepared.source.shape), "dtype": prepared.source.dtype,
                  "identity": identity(prepared.source)},
        "output": {"url": public_url(spec.output.url)},
        "chunks": {"total": prepared.n_tasks, "computed": len(stats),
                   "skipped_as_done": facts.skipped,
                   "all_nodata": sum(getattr(s, "empty", False) for s in stats)},
        "git": git_state(),
        "cluster": facts.cluster,
        "dashboard": facts.dashboard,
        "packages": package_versions(),
        "timings": {"total_s": round(facts.seconds, 3),
                    "model_load_s": round(facts.model_load_seconds, 3),
                    "compute_s": round(facts.compute_seconds, 3), "task_stage_sums_s": stages},
        "pixels": pixels,
        "throughput_mpx_per_s": (round(pixels / 1e6 / facts.compute_seconds, 4)
                                 if facts.compute_seconds else None),
        "class_counts": {name: int(n) for name, n in zip(names, counts)},
        "regions": region_records(stats, facts.done_at),
    }
    if prepared.reference is not None:
        record["evaluation"] = _evaluation(prepared, stats, facts, names)
    return record


def failure_record(prepared: PreparedJob, *, status: str, error: str, started: str,
                   seconds: float, computed: int, skipped: int, identity: str,
                   model: dict[str, Any]) -> dict[str, Any]:
    """The run record of a run that ended ``failed`` or ``interrupted`` (``error``: what ended
    it), so that the runs folder lists it: what was asked, and how far it got (``computed``
    regions came back, ``skipped`` were done before); no figures, no scores."""
    spec = prepared.spec
    return {
        "format": FORMAT, "status": status, "error": error,
        "geoseg_version": package_versions()["geoseg"], "started": started, "finished": now(),
        "job": redact_urls(spec.redacted()), "job_identity": identity,
        "model": model,
        "input": {"url": public_url(spec.input.url), "format": prepared.source.format,
                  "shape": list(prepared.source.shape), "dtype": prepared.source.dtype},
        "output": {"url": public_url(spec.output.url)},
        "chunks": {"total": prepared.n_tasks, "computed": computed, "skipped_as_done": skipped},
        "git": git_state(), "packages": package_versions(),
        "timings": {"total_s": round(seconds, 3), "compute_s": None},
        "pixels": None, "throughput_mpx_per_s": None, "regions": [],
    }


def region_records(stats: list[RegionStats], done_at: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per computed region, for the run report's maps and throughput: its window, its tasks'
    seconds (read + infer + write ...), when it came back, its pixels and class counts."""
    return [{"window": [[s.region[i].start, s.region[i].stop] for i in range(len(s.region))],
             "seconds": round(sum(s.timings.values()), 4),
             "done_s": done_at[k] if k < len(done_at) else None, "pixels": int(s.pixels),
             "class_counts": [int(n) for n in s.class_counts]} for k, s in enumerate(stats)]


def _evaluation(prepared: PreparedJob, stats: list[RegionStats], facts: RunFacts,
                names: list[str]) -> dict[str, Any]:
    n = len(names)
    confusion = np.zeros((n, n), np.int64)
    for s in stats:
        confusion += s.confusion
    if facts.stored_confusion is not None:
        confusion += facts.stored_confusion
    ref = prepared.spec.evaluate.reference
    return {"reference": {"url": public_url(ref.url), "variable": ref.variable,
                          "identity": identity(prepared.reference.source)},
            "ignored_labels": list(prepared.reference.ignore),
            **scores(confusion, names, prepared.reference.ignore)}


def runs_dir(spec: JobSpec | None = None) -> str:
    """Where run records go: ``runs_dir`` in the spec, else ``GEOSEG_RUNS_DIR``, else the user's
    data folder (``$XDG_DATA_HOME/geoseg/runs``, by default ``~/.local/share/geoseg/runs``):
    never the working directory, so a run leaves nothing where it was started."""
    chosen = spec.runs_dir if spec is not None else None
    return chosen or config.runs_dir() or default_runs_dir()


def default_runs_dir() -> str:
    """The user's runs folder: ``$XDG_DATA_HOME/geoseg/runs``, else ``~/.local/share/geoseg/runs``."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, *RUNS_SUBDIR)


def save_record(record: dict[str, Any], folder: str) -> str:
    """Write ``record`` as a new JSON file in ``folder`` (path or fsspec URL; created if needed),
    named ``<UTC time>-<job name>-<short id>.json``; stores and returns its location."""
    write_record(record, folder, name_record(record, folder))
    return record["run_record"]


def name_record(record: dict[str, Any], folder: str) -> str:
    """Name ``record``'s new file in ``folder`` (its location stored in ``record["run_record"]``)
    before it is written: the output's attributes name it too. Returns its path in ``folder``'s
    filesystem, for :func:`write_record`."""
    name = "{}-{}-{}.json".format(datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
                                  _slug(record["job"].get("name", "job")), uuid.uuid4().hex[:8])
    _, path = fsspec.core.url_to_fs(folder)
    target = f"{path.rstrip('/') or '/'}/{name}"
    local = fsspec.utils.get_protocol(folder) in ("file", "local")
    record["run_record"] = (os.path.abspath(target) if local
                            else public_url(f"{folder.rstrip('/')}/{name}"))
    return target


def write_record(record: dict[str, Any], folder: str, target: str) -> None:
    """Write ``record`` at ``target`` (:func:`name_record`) in ``folder``, a new file that never
    replaces another run's; a store that fails (full, read-only) raises a geoseg error naming
    the runs folder."""
    fs, _ = fsspec.core.url_to_fs(folder)
    write_whole(fs.unstrip_protocol(target) if "://" in folder else target,
                json.dumps(record, indent=1, default=plain),
                what="Writing the run record into runs folder", exclusive=True)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")[:60] or "job"

