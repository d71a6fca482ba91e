"""The run report of a model with many classes, few of them in the data: the confusion figure,
the metrics table and the chunk map's legend grow with the classes present, not the model's."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.jobs.provenance import scores as run_scores
from geoseg.report.eval import scores as eval_scores
from geoseg.report.html import (
    ABSENT_NAMED,
    CONFUSION_MAX,
    _map_legend,
    confusion_figure,
    drawn_classes,
    metrics_section,
    render_report,
)
from geoseg.report.quicklook import LEGEND_MAX

NAMES = [f"class{i:02d}" for i in range(60)]
ONLY_REFERENCE, ONLY_PREDICTED = 21, 59  # a row without a column, a column without a row


def confusion(n: int, present: list[int], seed: int = 0) -> np.ndarray:
    """A confusion matrix of ``n`` classes with counts among ``present`` only, plus one class
    only in the reference and one only predicted."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros((n, n), np.int64)
    matrix[np.ix_(present, present)] = rng.integers(1, 500, (len(present), len(present)))
    matrix[ONLY_REFERENCE, present[0]] = 7
    matrix[present[0], ONLY_PREDICTED] = 5
    return matrix


def chunks(mains: tuple[int, ...], n: int) -> list[dict]:
    """Region records of a grid of chunks two wide, whose main classes are ``mains`` (of
    ``n`` classes), each with a tenth of the next class."""
    regions = []
    for k, main in enumerate(mains):
        counts = [0] * n
        counts[main], counts[(main + 1) % n] = 90, 10
        top, left = divmod(k, 2)
        regions.append({"window": [[64 * top, 64 * top + 64], [64 * left, 64 * left + 64]],
                        "seconds": 0.1 + k, "done_s": 1.0 + k, "pixels": 100,
                        "class_counts": counts})
    return regions


def record(folder: Path, matrix: np.ndarray, names: list[str],
           mains: tuple[int, ...] = (3, 7, 7, 40)) -> dict:
    """A run record as a job writes it, of a 2 x 2 chunk grid whose main classes are
    ``mains``, scored with ``matrix``; its output (in ``folder``) is gone: the page stands
    without it."""
    regions = chunks(mains, len(names))
    return {"job": {"name": "many"}, "started": "2024-01-01T00:00:00Z",
            "finished": "2024-01-01T00:01:00Z", "input": {"url": "in.zarr"},
            "output": {"url": str(folder / "gone.zarr")},
            "timings": {"total_s": 60.0, "compute_s": 50.0},
            "chunks": {"computed": len(mains), "skipped_as_done": 0}, "pixels": 100 * len(mains),
            "class_counts": dict(zip(names, map(int, matrix.sum(0)))), "regions": regions,
            "evaluation": run_scores(matrix, names)}


def picture_size(page: str, alt: str) -> tuple[int, int]:
    """Pixel size of the page's embedded PNG of that ``alt``."""
    data = re.search(rf'alt="{alt}" src="data:image/png;base64,([^"]+)"', page).group(1)
    return Image.open(io.BytesIO(base64.b64decode(data))).size


def figure_size(matrix: np.ndarray, ids: list[int]) -> tuple[int, int]:
    """Pixel size of the confusion figure of the classes ``ids`` alone."""
    picture = confusion_figure(matrix[np.ix_(ids, ids)], [NAMES[i] for i in ids])
    return Image.open(io.BytesIO(base64.b64decode(picture))).size


def listed(page: str) -> list[str]:
    """The class names the metrics table lists, in order."""
    table = re.search(r'<table id="metrics-table">(.*?)</table>', page).group(1)
    return re.findall(r"<tr><td>([^<]*)</td>", table)


def present_ids(matrix: np.ndarray) -> list[int]:
    return np.flatnonzero(matrix.any(0) | matrix.any(1)).tolist()


@pytest.mark.timeout(60)
def test_the_confusion_figure_draws_only_the_classes_present(tmp_path):
    matrix = confusion(len(NAMES), [3, 7, 8, 40])
    page = render_report(record(tmp_path, matrix, NAMES))
    present = present_ids(matrix)
    assert present == [3, 7, 8, ONLY_REFERENCE, 40, ONLY_PREDICTED]
    assert picture_size(page, "confusion") == figure_size(matrix, present)
    left = len(NAMES) - len(present)
    assert (f"{len(present)} of the {len(NAMES)} classes drawn; {left} classes left out ({left} "
            "in neither the reference nor the prediction). The full matrix is in the run "
            "record") in page


