"""``geoseg eval`` on real Zarr stores: a table, JSON, and the exit code by --min-miou."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output
from tests.cli import geoseg
from tests.test_errors_cli import assert_clean

NAMES = ["water", "land", "building"]


def _write(tmp_path, pred: np.ndarray, ref: np.ndarray, instances=None):
    target = create_output(str(tmp_path / "out.zarr"), shape=pred.shape, chunks=(24, 40),
                           georef=GeoRef.from_crs("EPSG:32618", (10, 0, 5e5, 0, -10, 4.5e6)),
                           class_names=NAMES, class_dtype="uint8", nodata_class=255,
                           attrs={"class_colors": [[0, 0, 255], [0, 255, 0], [255, 0, 0]]})
    group = target.open_group()
    group["classes"][...] = pred
    reference = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w")
    labels = reference.create_array("labels", shape=ref.shape, dtype="uint8", chunks=(17, 33),
                                    attributes={"class_names": NAMES})
    labels[...] = ref
    if instances is not None:
        full = {"write_empty_chunks": True}  # every chunk stored, as a finished run leaves them
        group.create_array("instances", shape=pred.shape, dtype="uint32", chunks=(24, 40),
                           config=full)[...] = instances[0]
        reference.create_array("instances", shape=ref.shape, dtype="uint32", chunks=(17, 33),
                               config=full)[...] = instances[1]
    return str(tmp_path / "out.zarr"), str(tmp_path / "ref.zarr")


@pytest.mark.timeout(60)
def test_eval_prints_a_table_writes_json_and_exits_by_min_miou(tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 3, (70, 90)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.8, ref, (ref + 1) % 3).astype(np.uint8)
    pred[:5] = 255  # no data in the prediction: not scored
    truth = np.zeros(ref.shape, np.uint32)
    truth[10:30, 10:30], truth[40:60, 50:80] = 1, 2
    ref[truth > 0], pred[truth > 0] = 2, 2
    found = np.zeros(ref.shape, np.uint32)
    found[12:30, 10:30] = 7  # IoU 0.9 with object 1; object 2 missed; one false positive:
    found[0:4, 0:4] = 8
    pred[0:4, 0:4] = 2
    out, labels = _write(tmp_path, pred, ref, (found, truth))
    runner = CliRunner()
    done = runner.invoke(app, ["eval", out, labels, "--ref-variable", "labels", "--instances",
                               "--json", str(tmp_path / "s.json"), "--min-miou", "0.5"])
    assert done.exit_code == 0, done.output
    assert "miou" in done.output and "building" in done.output and "PQ" in done.output
    scores = json.loads((tmp_path / "s.json").read_text())
    keep = pred != 255
    assert scores["pixels_scored"] == keep.sum()
    assert scores["overall_accuracy"] == pytest.approx((pred[keep] == ref[keep]).mean(), abs=1e-6)
    building = scores["instances"]["building"]["thresholds"]["0.50"]
    assert (building["tp"], building["fp"], building["fn"]) == (1, 1, 1)
    low = runner.invoke(app, ["eval", out, labels, "--ref-variable", "labels", "--min-miou", "0.99"])
    assert low.exit_code == 1 and "below --min-miou" in low.output


@pytest.mark.parametrize("option, value, expected", [
    ("--window", "0,10", "--window: received '0,10'; expected 4 integers separated by commas: row0"),
    ("--window", "0,10,0,x", "--window: received '0,10,0,x'; expected 4 integers"),
    ("--bbox", "1,2,3", "--bbox: received '1,2,3'; expected 4 finite numbers separated by commas: minx"),
])
def test_a_region_of_the_wrong_form_is_a_usage_error_naming_the_option(tmp_path, option, value,
                                                                        expected):
    ref = np.zeros((8, 8), np.uint8)
    result = geoseg("eval", *_write(tmp_path, ref, ref), option, value)
    assert_clean(result, 2)
    assert expected in " ".join(result.stderr.split())


def test_the_scores_table_lists_the_classes_present_and_counts_the_others():
    """A class in neither the reference nor the prediction has nothing to score: the table of a
    150-class model's scores on a scene of three would be mostly empty rows."""
    from rich.console import Console

    from geoseg.report.tables import scores_table

    row = {"iou": 0.5, "dice": 0.6, "precision": 0.7, "recall": 0.8}
    per_class = {"water": {**row, "support": 10, "predicted": 12},
                 "snow": {**row, "iou": None, "support": 0, "predicted": 0},
                 "land": {**row, "support": 0, "predicted": 3},  # only predicted: a row
                 "ice": {**row, "iou": None, "support": 0, "predicted": 0}}
    found = {"per_class": per_class, "miou": 0.5, "fwiou": 0.5, "overall_accuracy": 0.9,
             "pixels_scored": 13, "predicted_other": 0}
    console = Console(record=True, width=200)
    console.print(scores_table(found))
    lines = [line.split() for line in console.export_text().splitlines()]
    listed = [w[1] for w in lines if len(w) > 2 and w[0] == "│" and w[1] in per_class]
    assert listed == ["water", "land"]
    assert ["2", "classes", "in", "neither", "the", "reference", "nor", "the", "prediction,",
            "not", "listed"] in lines


