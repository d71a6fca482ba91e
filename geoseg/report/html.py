"""The run report: one static, self-contained HTML page per run, and an index per batch.

Everything is inside the page (pictures as base64 ``data:`` URIs, styles inline): it opens
from a file, a bucket or a mail, offline. It shows the output's quicklook, the metrics (the
run's own scores against its reference, when it had one), pixels per class and the objects
found (their number, and sizes per class from the object table), the confusion matrix, maps of each
chunk's compute time and main class, throughput over time, and the provenance (spec, model
hash, input identity, versions). Built from the run record (:mod:`geoseg.jobs.provenance`)
and the output it names; nothing is computed again but the quicklook's strided read.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from geoseg.core import jsontext
from geoseg.core.text import brief, clipped, json_kind
from geoseg.core.urls import public_url
from geoseg.errors import BudgetError, EvaluationError
from geoseg.io.files import small_file, write_whole
from geoseg.report.tables import absent_classes

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th:first-child,td:first-child{text-align:left}img{max-width:100%}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}.note{color:#777}
.warn{color:#a00;font-weight:bold}h1,h2,h3,p,td.long{overflow-wrap:anywhere}"""
# characters past which a table's cell may break anywhere (a class, job or package name of
# 10,000 letters made the page 100,000 px wide, the scores off-screen); shorter cells, numbers
# among them, keep their words whole, else a long cell beside them would squeeze them to a letter
# a line
LONG_CELL = 40
# pixels up to which a report draws its quicklook by itself, as `geoseg run` and `geoseg batch`
# write it: the picture reads every chunk of the output and of the input (about 25 s a Gpx on
# two cores); past it, `geoseg report` or `geoseg quicklook` draws it when asked
QUICKLOOK_PIXELS = 10**9
CONFUSION_MAX = 20  # classes the confusion figure draws at most; the run record holds them all
ABSENT_NAMED = 10  # absent classes the metrics note names at most; more it only counts
OBJECT_SIZES_MAX = 10**6  # objects up to which a report reads their sizes from the object table
# task regions up to which a report draws the chunk maps (each a picture of the whole task grid,
# 40 bytes a region in memory): a record's input shape alone, a few bytes, may imply 10^12
MAP_CELLS = 10**6
# a task grid this many times longer than wide is drawn as a strip: maps stretched to the figure
# (one above the other for a row of regions), the legend beside them (square cells drew a 1 x
# 20000 grid a pixel thin, titles over each other, the legend cut)
STRIP_ASPECT = 4
LABEL_CHARS = 40  # characters of a class name a chunk map's legend shows


def load_record(url: str) -> dict[str, Any]:
    """A run record (JSON) from a path or fsspec URL; one that is missing, unreadable or not a
    JSON object raises :class:`EvaluationError` naming it."""
    advice = "give the .json record a run wrote (geoseg runs lists them)."
    try:
        record = jsontext.loads(small_file(
            url, f"The run record {public_url(url)}", EvaluationError,
            "A run record takes a few KB: check the path.").decode("utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"No run record at {public_url(url)}; {advice}") from None
    except (BudgetError, EvaluationError):
        raise  # small_file's own refusal (too large, a FIFO) says what was received
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"Cannot read the run record {public_url(url)} "
                              f"({type(exc).__name__}); {advice}") from None
    except ValueError as exc:
        raise EvaluationError(f"{public_url(url)} is not a run record: not JSON ({exc}); "
                              f"{advice}") from None
    if not isinstance(record, dict):
        raise EvaluationError(f"{public_url(url)} is not a run record: received JSON "
                              f"{type(record).__name__}, expected an object; {advice}")
    missing = [key for key in RECORD_SECTIONS if not isinstance(record.get(key), dict)]
    if missing:
        raise EvaluationError(f"{public_url(url)} is not a geoseg run record (no "
                              f"{', '.join(missing)} section{'s' * (len(missing) > 1)}); give a run record from the runs "
                              "folder (geoseg runs lists them) or an output a geoseg run wrote.")
    for name, value, ok, expected in _checked_fields(record):
        if value is not _ABSENT and not ok(value):
            raise EvaluationError(f"{public_url(url)} is not a run record geoseg wrote: its "
                                  f"{name} is {_shown(value)}, expected {expected}; {advice}")
    return record


def _checked_fields(record: dict[str, Any]) -> Any:
    """Each field a report reads (name, value, check, what is expected): those of
    :data:`RECORD_KINDS`, then each class count, region field and the confusion matrix's shape,
    whose kinds a few KB of edited record can make cost gigabytes or end in an internal error
    (a ragged matrix, a count that is text)."""
    for path, (ok, expected) in RECORD_KINDS.items():
        yield ".".join(path), _field(record, path), ok, expected
    counts = record.get("class_counts")
    for name, n in (counts.items() if isinstance(counts, dict) else ()):
        yield f"class_counts.{name}", n, *_TALLY
    for i, region in enumerate(record.get("regions") or []):
        for key, (ok, expected) in REGION_KINDS.items():
            yield f"regions[{i}].{key}", region.get(key, _MISSING), ok, expected
    evaluation = record.get("evaluation")
    if isinstance(evaluation, dict) and isinstance(evaluation.get("classes"), list):
        n = len(evaluation["classes"])
        yield ("evaluation.confusion", evaluation.get("confusion"), lambda v: _square(v, n),
               f"{n} rows of {n} whole numbers (one per class of evaluation.classes)")


RECORD_SECTIONS = ("job", "input", "output", "timings", "chunks")  # what a report reads of a record
_ABSENT = object()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _whole(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _square(value: Any, n: int) -> bool:
    """Whether ``value`` is an ``n`` x ``n`` matrix of whole numbers (a run's confusion)."""
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(row, list) and len(row) == n and all(map(_whole, row))
                    for row in value))