@pytest.mark.timeout(60)
def test_the_confusion_figure_draws_at_most_the_most_frequent_classes(tmp_path):
    present = list(range(0, 2 * (CONFUSION_MAX + 5), 2))  # more than it draws
    matrix = confusion(len(NAMES), present, seed=1)
    page = render_report(record(tmp_path, matrix, NAMES))
    ref, pred = matrix.sum(1), matrix.sum(0)
    ids = present_ids(matrix)
    ranked = sorted(ids, key=lambda i: (-ref[i], -pred[i], i))[:CONFUSION_MAX]
    assert drawn_classes(matrix) == tuple(sorted(ranked))
    assert picture_size(page, "confusion") == figure_size(matrix, sorted(ranked))
    absent, fewer = len(NAMES) - len(ids), len(ids) - CONFUSION_MAX
    assert (f"{CONFUSION_MAX} of the {len(NAMES)} classes drawn; {absent + fewer} classes left "
            f"out ({absent} in neither the reference nor the prediction, {fewer} with fewer "
            "pixels than those drawn)") in page


def test_drawn_classes_break_ties_by_predicted_pixels_then_id():
    matrix = np.diag([5, 9, 5, 5, 0, 1]).astype(np.int64)
    matrix[4, 0] = 1  # class 4: only in the reference; class 0: one more predicted pixel
    assert drawn_classes(matrix, most=3) == (0, 1, 2)
    assert drawn_classes(matrix, most=10) == (0, 1, 2, 3, 4, 5)
    assert drawn_classes(np.zeros((3, 3), np.int64)) == ()


def test_the_metrics_table_lists_the_present_classes_and_counts_the_others(tmp_path):
    matrix = confusion(len(NAMES), [3, 7, 8, 40])
    present = present_ids(matrix)
    absent = len(NAMES) - len(present)
    assert absent > ABSENT_NAMED
    page = metrics_section(record(tmp_path, matrix, NAMES))
    assert listed(page) == [NAMES[i] for i in present]
    assert (f'<p class="note" id="absent-classes">{absent} classes in neither the reference '
            "nor the prediction, not listed.</p>") in page
    # scores from geoseg eval: the same classes, the same line
    scored = metrics_section(record(tmp_path, matrix, NAMES), eval_scores(matrix, NAMES))
    assert "fwiou" in scored and listed(scored) == [NAMES[i] for i in present]
    assert f"{absent} classes in neither the reference nor the prediction, not listed." in scored


def test_a_few_absent_classes_are_named(tmp_path):
    names = NAMES[:8]
    matrix = np.zeros((8, 8), np.int64)
    matrix[np.ix_([0, 2, 5], [0, 2, 5])] = 3
    matrix[6, 0] = 1
    absent = [names[i] for i in range(8) if not (matrix[i].any() or matrix[:, i].any())]
    page = render_report(record(tmp_path, matrix, names, mains=(0, 2)))
    assert listed(page) == ["class00", "class02", "class05", "class06"]
    assert f"4 classes in neither the reference nor the prediction, not listed: " \
           f"{', '.join(absent)}.</p>" in page


def test_the_chunk_legend_names_the_classes_the_map_shows():
    labels = [h.get_label() for h in _map_legend(chunks((40, 7, 3, 7), 60), NAMES,
                                                 np.zeros((60, 3)))]
    assert labels == ["class03", "class07", "class40"]  # in id order, each once


def test_the_chunk_legend_counts_classes_past_the_quicklook_s_bound():
    mains = (*range(LEGEND_MAX + 4), 30, 30, 29, 29, 29)  # 29, 30: main class of more chunks
    labels = [h.get_label() for h in _map_legend(chunks(mains, 60), NAMES, np.zeros((60, 3)))]
    assert labels == ["class29", "class30", *NAMES[:LEGEND_MAX - 2], "+ 6 more classes"]
