"""``geoseg eval``, ``report`` and ``runs`` as a user meets them: what they write goes only where
asked (nothing replaced unasked, a bad path refused before any work), ignored labels and no-data
are no classes, nothing to score and damaged labels are refused, scores belong to their run,
runs are found by number in the folder given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
import zarr
from affine import Affine
from sklearn.metrics import jaccard_score

from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr
from tests.test_errors_cli import assert_clean


def _tif(path: Path, labels: np.ndarray, nodata: int | None = None) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0],
                       count=1, dtype="uint8", crs="EPSG:32618", nodata=nodata,
                       transform=Affine(10, 0, 5e5, 0, -10, 4.5e6)) as f:
        f.write(labels, 1)
    return str(path)


def _pair(tmp_path: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str, str]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 3, (64, 64)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.3, rng.integers(0, 3, ref.shape), ref).astype(np.uint8)
    return ref, pred, _tif(tmp_path / "pred.tif", pred), _tif(tmp_path / "ref.tif", ref)


@pytest.mark.timeout(120)
def test_eval_json_replaces_nothing_unasked_and_refuses_a_bad_path_before_scoring(tmp_path):
    _, _, pred, ref = _pair(tmp_path)
    before = Path(pred).read_bytes()
    assert_clean(geoseg("eval", pred, ref, "--json", pred), 2, f"{pred} already exists",
                 "--overwrite")
    assert_clean(geoseg("eval", pred, ref, "--json", pred, "--overwrite"), 2,
                 f"received the prediction {pred} this command reads")
    assert Path(pred).read_bytes() == before  # the prediction it scores is intact
    assert_clean(geoseg("eval", pred, ref, "--json", str(tmp_path)), 2, "is a folder")
    missing = tmp_path / "no" / "s.json"
    assert_clean(geoseg("eval", pred, ref, "--json", str(missing)), 2, "does not exist",
                 "Create the folder")
    notes = tmp_path / "s.json"
    notes.write_text("keep")
    assert_clean(geoseg("eval", pred, ref, "--json", str(notes)), 2, "already exists")
    assert notes.read_text() == "keep"
    assert geoseg("eval", pred, ref, "--json", str(notes), "--overwrite").returncode == 0
    assert json.loads(notes.read_text())["pixels_scored"] == 64 * 64


@pytest.mark.timeout(120)
def test_runs_html_replaces_nothing_unasked_and_refuses_a_folder(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    tif = tmp_path / "scene.tif"
    tif.write_bytes(b"II*\x00 not to be lost")
    assert_clean(geoseg("runs", "--dir", str(runs), "--html", str(tif)), 2, "already exists",
                 "--overwrite")
    assert tif.read_bytes() == b"II*\x00 not to be lost"
    assert_clean(geoseg("runs", "--dir", str(runs), "--html", str(tmp_path)), 2, "is a folder")
    assert_clean(geoseg("runs", "--dir", str(runs), "--html", str(tmp_path / "no" / "i.html")), 2,
                 "does not exist")
    assert geoseg("runs", "--dir", str(runs), "--html", str(tif), "--overwrite").returncode == 0
    assert "<html" in tif.read_text().lower()


@pytest.mark.timeout(120)
def test_ignored_labels_are_no_class_and_miou_equals_sklearn(tmp_path):
    ref, pred, pred_url, ref_url = _pair(tmp_path)
    done = geoseg("eval", pred_url, ref_url, "--ignore", "0", "--json", str(tmp_path / "s.json"))
    assert done.returncode == 0, done.stderr
    got = json.loads((tmp_path / "s.json").read_text())
    keep = ref != 0
    assert got["classes"] == ["1", "2"] and set(got["per_class"]) == {"1", "2"}
    expected = jaccard_score(ref[keep], pred[keep], labels=[1, 2], average="macro")
    assert got["miou"] == pytest.approx(expected, abs=1e-6)
    per = jaccard_score(ref[keep], pred[keep], labels=[1, 2], average=None)
    assert [got["per_class"][c]["iou"] for c in ("1", "2")] == pytest.approx(per, abs=1e-6)
    assert got["pixels_scored"] == keep.sum()


@pytest.mark.timeout(120)
def test_nodata_is_no_class_nothing_to_score_is_refused_and_min_miou_is_checked(tmp_path):
    ref, pred, pred_url, _ = _pair(tmp_path)
    ref[:8] = 255
    store = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w")
    store.create_array("labels", shape=ref.shape, dtype="uint8", chunks=(32, 32),
                       attributes={"_FillValue": 255})[...] = ref
    zref = str(tmp_path / "ref.zarr")
    done = geoseg("eval", pred_url, zref, "--ref-variable", "labels", "--json",
                  str(tmp_path / "s.json"))
    assert done.returncode == 0, done.stderr
    got = json.loads((tmp_path / "s.json").read_text())
    assert got["classes"] == ["0", "1", "2"] and got["pixels_scored"] == 56 * 64
    keep = ref != 255
    assert got["miou"] == pytest.approx(jaccard_score(ref[keep], pred[keep], average="macro"),
                                        abs=1e-6)

    empty = zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    empty.create_array("labels", shape=ref.shape, dtype="uint8", chunks=(32, 32),
                       attributes={"_FillValue": 255})[...] = 255
    assert_clean(geoseg("eval", pred_url, str(tmp_path / "empty.zarr"), "--ref-variable",
                        "labels"), 2, "nothing to score", "no-data (255)")
    assert_clean(geoseg("eval", pred_url, zref, "--ref-variable", "labels", "--min-miou", "2"),
                 2, "--min-miou")


def _threshold_run(tmp_path: Path, name: str, runs: Path, out: str) -> str:
    if not (tmp_path / "in.zarr").exists():
        write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1, seed=3), chunks=(32, 32))
    job = tmp_path / f"{name}.yaml"
    job.write_text(yaml.safe_dump({
        "name": name, "input": {"url": str(tmp_path / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(tmp_path / out), "chunks": [32, 32]},
        "cluster": {"kind": "threads"}, "runs_dir": str(runs)}))
    done = geoseg("run", str(job))
    assert done.returncode == 0, done.stderr
    return str(tmp_path / out)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("runs")
    runs = folder / "runs"
    a = _threshold_run(folder, "first", runs, "a.zarr")
    b = _threshold_run(folder, "second", runs, "b.zarr")
    return runs, a, b


@pytest.mark.timeout(180)
def test_eval_refuses_a_damaged_output(tmp_path):
    runs = tmp_path / "runs"
    out = _threshold_run(tmp_path, "whole", runs, "out.zarr")
    ref = _threshold_run(tmp_path, "ref", runs, "ref.zarr")
    assert geoseg("eval", out, ref).returncode == 0
    (Path(out) / "classes" / "c" / "1" / "0").unlink()  # a lost chunk reads as no-data
    assert_clean(geoseg("eval", out, ref, "--json", str(tmp_path / "s.json")), 2,
                 "is damaged", "nothing was scored", "geoseg verify")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.timeout(180)
def test_report_refuses_the_scores_of_another_prediction(two_runs, tmp_path):
    _, a, b = two_runs
    other = tmp_path / "other.json"
    assert geoseg("eval", b, a, "--json", str(other)).returncode == 0
    assert_clean(geoseg("report", a, "--scores", str(other), "--out", str(tmp_path / "r.html")),
                 2, f"scores of prediction {b}", f"the run wrote {a}")
    assert not (tmp_path / "r.html").exists()
    own = tmp_path / "own.json"
    assert geoseg("eval", a, b, "--json", str(own)).returncode == 0
    made = geoseg("report", a, "--scores", str(own), "--out", str(tmp_path / "r.html"))
    assert made.returncode == 0, made.stderr


@pytest.mark.timeout(120)
def test_runs_compare_takes_the_groups_dir_and_numbers_only_as_positions(two_runs, tmp_path):
    runs, _, _ = two_runs
    elsewhere = {"GEOSEG_RUNS_DIR": str(tmp_path / "empty")}
    done = geoseg("runs", "--dir", str(runs), "compare", "0", "1", env=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "first" in done.stdout and "second" in done.stdout
    assert_clean(geoseg("runs", "--dir", str(runs), "compare", "2", "3", env=elsewhere), 2,
                 "run 2", "holds 2 run(s)")


def test_mean_iou_without_ignored_classes_equals_sklearn():
    """What a job's evaluation needs to leave its ignored labels out of the mIoU: the matrix
    of every label (ignored reference rows empty), the ignored classes excluded."""
    from sklearn.metrics import confusion_matrix

    from geoseg.metrics import iou_per_class, mean_iou

    rng = np.random.default_rng(4)
    ref = rng.integers(0, 4, 500)
    pred = np.where(rng.random(500) < 0.3, rng.integers(0, 4, 500), ref)
    keep = ~np.isin(ref, [0, 3])
    matrix = confusion_matrix(ref[keep], pred[keep], labels=[0, 1, 2, 3])
    assert mean_iou(matrix, exclude=[0, 3]) == pytest.approx(
        jaccard_score(ref[keep], pred[keep], labels=[1, 2], average="macro"), abs=1e-12)
    iou = iou_per_class(matrix, exclude=[0, 3])
    assert np.isnan(iou[[0, 3]]).all()
    assert iou[[1, 2]] == pytest.approx(jaccard_score(ref[keep], pred[keep], labels=[1, 2],
                                                      average=None), abs=1e-12)


@pytest.mark.timeout(180)
def test_files_written_over_what_the_command_reads_are_refused_even_with_overwrite(two_runs,
                                                                                  tmp_path):
    """--overwrite replaced a run record with its own report (gone from geoseg runs), and eval's
    --json inside the prediction replaced its zarr.json: the output was no output any more."""
    runs, a, b = two_runs
    record = str(next(runs.glob("*first*.json")))
    before = Path(record).read_bytes(), (Path(a) / "zarr.json").read_bytes()
    assert_clean(geoseg("report", record, "--out", record, "--overwrite"), 2,
                 f"--out {record}: received the run record {record} this command reads")
    assert_clean(geoseg("report", record, "--out", f"{a}/page.html", "--overwrite"), 2,
                 f"received the run's output {a} this command reads")
    assert_clean(geoseg("eval", a, b, "--json", f"{a}/zarr.json", "--overwrite"), 2,
                 f"received the prediction {a} this command reads")
    assert_clean(geoseg("eval", a, b, "--json", f"{b}/s.json"), 2, f"the reference {b}")
    assert_clean(geoseg("runs", "--dir", str(runs), "--html", record, "--overwrite"), 2,
                 f"--html {record}: received the run record {record} this command reads")
    assert (Path(record).read_bytes(), (Path(a) / "zarr.json").read_bytes()) == before
    assert geoseg("status", a).returncode == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("change", "said"), [
    ({"confusion": "x"}, "received confusion that is not 2 rows of 2 whole numbers"),
    ({"confusion": [[1, 2, 3]]}, "received confusion that is not 2 rows of 2 whole numbers"),
    ({"per_class": [1, 2]}, "received per_class that is not an object of the classes' scores"),
    ({"per_class": {"other": {"iou": 0.5}}}, "received per_class that is not an object"),
    ({"classes": ["a", "a", "b"]}, "received classes naming one class twice"),
])
def test_scores_a_report_cannot_draw_are_refused_naming_the_field(two_runs, tmp_path, change,
                                                                  said):
    """Each ended in an internal error, or (a confusion of another size than the classes) a
    report drawn with it."""
    _, a, b = two_runs
    scores = tmp_path / "s.json"
    assert geoseg("eval", a, b, "--json", str(scores)).returncode == 0
    found = json.loads(scores.read_text())
    if "per_class" in change and isinstance(change["per_class"], dict):
        change = {"per_class": {**found["per_class"], **change["per_class"]}}
    scores.write_text(json.dumps({**found, **change}))
    assert_clean(geoseg("report", a, "--scores", str(scores), "--out", str(tmp_path / "r.html")),
                 2, f"--scores {scores}: {said}")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.timeout(120)
def test_the_scores_file_names_labels_read_over_http_without_their_credentials(tmp_path):
    """Logs and errors showed the URLs scrubbed; the scores file kept the password."""
    import functools
    import http.server
    import threading

    labels = np.random.default_rng(0).integers(0, 3, (32, 32)).astype(np.uint8)
    for name in ("pred", "ref"):
        zarr.create_array(str(tmp_path / f"{name}.zarr"), shape=labels.shape, chunks=(16, 16),
                          dtype="uint8")[:] = labels
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://alice:S3cr3tPW@127.0.0.1:{server.server_address[1]}"
        done = geoseg("eval", f"{base}/pred.zarr", f"{base}/ref.zarr", "--json",
                      str(tmp_path / "s.json"))
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "s.json").read_text()
    assert "S3cr3tPW" not in written + done.stdout + done.stderr
    assert json.loads(written)["prediction"].endswith(f"127.0.0.1:{server.server_address[1]}/pred.zarr")