def _window(value: Any) -> bool:
    """Whether ``value`` is a region's window as a run writes it: 2 or 3 ``[start, stop]``
    pairs of whole numbers, ``0 <= start < stop``."""
    return (isinstance(value, list) and len(value) in (2, 3)
            and all(isinstance(p, list) and len(p) == 2 and _whole(p[0]) and _whole(p[1], p[0] + 1)
                    for p in value))


_MISSING = object()  # a region's field that is not there: refused, unlike an absent section
_TEXT = (lambda v: isinstance(v, str), "a string")
_COUNT = (_whole, "a whole number")
_TALLY = (_whole, "a whole number of pixels, 0 or more")
_SECONDS = (lambda v: _number(v) and v >= 0, "a number of seconds, 0 or more")
# The fields of each region a report reads (the chunk maps, the throughput), all of them written
# by every run
REGION_KINDS: dict[str, tuple[Any, str]] = {
    "window": (_window, "2 or 3 [start, stop] pairs of whole numbers, start below stop"),
    "seconds": _SECONDS, "pixels": _TALLY,
    "done_s": (lambda v: v is None or _number(v), "a number of seconds (null: not known)"),
    "class_counts": (lambda v: isinstance(v, list) and all(map(_whole, v)),
                     "a list of whole numbers of pixels, one per class"),
}
# The fields of a record the report reads, where present, and the kind a run writes there.
RECORD_KINDS: dict[tuple[str, ...], tuple[Any, str]] = {
    ("started",): _TEXT, ("finished",): _TEXT, ("status",): _TEXT, ("output", "url"): _TEXT,
    ("input", "url"): _TEXT,
    ("input", "shape"): (lambda v: isinstance(v, list) and all(map(_whole, v)),
                         "a list of sizes (whole numbers, 0 or more)"),
    ("resolved", "task_region"): (lambda v: v is None or (isinstance(v, list) and len(v) in (2, 3)
                                                          and all(_whole(n, 1) for n in v)),
                                  "2 or 3 sizes in pixels, each 1 or more"),
    ("chunks", "all_nodata"): _COUNT,
    ("pixels",): (lambda v: v is None or _whole(v), "a whole number of pixels (null: none)"),
    ("chunks", "computed"): _COUNT, ("chunks", "total"): _COUNT,
    ("chunks", "skipped_as_done"): _COUNT,
    ("timings", "total_s"): (_number, "a number"),
    ("timings", "compute_s"): (lambda v: v is None or _number(v), "a number (null: not computed)"),
    ("model",): (_mapping, "an object"), ("resolved",): (_mapping, "an object"),
    ("packages",): (_mapping, "an object"), ("class_counts",): (_mapping, "an object"),
    ("instances",): (_mapping, "an object"),
    ("regions",): (lambda v: isinstance(v, list) and all(map(_mapping, v)), "a list of objects"),
    ("evaluation",): (lambda v: v is None or _evaluation(v), "the scores geoseg eval computes"),
}


def _evaluation(value: Any) -> bool:
    """Whether ``value`` holds the scores a report reads as a run's evaluation writes them."""
    return (_mapping(value) and isinstance(value.get("classes"), list)
            and all(isinstance(n, str) for n in value["classes"])
            and all(_mapping(value.get(k)) for k in ("iou", "dice"))
            and isinstance(value.get("confusion"), list) and _number(value.get("pixels_scored"))
            and (value.get("miou") is None or _number(value.get("miou"))))


def _shown(value: Any) -> str:
    """A field's kind and value as a refusal shows them: ``a number 5``, ``null``."""
    if value is _MISSING:
        return "missing"
    return "null" if value is None else f"{json_kind(value)} {brief(value, 40)}"