@pytest.mark.parametrize("command, where, expected", [
    (["eval", "pred.zarr", "ref.zarr", "--json"], "s3://elsewhere/scores.json",
     "received bucket 'elsewhere'; expected one of results (GEOSEG_OUTPUT_BUCKETS)"),
    (["runs", "--html"], "s3://elsewhere/index.html",
     "received bucket 'elsewhere'; expected one of results (GEOSEG_OUTPUT_BUCKETS)"),
    (["report", "run.json", "--out"], "pages/../../page.html", "received a path with a '..' segment"),
    (["quicklook", "out.zarr"], "pics/../../q.png", "received a path with a '..' segment"),
])
def test_files_the_command_line_writes_keep_to_the_output_rules(tmp_path, command, where,
                                                                 expected):
    """Scores, report pages, indexes and pictures go only where outputs may go: the allow-lists
    an operator sets for jobs hold for them too, checked before anything is read."""
    result = geoseg(*command, where, cwd=tmp_path, env={"GEOSEG_OUTPUT_BUCKETS": "results"})
    assert_clean(result, 2, expected, "Nothing was written.")


def test_labels_of_more_classes_than_a_confusion_matrix_holds_are_refused_at_once(tmp_path):
    """Random int32 ids (an instance map scored as classes) made eval allocate a 128 GiB matrix:
    a MemoryError, reported as an internal error."""
    ids = np.random.default_rng(0).integers(0, 2**31 - 1, size=(64, 64), dtype=np.int32)
    url = str(tmp_path / "ids.zarr")
    zarr.create_array(url, shape=ids.shape, chunks=(32, 32), dtype="int32")[:] = ids
    done = geoseg("eval", url, url)
    assert done.returncode == 2, done.stderr
    assert "received labels of at least 2,048 classes to score; expected at most 2,047" \
           in done.stderr and "--instances" in done.stderr


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--bbox", "nan,0,1,1", "expected 4 finite numbers separated by commas"),
    ("--bbox", "0,0,inf,1", "expected 4 finite numbers separated by commas"),
    ("--map", "99999999999999999999=1", "expected reference=predicted id pairs (64-bit integers)"),
    ("--map", "3=1,3=2", "received reference id 3 twice in '3=1,3=2'"),
])
def test_a_bbox_or_map_no_place_or_label_can_be_is_a_usage_error(tmp_path, option, value, said):
    """NaN or an infinite bbox, and an id past 64 bits, ended eval with internal errors
    (ValueError, OverflowError); a reference id mapped twice kept the last silently."""
    url = str(tmp_path / "labels.zarr")
    zarr.create_array(url, shape=(32, 32), chunks=(32, 32), dtype="uint8")[:] = 1
    done = geoseg("eval", url, url, option, value)
    assert done.returncode == 2 and said in done.stderr and "internal" not in done.stderr, done.stderr
