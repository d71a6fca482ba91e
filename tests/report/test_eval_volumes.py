"""``geoseg eval`` on volumes and on ``geoseg convert`` outputs: scores equal scikit-learn's on
the flattened arrays, in Python and through the command line.

The volume is ``(z, y, x) = (24, 48, 64)`` (NIfTI ``(i, j, k) = (64, 48, 24)``), chunked unevenly
on both sides, so every chunk pair is scored with its own small matrix."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import rasterio
import yaml
import zarr
from affine import Affine
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score

from geoseg.report.eval import Labels, evaluate
from tests.cli import geoseg

ZYX = (24, 48, 64)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])  # anisotropic voxels, as a CT


def _volumes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An intensity volume (int16, ``(z, y, x)``) and reference labels (uint8, 0..2) that agree
    with ``intensity > 400`` (class 1) on most voxels."""
    rng = np.random.default_rng(seed)
    intensity = rng.normal(0, 300, ZYX).astype(np.int16)
    intensity[6:18, 10:40, 12:50] += 600
    ref = (intensity > 400).astype(np.uint8)
    flip = rng.random(ZYX) < 0.1
    ref[flip] = rng.integers(0, 3, int(flip.sum()))
    return intensity, ref


def _expected(ref: np.ndarray, pred: np.ndarray, labels: list[int]) -> dict:
    """sklearn's scores of the voxels whose reference label is a class (others are no class of
    the prediction: not scored)."""
    keep = np.isin(ref, labels).ravel()
    t, p = ref.ravel()[keep], pred.ravel()[keep]
    kw = {"labels": labels, "average": None, "zero_division": 0}
    return {"confusion": confusion_matrix(t, p, labels=labels).tolist(),
            "iou": jaccard_score(t, p, **kw), "dice": f1_score(t, p, **kw)}


def _assert_scores(got: dict, expected: dict, names: list[str]) -> None:
    assert got["confusion"] == expected["confusion"]
    for key in ("iou", "dice"):
        np.testing.assert_allclose([got["per_class"][n][key] for n in names], expected[key],
                                   atol=1e-6, err_msg=key)


def test_a_volume_scores_like_sklearn_at_uneven_chunks():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 3, ZYX).astype(np.uint8)
    pred = np.where(rng.random(ZYX) < 0.6, ref, rng.integers(0, 3, ZYX)).astype(np.uint8)
    names = ("a", "b", "c")
    got = evaluate(Labels(da.from_array(pred, chunks=(5, 17, 30)), names),
                   Labels(da.from_array(ref, chunks=(24, 10, 64)), names))
    _assert_scores(got, _expected(ref, pred, [0, 1, 2]), list(names))
    assert got["pixels_scored"] == ref.size
    window = evaluate(Labels(da.from_array(pred, chunks=(5, 17, 30)), names),
                      Labels(da.from_array(ref, chunks=(24, 10, 64)), names), window=(3, 40, 5, 60))
    _assert_scores(window, _expected(ref[:, 3:40, 5:60], pred[:, 3:40, 5:60], [0, 1, 2]),
                   list(names))


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A threshold job's output of a NIfTI volume (chunks that do not divide it), its reference
    labels as a NIfTI file on the same grid, and those labels (``(z, y, x)``)."""
    folder = tmp_path_factory.mktemp("volume")
    intensity, ref = _volumes()
    for name, data in (("ct.nii", intensity), ("ref.nii", ref)):
        nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), AFFINE), str(folder / name))
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "volume-eval", "input": {"url": str(folder / "ct.nii")},
        "model": {"method": "threshold", "params": {"thresholds": [400]}},
        "output": {"url": str(folder / "out.zarr"), "chunks": [10, 20, 25]},
        "cluster": {"kind": "threads"}, "runs_dir": str(folder / "runs")}))
    done = geoseg("run", str(job))
    assert done.returncode == 0, done.stderr
    return folder, ref


def _eval_json(folder: Path, *args: str) -> dict:
    out = folder / "s.json"
    done = geoseg("eval", *args, "--json", str(out), "--overwrite")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


@pytest.mark.timeout(240)
def test_eval_of_a_volume_job_against_nifti_and_converted_references(volume_run):
    folder, ref = volume_run
    pred = np.asarray(zarr.open_group(str(folder / "out.zarr"), mode="r")["classes"][...])
    assert pred.shape == ZYX  # read by zarr, not by geoseg: an independent prediction
    got = _eval_json(folder, str(folder / "out.zarr"), str(folder / "ref.nii"))
    names = got["classes"]
    assert len(names) == 2  # the threshold's two classes; reference label 2 is none of them
    expected = _expected(ref, pred, [0, 1])
    _assert_scores(got, expected, names)
    assert got["pixels_scored"] == np.isin(ref, [0, 1]).sum()
    # the reference converted to Zarr (a `raster` array, status complete, no manifest)
    converted = str(folder / "ref.zarr")
    done = geoseg("convert", str(folder / "ref.nii"), converted, "--chunks", "7,30,40")
    assert done.returncode == 0, done.stderr
    for extra in ((), ("--ref-variable", "raster")):
        _assert_scores(_eval_json(folder, str(folder / "out.zarr"), converted, *extra),
                       expected, names)
    # and as the prediction, scored against the output: REF and PRED swap in the matrix
    swapped = _eval_json(folder, converted, str(folder / "out.zarr"), "--pred-variable", "raster")
    assert np.array(swapped["confusion"]).T.tolist() == expected["confusion"]


def _tif(path: Path, labels: np.ndarray) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0],
                       count=1, dtype="uint8", crs="EPSG:32618",
                       transform=Affine(10, 0, 5e5, 0, -10, 4.5e6)) as f:
        f.write(labels, 1)
    return str(path)


@pytest.mark.timeout(120)
def test_a_converted_image_is_accepted_as_reference_and_as_prediction(tmp_path):
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 3, (70, 90)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 3, ref.shape)).astype(np.uint8)
    pred_tif, ref_tif = _tif(tmp_path / "pred.tif", pred), _tif(tmp_path / "ref.tif", ref)
    for tif, zarr_url in ((ref_tif, "ref.zarr"), (pred_tif, "pred.zarr")):
        done = geoseg("convert", tif, str(tmp_path / zarr_url), "--chunks", "32")
        assert done.returncode == 0, done.stderr
    expected = _expected(ref, pred, [0, 1, 2])
    names = ["0", "1", "2"]
    _assert_scores(_eval_json(tmp_path, pred_tif, str(tmp_path / "ref.zarr"), "--ref-variable",
                              "raster"), expected, names)
    _assert_scores(_eval_json(tmp_path, str(tmp_path / "pred.zarr"), str(tmp_path / "ref.zarr")),
                   expected, names)