def _field(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _ABSENT
        value = value[key]
    return value


def report_path(record_url: str) -> str:
    """Where a run's report goes: beside its record, ``.html`` for ``.json``."""
    return record_url[:-5] + ".html" if record_url.endswith(".json") else record_url + ".html"


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(data: str, alt: str, element_id: str = "") -> str:
    ident = f' id="{element_id}"' if element_id else ""
    return f'<img{ident} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(width: float = 6, height: float = 4, ncols: int = 1,
            nrows: int = 1) -> tuple[Any, Any]:
    """A figure drawn without a display (no pyplot state), and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(nrows, ncols)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], element_id: str = "") -> str:
    ident = f' id="{element_id}"' if element_id else ""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(html.escape(_fmt(v)), len(_fmt(v))) for v in row)
                   + "</tr>" for row in rows)
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def _cell(content: str, length: int) -> str:
    """A table cell of HTML ``content`` showing ``length`` characters: one that may break
    anywhere past :data:`LONG_CELL`."""
    return f'<td class="long">{content}</td>' if length > LONG_CELL else f"<td>{content}</td>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_section(record: dict[str, Any], scores: dict[str, Any] | None = None) -> str:
    """The run's figures, and per-class scores (a ``geoseg eval`` result, else the run's own)."""
    rows = [("pixels computed (this run)", record.get("pixels")), ("throughput (Mpx/s)", record.get("throughput_mpx_per_s")),
            ("seconds (total)", record["timings"]["total_s"]),
            ("seconds (loading models on the workers)", record["timings"].get("model_load_s")),
            ("seconds (compute, after the models loaded)", record["timings"]["compute_s"]),
            ("chunks computed", record["chunks"]["computed"]),
            ("chunks skipped as done", record["chunks"]["skipped_as_done"])]
    out = "<h2>Metrics</h2>" + _table(("run", "value"), rows, "run-table")
    if scores is not None:
        per = scores["per_class"]
        absent = absent_classes(per)
        out += _table(("class", "IoU", "Dice/F1", "precision", "recall", "support"),
                      [(n, r["iou"], r["dice"], r["precision"], r["recall"], r["support"])
                       for n, r in per.items() if n not in absent], "metrics-table")
        out += _absent_note(absent)
        out += _table(("summary", "value"), [(k, scores.get(k)) for k in
                                             ("miou", "fwiou", "overall_accuracy", "pixels_scored")])
        return out
    evaluation = record.get("evaluation")
    if evaluation is None:
        return out + '<p class="note">No reference labels: no scores (geoseg eval scores any output).</p>'
    absent = _absent_classes(evaluation["confusion"], evaluation["classes"])
    out += _table(("class", "IoU", "Dice"), [(n, evaluation["iou"][n], evaluation["dice"][n])
                                             for n in evaluation["classes"] if n not in absent],
                  "metrics-table")
    out += _absent_note(absent)
    return out + _table(("summary", "value"), [("mIoU", evaluation["miou"]),
                                               ("pixels scored", evaluation["pixels_scored"])])


def results_section(record: dict[str, Any], options: dict[str, Any], replaced: bool) -> str:
    """What the run found: pixels per class in the regions it computed, and with an instance
    stage its objects, with their sizes per class from the object table (up to
    :data:`OBJECT_SIZES_MAX` objects; not for an output another job has ``replaced`` since)."""
    counts = record.get("class_counts")
    if counts is None:  # a failed or interrupted run's record counts nothing
        return ""
    total = sum(counts.values())
    out = "<h2>Results</h2>" + _table(
        ("class", "pixels", "share"),
        [(name, n, f"{n / total:.2%}" if total else "-") for name, n in counts.items()],
        "classes-table")
    out += _nodata_note(record, total)
    skipped = record["chunks"]["skipped_as_done"]
    if skipped:
        out += (f'<p class="note">Pixels of the {record["chunks"]["computed"]} task regions this '
                f"run computed; the {skipped} it skipped as done are not counted.</p>")
    objects = record.get("instances")
    if not objects:
        return out
    out += _table(("objects", "value"), [("objects (instances)", objects["count"])], "objects-table")
    sizes = None if replaced else _object_sizes(record, objects, options, list(counts))
    return out + (sizes or "")


def _nodata_note(record: dict[str, Any], counted: int) -> str:
    """A line saying how many of the pixels this run computed were the input's no data (no
    class: not in the counts, ``counted`` pixels in all), and how many task regions were no data
    all through; ``""`` when none was. An all-no-data run's page otherwise showed a table of
    zeros and maps that never said why."""
    pixels, empty = record.get("pixels"), record["chunks"].get("all_nodata") or 0
    nodata = pixels - counted if isinstance(pixels, int) and pixels > counted else 0
    if not nodata and not empty:
        return ""
    regions = (f"; {empty} of the {record['chunks']['computed']} task regions computed were no "
               "data all through" if empty else "")
    share = f" ({nodata / pixels:.2%})" if nodata else ""
    kind = "warn" if nodata == pixels else "note"
    return (f'<p class="{kind}" id="nodata-note">{nodata} of the {pixels} pixels this run computed'
            f"{share} are the input's no data: no class, not counted above{regions}.</p>")


def _object_sizes(record: dict[str, Any], objects: dict[str, Any], options: dict[str, Any],
                  names: Sequence[str]) -> str | None:
    """Per class: objects and their areas in pixels (total, median, largest), from the output's
    object table; ``None`` without one, with more than :data:`OBJECT_SIZES_MAX` objects, or with
    another number of rows than the record counts (its footer says, before any row is read)."""
    import pyarrow.parquet as pq

    if "instances.parquet" not in objects.get("files", {}) or objects["count"] > OBJECT_SIZES_MAX:
        return None
    url = record["output"]["url"].rstrip("/") + "/instances.parquet"
    try:
        with fsspec.open(url, "rb", **options) as f, pq.ParquetFile(f) as parquet:
            if parquet.metadata.num_rows != objects["count"]:
                return None  # not the table the run wrote: a few KB may hold 1e8 rows
            table = parquet.read(columns=["class", "area_px"])
            classes, areas = (table.column(c).to_numpy() for c in ("class", "area_px"))
    except Exception:  # noqa: BLE001 - gone, or unreadable: the count above stands
        return None
    rows = [(names[c] if 0 <= c < len(names) else str(c), int(np.sum(classes == c)),
             int(areas[classes == c].sum()), float(np.median(areas[classes == c])),
             int(areas[classes == c].max())) for c in np.unique(classes)]
    return _table(("class", "objects", "area (px)", "median area (px)", "largest (px)"), rows,
                  "object-sizes-table")


def _totals(matrix: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Reference (row sums) and predicted (column sums) pixels of each class of a confusion
    matrix."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2:  # no classes
        counts = counts.reshape(0, 0)
    return counts.sum(1), counts.sum(0)


def present_classes(matrix: Sequence[Sequence[int]]) -> np.ndarray:
    """The ids of the classes in the reference or the prediction (a nonzero row or column)."""
    ref, pred = _totals(matrix)
    return np.flatnonzero((ref > 0) | (pred > 0))


def _absent_classes(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> list[str]:
    """The names of the classes in neither the reference nor the prediction; none when the
    matrix does not match the names."""
    if len(matrix) != len(names):
        return []
    present = set(present_classes(matrix).tolist())
    return [n for i, n in enumerate(names) if i not in present]


def _absent_note(names: Sequence[str]) -> str:
    """One line after the scores: how many classes were in neither the reference nor the
    prediction (not listed), and which when they are few (:data:`ABSENT_NAMED`)."""
    if not names:
        return ""
    which = f": {', '.join(names)}" if len(names) <= ABSENT_NAMED else ""
    return (f'<p class="note" id="absent-classes">{len(names)} class{"es" * (len(names) > 1)} '
            f"in neither the reference nor the prediction, not listed{html.escape(which)}.</p>")


def drawn_classes(matrix: Sequence[Sequence[int]], most: int = CONFUSION_MAX) -> tuple[int, ...]:
    """The class ids the confusion figure draws, in id order: those in the reference or the
    prediction (:func:`present_classes`); of more than ``most``, the ``most`` with the most
    reference pixels, then predicted pixels (ties in id order)."""
    ref, pred = _totals(matrix)
    present = present_classes(matrix)
    if len(present) > most:
        order = np.lexsort((present, -pred[present], -ref[present]))  # last key first
        present = np.sort(present[order[:most]])
    return tuple(int(i) for i in present)


def confusion_section(matrix: Sequence[Sequence[int]], names: Sequence[str],
                      whole: str = "the run record (evaluation, confusion)") -> str:
    """The confusion matrix's heading, figure (:func:`confusion_figure`) and, when it leaves
    classes out, a line under it saying how many, and that the ``whole`` matrix is elsewhere."""
    shown = drawn_classes(matrix)
    if not shown:
        return ('<h2>Confusion matrix</h2><p class="note">No pixels scored: no confusion '
                "matrix.</p>")
    out = "<h2>Confusion matrix</h2>" + _img(confusion_figure(matrix, names, shown), "confusion")
    left = len(names) - len(shown)
    if not left:
        return out
    absent = len(names) - len(present_classes(matrix))
    why = [f"{absent} in neither the reference nor the prediction" * bool(absent),
           f"{left - absent} with fewer pixels than those drawn" * bool(left - absent)]
    return (out + f'<p class="note" id="confusion-note">{len(shown)} of the {len(names)} classes '
            f"drawn; {left} class{'es' * (left > 1)} left out ({', '.join(filter(None, why))}). "
            f"The full matrix is in {html.escape(whole)}.</p>")


def confusion_figure(matrix: Sequence[Sequence[int]], names: Sequence[str],
                     shown: Sequence[int] | None = None) -> str:
    """Heatmap of the row-normalised confusion matrix (reference rows), counts written in, of
    the classes ``shown`` (by default :func:`drawn_classes`: at most :data:`CONFUSION_MAX`);
    a row's shares are of all its reference pixels, those predicted as classes not drawn
    included."""
    from geoseg.report.quicklook import literal

    counts = np.asarray(matrix, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.nan_to_num(counts / counts.sum(1, keepdims=True))
    ids = list(drawn_classes(matrix) if shown is None else shown)
    share, names = share[np.ix_(ids, ids)], [literal(names[i]) for i in ids]
    n = len(names)
    fig, ax = _figure(1.2 + 0.7 * n, 1 + 0.6 * n)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the reference class")
    fig.tight_layout()
    return _png(fig)


def task_grid(record: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The run's task grid: the size of a task region and the regions along each axis, from
    the record's task region and input shape (a record without them: from its regions' extents
    and ends). ``None`` without regions (or for volumes)."""
    regions = record.get("regions") or []
    if not regions or len(regions[0]["window"]) != 2:
        return None
    windows = [r["window"] for r in regions]
    ends = [max(w[axis][1] for w in windows) for axis in (0, 1)]
    size = (record.get("resolved") or {}).get("task_region") or \
        [max(w[axis][1] - w[axis][0] for w in windows) for axis in (0, 1)]
    shape = ((record.get("input") or {}).get("shape") or ends)[-2:]
    n = [-(-max(s, e) // c) for s, e, c in zip(shape, ends, size)]
    return (int(size[0]), int(size[1])), (int(n[0]), int(n[1]))


def chunk_maps(regions: list[dict[str, Any]], names: Sequence[str],
               colors: Sequence[Sequence[int]] | None,
               grid: tuple[tuple[int, int], tuple[int, int]]) -> str:
    """Two maps of the whole task grid (``grid``: :func:`task_grid`), axes labelled with the
    regions' real row and column: seconds per region, and each region's main class (its share
    as the colour's strength); regions this run did not compute (done by an earlier run of a
    resumed output) hatched."""
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import MaxNLocator

    from geoseg.report.quicklook import class_colors

    (height, width), (rows, cols) = grid
    seconds = np.full((rows, cols), np.nan)
    main = np.zeros((rows, cols, 4))  # transparent where not computed: the hatching shows
    palette = class_colors(colors, len(names)) / 255
    for r in regions:
        i, j = r["window"][0][0] // height, r["window"][1][0] // width
        seconds[i, j] = r["seconds"]
        main[i, j] = 1
        counts = np.asarray(r["class_counts"], dtype=np.float64)
        if counts.sum() and counts.argmax() < len(palette):  # a class the record names
            k = int(counts.argmax())
            main[i, j, :3] = 1 - (1 - palette[k]) * counts[k] / counts.sum()
    strip = max(rows, cols) > STRIP_ASPECT * min(rows, cols)
    wide = strip and cols > rows  # one map above the other, each the figure's width
    fig, (left, right) = _figure(11, 7 if wide else 4.5, ncols=1 if wide else 2,
                                 nrows=2 if wide else 1)
    aspect = "auto" if strip else None  # square cells would draw a strip a pixel thin
    shown = left.imshow(seconds, cmap="viridis", zorder=1, aspect=aspect)
    right.imshow(main, zorder=1, aspect=aspect)
    for ax in (left, right):
        ax.add_patch(Rectangle((-0.5, -0.5), cols, rows, hatch="///", fill=False,
                               edgecolor="#bbb", linewidth=0, zorder=0))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("chunk column")
        ax.set_ylabel("chunk row")
    fig.colorbar(shown, ax=left, label="seconds (read + infer + write)")
    left.set_title("compute time per chunk")
    right.set_title("main class per chunk (paler: a smaller share)")
    handles = _map_legend(regions, names, palette)
    for handle in handles:  # the page's tables name them in full
        handle.set_label(clipped(handle.get_label(), LABEL_CHARS))
    if len(regions) < rows * cols:
        handles.append(Patch(hatch="///", fill=False, edgecolor="#bbb",
                             label="not computed by this run"))
    if handles and strip:  # beside both maps, from the figure's top: its whole height
        fig.legend(handles=handles, loc="upper right", fontsize=8)
        fig.tight_layout(rect=(0, 0, 0.7, 1))
        return _png(fig)
    if handles:  # some chunk has a main class, or some was not computed
        right.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return _png(fig)


def chunks_section(record: dict[str, Any], colors: Sequence[Sequence[int]] | None) -> str:
    """The chunk maps (:func:`chunk_maps`) and a line saying how many of the task grid's
    regions this run computed; ``""`` without regions (or for volumes)."""
    grid = task_grid(record)
    if grid is None:
        return ""
    regions = record["regions"]
    (rows, cols), computed = grid[1], len(regions)
    names = list(record.get("class_counts", {}))
    rest = rows * cols - computed
    said = f"{rows} x {cols} task regions; {computed} computed by this run" + (
        f", {rest} not (done before this run, or not recorded): hatched" if rest else "")
    if rows * cols > MAP_CELLS:
        said = (f"{rows} x {cols} task regions, {computed} computed by this run: no chunk maps, "
                f"more than the {MAP_CELLS:,} regions a report draws (the run record lists "
                "each computed region's window, seconds and class counts)")
        return f'<h2>Chunks</h2><p class="note" id="chunk-note">{html.escape(said)}.</p>'
    return ("<h2>Chunks</h2>" + _img(chunk_maps(regions, names, colors, grid), "chunk maps",
                                     "chunk-maps")
            + f'<p class="note" id="chunk-note">{html.escape(said)}.</p>')


def main_classes(regions: list[dict[str, Any]], n: int) -> np.ndarray:
    """How many chunks each of the ``n`` classes is the main class of (the classes the chunk
    map shows)."""
    mains = [int(np.argmax(r["class_counts"])) for r in regions if sum(r["class_counts"])]
    return np.bincount([k for k in mains if k < n], minlength=n)[:n]


def _map_legend(regions: list[dict[str, Any]], names: Sequence[str],
                palette: np.ndarray) -> list[Any]:
    """The chunk map's legend: the classes it shows, ranked as the quicklook's legend
    (:func:`geoseg.report.quicklook.ranked`: in id order; of more than
    :data:`~geoseg.report.quicklook.LEGEND_MAX`, the main class of the most chunks first), then
    one uncoloured entry counting the others."""
    from geoseg.report.quicklook import legend_handles, ranked

    shown, more = ranked(main_classes(regions, len(names)))
    return legend_handles(shown, more, names, palette)


def throughput_figure(regions: list[dict[str, Any]]) -> str | None:
    """Megapixels done against seconds into the compute, and the rate between returns."""
    done = sorted((r["done_s"], r["pixels"]) for r in regions if r.get("done_s") is not None)
    if not done:
        return None
    t = np.array([0.0] + [d[0] for d in done])
    mpx = np.cumsum([0.0] + [d[1] / 1e6 for d in done])
    fig, ax = _figure(7, 3.5)
    ax.plot(t, mpx, drawstyle="steps-post")
    ax.set_xlabel("seconds into the compute")
    ax.set_ylabel("Mpx written")
    ax.set_title(f"{mpx[-1]:.1f} Mpx in {t[-1]:.1f} s")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def provenance_section(record: dict[str, Any]) -> str:
    """Model, input identity, git, versions and the job spec as the record holds them."""
    model = record.get("model", {})
    rows = [("model", model.get("name")), ("model hash", model.get("sha256") or model.get("id")),
            ("job identity", record.get("job_identity")), ("input", record["input"]["url"]),
            ("input identity", json.dumps(record["input"].get("identity"))),
            ("output", record["output"]["url"]), ("git", json.dumps(record.get("git"))),
            ("cluster", json.dumps(record.get("cluster"))), ("run record", record.get("run_record"))]
    versions = record.get("packages", {})
    return ("<h2>Provenance</h2>" + _table(("what", "value"), rows, "provenance-table")
            + _table(("package", "version"), sorted(versions.items()))
            + "<h3>Job spec</h3><pre>" + html.escape(json.dumps(record.get("job"), indent=1))
            + "</pre><h3>Settings in effect</h3><pre>"
            + html.escape(json.dumps(record.get("resolved"), indent=1)) + "</pre>")


def _quicklook(record: dict[str, Any], options: dict[str, Any],
               input_options: dict[str, Any] | None,
               most: int | None = None) -> tuple[str | None, str]:
    from geoseg.report.quicklook import build, render

    pixels = math.prod((record.get("input") or {}).get("shape", [0])[1:])
    if most is not None and pixels > most:
        url = record["output"]["url"]
        return None, (f"quicklook not drawn: the output holds {pixels:.3g} pixels, more than the "
                      f"{most:.3g} a run's report reads back by itself (the picture reads every "
                      f"chunk of the output and of the input). Draw it with geoseg report "
                      f"{record.get('run_record', 'RUN.json')}, or geoseg quicklook {url} "
                      "quicklook.png.")
    try:
        look = build(record["output"]["url"], size=800, storage_options=options,
                     image_options=input_options, check=False)  # as its run just left it
        return base64.b64encode(render(look)).decode(), ""
    except Exception as exc:  # noqa: BLE001 - the rest of the report stands without it
        return None, f"quicklook unavailable: {type(exc).__name__}: {str(exc)[:200]}"


def _output_attrs(record: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The output's attributes; none when it cannot be read (the page stands without colours)."""
    from geoseg.io.output import OutputTarget

    try:
        return OutputTarget(record["output"]["url"], dict(options)).attrs()
    except Exception:  # noqa: BLE001 - gone, or not readable with these storage options
        return {}


def replaced_note(record: dict[str, Any], attrs: dict[str, Any]) -> str:
    """A warning when the output (its attributes ``attrs``) now holds another job's result: its
    job identity is not the record's; ``""`` when it is, or when either does not say."""
    held, own = attrs.get("job_identity"), record.get("job_identity")
    if not held or not own or held == own:
        return ""
    other = (attrs.get("provenance") or {}).get("job", {}).get("name")
    by = f" (job {other})" if other else ""
    return (f"The output {record['output']['url']} now holds another job's result{by}, not this "
            "run's: it was overwritten after this run. No quicklook is drawn, and the chunk map "
            "has no class colours; the figures below are this run's own, from its record.")


def render_report(record: dict[str, Any], scores: dict[str, Any] | None = None,
                  storage_options: dict[str, Any] | None = None,
                  input_options: dict[str, Any] | None = None, *,
                  quicklook_pixels: int | None = QUICKLOOK_PIXELS) -> str:
    """The whole page of one run, as HTML text (``storage_options``: the output's, which a
    record never holds; ``input_options``: the input's, for the quicklook, by default the
    output's). The quicklook is drawn for outputs of at most ``quicklook_pixels`` pixels
    (``None``: any), else the page says how to draw it."""
    options = dict(storage_options or {})
    name = html.escape(str(record["job"].get("name", "job")))
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>geoseg run {name}</title>"
             f"<style>{STYLE}</style></head><body><h1>geoseg run: {name}</h1>"),
             (f"<p>{html.escape(record['started'])} to {html.escape(record['finished'])}; output "
             f"<code>{html.escape(record['output']['url'])}</code></p>")]
    status = record.get("status", "complete")
    if status != "complete":
        parts.append(f'<p class="warn" id="run-status">This run ended {html.escape(str(status))}: '
                     f'{html.escape(str(record.get("error", "")))}. It computed '
                     f'{html.escape(str(record["chunks"]["computed"]))} of '
                     f'{html.escape(str(record["chunks"]["total"]))} task regions; running the '
                     'job again resumes it.</p>')
    attrs = _output_attrs(record, options)
    replaced = replaced_note(record, attrs)
    picture, why = (None, "") if replaced else _quicklook(record, options, input_options,
                                                             quicklook_pixels)
    parts.append("<h2>Quicklook</h2>" + (
        f'<p class="warn" id="output-replaced">{html.escape(replaced)}</p>' if replaced else
        _img(picture, "quicklook", "quicklook") if picture else
        f'<p class="note">{html.escape(why)}</p>'))
    parts.append(metrics_section(record, scores))
    parts.append(results_section(record, options, bool(replaced)))
    source = scores if scores is not None else record.get("evaluation")
    if source is not None:
        whole = ("the scores (confusion) geoseg eval --json wrote" if scores is not None else
                 "the run record (evaluation, confusion), and in what geoseg eval --json writes")
        parts.append(confusion_section(source["confusion"], source["classes"], whole))
    parts.append(chunks_section(record, None if replaced else attrs.get("class_colors")))
    speed = throughput_figure(record.get("regions", []))
    if speed:
        parts.append("<h2>Throughput</h2>" + _img(speed, "throughput"))
    parts.append(provenance_section(record) + "</body></html>")
    return "\n".join(parts)


def write_report(record_url: str, out: str | None = None, scores: dict[str, Any] | None = None,
                 storage_options: dict[str, Any] | None = None,
                 input_options: dict[str, Any] | None = None, *,
                 quicklook_pixels: int | None = QUICKLOOK_PIXELS) -> str:
    """Write the report of the run recorded at ``record_url`` (beside it unless ``out``);
    ``storage_options`` read the output, ``input_options`` the input, for its quicklook
    (drawn up to ``quicklook_pixels``, see :func:`render_report`)."""
    target = out or report_path(record_url)
    page = render_report(load_record(record_url), scores, storage_options, input_options,
                         quicklook_pixels=quicklook_pixels)
    return _write_text(target, page)


def _write_text(url: str, text: str, storage_options: dict[str, Any] | None = None) -> str:
    write_whole(url, text, storage_options=storage_options, what="Writing the report")
    return url


def record_of(run: str, storage_options: dict[str, Any] | None = None) -> str:
    """The run record of ``run``: a record itself (``.json``), or an output a job finished
    (its attributes name the record; ``storage_options`` read them)."""
    if run.endswith(".json"):
        return run
    from geoseg.io.output import OutputTarget

    attrs = OutputTarget(run, dict(storage_options or {})).attrs()
    record = (attrs.get("provenance") or {}).get("run_record")
    if not isinstance(record, str) or not record:
        raise EvaluationError(f"{run}: received neither a run record (.json) nor an output a "
                              "finished job wrote (its attributes name no run record); give the "
                              "record from the runs folder (geoseg runs lists them).")
    return record


def write_batch_index(report: Any, storage_options: dict[str, Any] | None = None,
                      input_options: dict[str, Any] | None = None) -> str | None:
    """An index page beside the batch's report: per input its state, as the batch's JSON report
    says, and the figures and report of the run this batch made of it (a skipped input: a link
    to the report of the earlier run that made its output, labelled so). ``storage_options``:
    the outputs', where the batch's report is too; ``input_options``: the inputs', for the
    quicklooks. The job reports lie beside the index, so that its links work wherever it is
    read, on object storage too, whatever folder the run records are in."""
    if not report.url or report.dry_run:
        return None
    index = report_path(report.url)
    rows = []
    for item in report.items:
        record, link, label, note = None, None, "report", item.error or ""
        if item.state == "leased" and item.lease_holder:
            note = f"leased by {item.lease_holder}"
        try:
            found = batch_item_record(item, report.run, storage_options)
        except Exception:  # noqa: BLE001 - a record gone or unreadable: listed without a report
            found, note = None, note or "its run record is not readable"
        if found is None and item.state in ("done", "changed"):
            note = note or "no report: its output no longer names this batch's run record"
        if found is not None:
            record_url, record, ours = found
            page = render_report(record, None, storage_options, input_options)
            name = report_path(record_url).rsplit("/", 1)[-1]
            link = _write_text(f"{index.rsplit('/', 1)[0]}/{name}", page, storage_options)
            with contextlib.suppress(Exception):  # and beside its record, as `geoseg run` does,
                _write_text(report_path(record_url), page)  # for `geoseg runs --html` to link
            if not ours:  # its figures are not this batch's
                label, note = "earlier run's report", ("already done by an earlier run "
                                                       f"(started {record.get('started')})")
                record = None
        cells = [html.escape(item.input), html.escape(item.state), str(item.chunks_computed)]
        cells += [html.escape(_fmt(v)) for v in _figures(record or {})]
        cells += [f'<a href="{html.escape(_relative(link, index))}">{label}</a>' if link else "-",
                  html.escape(note)]
        rows.append(cells)
    said = (f"run {report.run}, {report.started} to {report.finished}"
            + (f", interrupted ({report.interrupted})" if report.interrupted else "") + "; "
            + ", ".join(f"{k} {v}" for k, v in report.totals.items() if v or k == "inputs"))
    header = ("input", "state", "chunks computed", "model", "mIoU", "Mpx/s", "pixels computed",
              "report", "note")
    return _write_text(index, _index_page(f"geoseg batch {report.name}", header, rows, said),
                       storage_options)


def batch_item_record(item: Any, run: str, storage_options: dict[str, Any] | None = None
                      ) -> tuple[str, dict[str, Any], bool] | None:
    """The run record of a batch item's output (``item``: a batch report's), and whether the
    batch run ``run`` made it: the run record the output names, when the item is ``done`` or
    ``changed`` and this batch's run wrote the output, or ``skipped`` (as done by an earlier
    run, unless this batch's run found nothing left to compute). ``None`` for other states
    (failed, leased, interrupted...: the output, if any, is another run's) and for an output
    since replaced by another run."""
    if item.state not in ("done", "changed", "skipped"):
        return None
    from geoseg.io.output import OutputTarget

    attrs = OutputTarget(item.output, dict(storage_options or {})).attrs()
    record_url = (attrs.get("provenance") or {}).get("run_record")
    ours = (attrs.get("batch") or {}).get("run") == run
    if not record_url or not (ours or item.state == "skipped"):
        return None
    return record_url, load_record(record_url), ours


def _figures(record: dict[str, Any]) -> list[Any]:
    """A run's model, mIoU, throughput and pixels computed, as an index lists them."""
    return [record.get("model", {}).get("name"), (record.get("evaluation") or {}).get("miou"),
            record.get("throughput_mpx_per_s"), record.get("pixels")]


def write_index(reports: Sequence[tuple[str, dict[str, Any] | None, str | None]], out: str,
                title: str, storage_options: dict[str, Any] | None = None) -> str:
    """An index page: one row per run (what, model, mIoU, throughput, pixels) linking its
    report. ``reports``: (what, run record or ``None``, report location or ``None``); ``out`` is
    written with ``storage_options``."""
    rows = []
    for what, record, link in reports:
        anchor = (f'<a href="{html.escape(_relative(link, out))}">{html.escape(what)}</a>'
                  if link else html.escape(what))
        rows.append([anchor] + [html.escape(_fmt(v)) for v in _figures(record or {})])
    header = ("job", "model", "mIoU", "Mpx/s", "pixels computed")
    return _write_text(out, _index_page(title, header, rows), storage_options)


def _index_page(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                said: str = "") -> str:
    """An index page: ``rows`` of cells already HTML, under ``header``, after a line ``said``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c, len(html.unescape(re.sub("<[^>]*>", "", c))))
                                    for c in row) + "</tr>" for row in rows)
    line = f"<p>{html.escape(said)}</p>" if said else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{line}"
            f"<table id='jobs'><tr>{head}</tr>{body}</table></body></html>")


def _relative(link: str, index: str) -> str:
    """``link`` as a URL relative to the index's folder: its name when it lies in that folder
    (a batch's job reports, on object storage too), a relative path between local files; each
    part percent-encoded, ``:`` included. A file name is not a URL: read as one, a name like
    ``javascript:...`` is a scheme (script run on a click; encoded, no part holds a ``:``), and
    ``#`` or ``%41`` in a folder's name cut the path or stand for another character."""
    import os
    from urllib.parse import quote

    folder, _, name = link.rpartition("/")
    if folder and folder == index.rpartition("/")[0]:
        return quote(name, safe="")
    if "://" in link or "://" in index:
        scheme, _, rest = link.partition("://")
        host, slash, path = rest.partition("/")  # the host keeps its port's ":"
        return f"{scheme}://{host}{slash}{quote(path)}" if rest else quote(link)
    parts = Path(os.path.relpath(link, Path(index).resolve().parent)).parts
    return "/".join(quote(part, safe="") for part in parts)
