"""``geoseg eval`` on GeoTIFF references and COG exports: class maps keep the ids they do not
name, a reference off the prediction's pixel grid is refused, a COG scores as its Zarr output.
Scores are checked against scikit-learn on the whole arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import zarr
from sklearn.metrics import jaccard_score

from geoseg.io.exports import export_cog
from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output
from tests.cli import geoseg

NAMES = ["water", "vegetation", "bare_soil", "road", "building"]
CRS = "EPSG:32633"
TRANSFORM = (10.0, 0.0, 500000.5, 0.0, -10.0, 4200000.25)
SHIFTED = (10.0, 0.0, 500010.5, 0.0, -10.0, 4200000.25)  # one pixel east
PRED_NODATA, REF_NODATA = 255, 254


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes (a no-data corner) and reference labels: 20% of them changed."""
    rng = np.random.default_rng(3)
    pred = rng.integers(0, len(NAMES), (60, 80)).astype(np.uint8)
    pred[:6, :10] = PRED_NODATA
    ref = pred.copy()
    flip = rng.random(pred.shape) < 0.2
    ref[flip] = rng.integers(0, len(NAMES), flip.sum())
    ref[pred == PRED_NODATA] = 1
    return pred, ref


def _output(tmp_path, pred: np.ndarray) -> str:
    """A finished geoseg output holding ``pred``, its classes named."""
    target = create_output(str(tmp_path / "out.zarr"), shape=pred.shape, chunks=(32, 48),
                           georef=GeoRef.from_crs(CRS, TRANSFORM), class_names=NAMES,
                           class_dtype="uint8", nodata_class=PRED_NODATA,
                           attrs={"status": "running"})
    target.open_group()["classes"][...] = pred
    target.finalize({"status": "complete"})
    return str(tmp_path / "out.zarr")


def _geotiff(path, labels: np.ndarray, transform=TRANSFORM, crs: str = CRS) -> str:
    """Reference labels as a plain GeoTIFF: no class names."""
    with rasterio.open(path, "w", driver="GTiff", height=labels.shape[0], width=labels.shape[1],
                       count=1, dtype="uint8", crs=crs, transform=rasterio.Affine(*transform),
                       nodata=REF_NODATA) as ds:
        ds.write(labels, 1)
    return str(path)


def _eval(tmp_path, pred_url: str, ref_url: str, *args: str) -> dict:
    done = geoseg("eval", pred_url, ref_url, *args, "--json", str(tmp_path / "s.json"), "--overwrite")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((tmp_path / "s.json").read_text())


def _assert_sklearn(found: dict, ref: np.ndarray, pred: np.ndarray, keep: np.ndarray) -> None:
    """Per-class IoU and mIoU of ``found`` equal scikit-learn's on the kept pixels."""
    labels = list(range(len(NAMES)))
    iou = jaccard_score(ref[keep], pred[keep], labels=labels, average=None)
    assert found["pixels_scored"] == keep.sum()
    np.testing.assert_allclose([found["per_class"][n]["iou"] for n in NAMES], iou, atol=1e-6)
    assert found["miou"] == pytest.approx(
        jaccard_score(ref[keep], pred[keep], labels=labels, average="macro"), abs=1e-6)
    assert [found["per_class"][n]["support"] for n in NAMES] == \
        np.bincount(ref[keep], minlength=len(NAMES)).tolist()


@pytest.mark.timeout(60)
def test_map_swaps_the_named_ids_and_keeps_the_others(tmp_path):
    pred, ref = _scene()
    out, labels = _output(tmp_path, pred), _geotiff(tmp_path / "ref.tif", ref)
    found = _eval(tmp_path, out, labels, "--map", "3=4,4=3")
    swapped = np.choose(ref, [0, 1, 2, 4, 3]).astype(np.uint8)
    assert found["classes"] == NAMES
    _assert_sklearn(found, swapped, pred, pred != PRED_NODATA)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transform, crs, received", [
    (SHIFTED, CRS, "500010.5"),  # shifted by one pixel
    (TRANSFORM, "EPSG:32634", "EPSG:32634"),  # same numbers, another CRS
])
def test_a_reference_off_the_prediction_grid_is_refused(tmp_path, transform, crs, received):
    pred, ref = _scene()
    out = _output(tmp_path, pred)
    labels = _geotiff(tmp_path / "ref.tif", ref, transform=transform, crs=crs)
    done = geoseg("eval", out, labels)
    message = done.stdout + done.stderr
    assert done.returncode == 2, message
    assert "Traceback" not in message
    for said in (labels, out, received, "pixel grid", "gdalwarp"):  # received, expected, fix
        assert said in message, said
    assert "500000.5" in message or CRS in message  # what was expected


@pytest.mark.timeout(60)
def test_boolean_masks_are_scored_as_classes_0_and_1(tmp_path):
    pred, ref = (values % 2 == 1 for values in _scene())
    urls = []
    for name, values in (("pred.zarr", pred), ("ref.zarr", ref)):
        zarr.create_array(str(tmp_path / name), shape=values.shape, dtype=bool,
                          chunks=(32, 32))[...] = values
        urls.append(str(tmp_path / name))
    found = _eval(tmp_path, *urls)
    iou = jaccard_score(ref.ravel(), pred.ravel(), labels=[0, 1], average=None)
    assert found["pixels_scored"] == pred.size
    np.testing.assert_allclose([c["iou"] for c in found["per_class"].values()], iou, atol=1e-6)


@pytest.mark.timeout(60)
def test_plain_zarr_arrays_without_georeference_are_scored(tmp_path):
    pred, ref = _scene()
    urls = []
    for name, values in (("pred.zarr", pred), ("ref.zarr", ref)):
        zarr.create_array(str(tmp_path / name), shape=values.shape, dtype="uint8",
                          chunks=(32, 32))[...] = values
        urls.append(str(tmp_path / name))
    found = _eval(tmp_path, *urls)
    labels = sorted(set(np.unique(pred)) | set(np.unique(ref)))
    assert found["pixels_scored"] == pred.size
    assert found["miou"] == pytest.approx(
        jaccard_score(ref.ravel(), pred.ravel(), labels=labels, average="macro"), abs=1e-6)


@pytest.mark.timeout(60)
def test_a_cog_export_scores_as_its_zarr_output(tmp_path):
    pred, ref = _scene()
    ref[20:25, 10:60] = 7  # a reference id that names no class: not scored
    out, labels = _output(tmp_path, pred), _geotiff(tmp_path / "ref7.tif", ref)
    cog = export_cog(out, str(tmp_path / "out.tif"), blocksize=16)
    from_zarr = _eval(tmp_path, out, labels)
    from_cog = _eval(tmp_path, cog, labels)
    for key in ("classes", "pixels_scored", "miou", "overall_accuracy", "per_class", "confusion"):
        assert from_cog[key] == from_zarr[key], key
    _assert_sklearn(from_cog, ref, pred, (pred != PRED_NODATA) & (ref < len(NAMES)))
