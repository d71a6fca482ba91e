"""Runs compared: the run records of a runs folder as one table, and two of them side by side.

A runs folder (``runs_dir`` in a job spec, ``GEOSEG_RUNS_DIR``, else the user's data folder:
:func:`geoseg.jobs.provenance.runs_dir`)
holds one JSON record per run (:mod:`geoseg.jobs.provenance`). The table shows each run's
model, data, the settings that differ between the runs listed (those all runs share say
nothing), its scores and its throughput; :func:`differences` lists every field two records
disagree on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import fsspec
from rich.table import Table

from geoseg.core import jsontext
from geoseg.core.text import clipped, json_kind, terminal_safe, whole_number
from geoseg.errors import BudgetError, EvaluationError, NestingError
from geoseg.io.files import small_file
from geoseg.jobs.provenance import FORMAT, runs_dir

SETTINGS = ("resolved", "job.inference", "job.output.chunks", "job.model", "job.evaluate.ignore")
NOISE = ("started", "finished", "run_record", "status", "error", "regions", "evaluation.confusion", "dashboard",
         "timings.task_stage_sums_s", "chunks.all_nodata", "input.identity.created")
MAX_DEPTH = 32  # a run record nests a few levels; flatten recurses once per level
LISTED = ("started", "status", "error", "throughput_mpx_per_s", "pixels", "job.name", "model.name",
          "model.sha256", "model.id", "input.url", "input.shape", "evaluation.miou")
EXPECTED = f"expected a run record (a JSON object with format {FORMAT}, as geoseg run writes it)"

log = logging.getLogger("geoseg.report")


def default_folder() -> str:
    """Where runs write their records when their spec names no folder."""
    return runs_dir()


def list_runs(folder: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(location, listed)`` of every run record in ``folder``, oldest first: ``listed`` holds
    only what the runs table and its index page show (:func:`listed`), so a folder of thousands
    of runs costs a few KB each, however many regions each record lists. :func:`find_run`
    reads a run's whole record."""
    folder = folder or default_folder()
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.exists(path):
        raise EvaluationError(f"runs folder {folder} does not exist; runs write their records to "
                              "runs_dir in the job spec, else GEOSEG_RUNS_DIR, else "
                              f"{runs_dir()}. Give the folder with --dir.")
    if not fs.isdir(path):
        raise EvaluationError(f"runs folder {folder} is a file, not a folder; expected the folder "
                              "runs write their records to (runs_dir in the job spec, else "
                              f"GEOSEG_RUNS_DIR, else {runs_dir()}). Give the folder with --dir.")
    found = []
    for name in sorted(fs.glob(f"{path.rstrip('/')}/*.json")):
        where = fs.unstrip_protocol(name) if "://" in folder else name
        try:
            record = _read_record(fs, name)
        except EvaluationError as exc:  # one bad file never hides the other runs
            log.warning(f"skipped {where}: {str(exc).rstrip('.')}; move it out of the runs "
                        "folder, or delete it")
            continue
        if record is not None:
            found.append((where, listed(record)))
    return found


