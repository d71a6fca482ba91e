"""Scores as rich tables for the command line."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from geoseg.core.text import terminal_safe

METRICS = ("iou", "dice", "precision", "recall", "support", "predicted")


def cell(value: Any, float_format: str = ".4f") -> str:
    """A table cell: ``-`` for nothing, floats as ``float_format``, anything else as text on one
    line, its control characters escaped (class names come from the files scored)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, float_format)
    return terminal_safe(str(value), one_line=True)


def absent_classes(per_class: dict[str, dict[str, Any]]) -> list[str]:
    """The classes of ``per_class`` scores in neither the reference nor the prediction: with
    nothing to score, a table lists them by count rather than row by row."""
    return [n for n, r in per_class.items() if r.get("support") == 0 and r.get("predicted") == 0]


def scores_table(found: dict[str, Any]) -> Table:
    """Per-class scores of the classes present, then the summary figures, of
    :func:`geoseg.report.evaluate`; a caption counts the classes left out (:func:`absent_classes`)."""
    absent = absent_classes(found["per_class"])
    caption = (f"{len(absent)} class{'es' * (len(absent) > 1)} in neither the reference nor the "
               "prediction, not listed" if absent else None)
    table = Table(title="semantic scores", title_justify="left", caption=caption,
                  caption_justify="left")
    table.add_column("class")
    for name in METRICS:
        table.add_column(name, justify="right")
    for name, row in found["per_class"].items():
        if name not in absent:
            table.add_row(cell(name), *(cell(row[m]) for m in METRICS))
    table.add_section()
    for key in ("miou", "fwiou", "overall_accuracy", "pixels_scored", "predicted_other"):
        table.add_row(key, cell(found[key]))
    return table


def instances_table(found: dict[str, Any]) -> Table:
    """Instance scores per class: at IoU 0.5, and the mean over the thresholds."""
    table = Table(title="instance scores (IoU 0.5; mean over 0.50..0.95)", title_justify="left")
    for column in ("class", "TP", "FP", "FN", "precision", "recall", "F1", "PQ", "SQ", "RQ",
                   "mean PQ"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in found.items():
        first = next(iter(row["thresholds"].values()))
        table.add_row(cell(name), *(cell(first[k]) for k in ("tp", "fp", "fn", "precision", "recall")),
                      cell(first["rq"]), *(cell(first[k]) for k in ("pq", "sq", "rq")),
                      cell(row["mean"]["pq"]))
    return table