def listed(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``record`` the runs table and its index page show (:data:`LISTED`, the
    settings :data:`SETTINGS` compares, storage options left out), in the record's shape. Only
    those paths are walked: a record's per-region lists and confusion matrix are never visited.
    A failed run's error is kept as far as the table shows it."""
    kept = _kept(record, "")
    if isinstance(kept.get("error"), str):
        kept["error"] = clipped(kept["error"], SHOWN_ERROR)
    return kept


_LEFT_OUT = object()  # what _kept returns for a value the listing does not show


def _kept(value: Any, path: str) -> Any:
    """``value``, at dotted ``path``, as far as :func:`listed` keeps it; ``_LEFT_OUT`` if not at
    all. An object on the way to a listed path is kept with its listed members only (its
    settings, as :func:`flatten` names them: a key under a setting starts with it)."""
    if "storage_options" in path:
        return _LEFT_OUT
    whole = path in LISTED or path.startswith(SETTINGS)
    if not isinstance(value, dict):
        return value if whole else _LEFT_OUT
    if not whole and path and not any(w.startswith(f"{path}.") for w in LISTED + SETTINGS):
        return _LEFT_OUT
    out = {}
    for key, inner in value.items():
        kept = _kept(inner, f"{path}.{key}" if path else str(key))
        if kept is not _LEFT_OUT:
            out[key] = kept
    return out


def _read_record(fs: Any, name: str) -> dict[str, Any] | None:
    """The run record in file ``name``; ``None`` for a JSON file of another kind (no run record's
    ``format``). Raises :class:`EvaluationError` for what cannot be read or listed."""
    data = _record_bytes(fs, name)  # its refusals are EvaluationErrors (ValueErrors) already
    try:
        record = jsontext.loads(data.decode("utf-8"))
    except NestingError as exc:
        raise EvaluationError(f"received JSON that {exc}; {EXPECTED}") from None
    except ValueError as exc:  # half written, or not JSON (UnicodeDecodeError too)
        raise EvaluationError(f"received a file that is not JSON ({exc}); {EXPECTED}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None  # another tool's JSON: not a run
    problem = _malformed(record, jsontext.levels(data))
    if problem:
        raise EvaluationError(f"received a run record whose {problem}; {EXPECTED}")
    return record


def _record_bytes(fs: Any, name: str) -> bytes:
    """The bytes of file ``name``, measured before they are read as ``geoseg report`` measures a
    record (:func:`~geoseg.io.files.small_file`): a runs folder may hold anything named
    ``*.json``, and one huge file, or a FIFO that never ends, must not stall the listing. What
    is refused, or cannot be read, raises :class:`EvaluationError` saying so."""
    try:
        return small_file(fs.unstrip_protocol(name), "received something that", EvaluationError,
                          "A run record takes a few KB")
    except BudgetError as exc:  # larger than any run record: left unread
        raise EvaluationError(str(exc)) from None
    except OSError as exc:  # a folder named *.json, a file gone since the listing, no permission
        reason = exc.strerror or type(exc).__name__
        raise EvaluationError(f"received a file that cannot be read ({reason}); "
                              f"{EXPECTED}") from None


def _malformed(record: dict[str, Any], depth: int) -> str | None:
    """What in ``record`` the listing cannot read (a section that is not an object, nesting no
    run record has), or ``None``. ``depth``: how deeply the record's text nests arrays and
    objects (:func:`~geoseg.core.jsontext.levels`, measured on the text in numpy: walking a
    record's every node in Python cost more than all the rest of a listing), which
    :func:`flatten` and :func:`listed` recurse through: at most :data:`MAX_DEPTH` levels."""
    if "job" not in record:
        return "'job' is missing"
    sections = {"job": record["job"], "model": record.get("model", {}),
                "input": record.get("input", {}), "evaluation": record.get("evaluation") or {}}
    for key, value in sections.items():
        if not isinstance(value, dict):
            return f"{key!r} is {json_kind(value)}, not an object"
    if depth > MAX_DEPTH:
        return f"nesting is {depth} levels deep (a run record's is under {MAX_DEPTH})"
    return None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists as JSON text."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value) if isinstance(value, list) else value}


SHOWN_SETTINGS = 6  # differing settings a row of the runs table shows
SHOWN_ERROR = 120  # characters of a failed run's error it shows


def _settings(record: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(record)
    return {k: v for k, v in flat.items() if k.startswith(SETTINGS) and "storage_options" not in k}


def differing(records: Sequence[dict[str, Any]]) -> list[str]:
    """Settings whose values are not the same in every record."""
    flats = [_settings(r) for r in records]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]


def runs_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    """One row per run: when, job, model, data, differing settings, mIoU, throughput."""
    keys = differing([r for _, r in runs])
    table = Table(title=f"{len(runs)} run(s)", title_justify="left",
                  caption=f"settings that differ: {', '.join(keys) or 'none'}",
                  caption_justify="left")
    for column in ("#", "started", "job", "status", "model", "data", "settings", "mIoU", "Mpx/s",
                   "record"):
        table.add_column(column, overflow="fold")
    for i, (where, record) in enumerate(runs):
        flat = _settings(record)
        model = record.get("model", {})
        digest = str(model.get("sha256") or model.get("id") or "")[:10]
        miou = (record.get("evaluation") or {}).get("miou")
        cells = (str(i), str(record.get("started", "")), str(record["job"].get("name")),
                 _status(record), f"{model.get('name')} {digest}", _data(record),
                 _settings_cell(flat, keys), _score(miou), str(record.get("throughput_mpx_per_s")),
                 os.path.basename(where))
        table.add_row(*(terminal_safe(c, one_line=True) for c in cells))  # names from records
    return table


def _settings_cell(flat: dict[str, Any], keys: list[str]) -> str:
    """The run's own values of the settings that differ (those it has: another method's
    parameters are no setting of it), at most :data:`SHOWN_SETTINGS`; ``runs compare`` shows all."""
    shown = [f"{k.split('.', 1)[-1]}={flat[k]}" for k in keys if flat.get(k) is not None]
    more = len(shown) - SHOWN_SETTINGS
    return "; ".join(shown[:SHOWN_SETTINGS]) + (f"; +{more} more (runs compare)" if more > 0 else "")


def _status(record: dict[str, Any]) -> str:
    """How the run ended: ``complete`` (records written before runs said so too), else
    ``failed`` or ``interrupted`` and the start of what ended it (the record holds all)."""
    status = str(record.get("status", "complete"))
    if status == "complete":
        return status
    return f"{status}: {clipped(str(record.get('error', '?')), SHOWN_ERROR)}"


def _score(value: Any) -> str:
    """A score as the table shows it: four decimals, ``-`` when there is none."""
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, int | float) else str(value)


def _data(record: dict[str, Any]) -> str:
    source = record.get("input", {})
    return f"{os.path.basename(str(source.get('url', '')).rstrip('/'))} {source.get('shape')}"


def find_run(key: str, folder: str | None = None) -> tuple[str, dict[str, Any]]:
    """A run by record path, by its number in :func:`list_runs`, or by a unique part of its
    record's file name (its short id, say)."""
    if key.endswith(".json"):
        fs, path = fsspec.core.url_to_fs(key)
        if fs.exists(path):
            return key, _record_at(fs, path, key)
    runs = list_runs(folder)
    if (position := whole_number(key)) is not None:  # a position in geoseg runs' list, not a name
        if position < len(runs):
            return _whole(runs[position][0], key)
        raise EvaluationError(f"run {key}: received a number past the end of the list; "
                              f"{folder or default_folder()} holds {len(runs)} run(s), numbered "
                              f"0 to {len(runs) - 1} by geoseg runs." if runs else
                              f"run {key}: received a number, but {folder or default_folder()} "
                              "holds no run record; give a record path, or --dir with the runs "
                              "folder.")
    hits = [run for run in runs if key in os.path.basename(run[0])]
    if len(hits) != 1:
        names = ", ".join(os.path.basename(w) for w, _ in hits[:5]) or "none"
        raise EvaluationError(f"run {key!r} matches {len(hits)} record(s) in "
                              f"{folder or default_folder()} ({names}); give a record path, a "
                              "number from geoseg runs, or a part of one file name.")
    return _whole(hits[0][0], key)


def _whole(where: str, key: str) -> tuple[str, dict[str, Any]]:
    """The whole record at ``where`` (a location :func:`list_runs` gave), which ``runs compare``
    shows field by field; :func:`list_runs` keeps only what the table shows."""
    fs, path = fsspec.core.url_to_fs(where)
    return where, _record_at(fs, path, key)


def _record_at(fs: Any, path: str, key: str) -> dict[str, Any]:
    """The run record at ``path``, which the user named as ``key``; anything else is refused."""
    fix = "give a run record's path, a number from geoseg runs, or a part of one file name"
    try:
        record = _read_record(fs, path)
    except EvaluationError as exc:
        raise EvaluationError(f"run {key}: {str(exc).rstrip('.')}; {fix}.") from None
    if record is None:
        raise EvaluationError(f"run {key}: received JSON without format {FORMAT}; {EXPECTED}; "
                              f"{fix}.")
    return record


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, a's value, b's value)`` for every field the two records disagree on (times,
    per-region figures and the raw confusion matrix left out)."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(k for k in set(fa) | set(fb) if not k.startswith(NOISE))
    return [(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)]


def compare_table(a: tuple[str, dict[str, Any]], b: tuple[str, dict[str, Any]]) -> Table:
    table = Table(title="runs compared", title_justify="left")
    table.add_column("field")
    table.add_column(f"A {os.path.basename(a[0])}", overflow="fold")
    table.add_column(f"B {os.path.basename(b[0])}", overflow="fold")
    for key, left, right in differences(a[1], b[1]):
        table.add_row(*(terminal_safe(c, one_line=True) for c in (key, _short(left), _short(right))))
    return table


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 120 else text[:117] + "..."
