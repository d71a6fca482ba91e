"""``geoseg eval`` and a job's ``evaluate.reference`` refuse a reference volume on another voxel
grid (another orientation, an origin moved 100 mm), naming both grids; the same labels resampled
onto the prediction's grid with nibabel score as nibabel's own arrays do.

The CT is stored LPS-like (affine diag(-0.7, -0.7, 2.5), origin (40, 30, -50)): a box of 500 HU
that a threshold at 300 segments exactly."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from nibabel.processing import resample_from_to

from tests.cli import geoseg

IJK = (64, 48, 24)
LPS = np.array([[-0.7, 0, 0, 40.0], [0, -0.7, 0, 30.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])


def _job(folder: Path, name: str, **extra: object) -> Path:
    job = folder / f"{name}.yaml"
    job.write_text(yaml.safe_dump({
        "name": name, "input": {"url": str(folder / "ct.nii")},
        "model": {"method": "threshold",
                  "params": {"thresholds": [300], "class_names": ["background", "bone"]}},
        "output": {"url": str(folder / f"{name}.zarr"), "chunks": [8, 16, 16]},
        "cluster": {"kind": "threads"}, "runs_dir": str(folder / "runs"), **extra}))
    return job


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CT, its labels on its own grid (lps.nii), the same labels stored RAS by nibabel
    (ras.nii), and on the CT's grid but moved 100 mm along x (moved.nii); the job's output."""
    folder = tmp_path_factory.mktemp("voxel-grid")
    ct = np.zeros(IJK, np.int16)
    ct[10:20, 10:20, 5:10] = 500
    nib.save(nib.Nifti1Image(ct, LPS), str(folder / "ct.nii"))
    labels = nib.Nifti1Image((ct > 300).astype(np.uint8), LPS)
    nib.save(labels, str(folder / "lps.nii"))
    nib.save(nib.as_closest_canonical(labels), str(folder / "ras.nii"))
    moved = LPS.copy()
    moved[0, 3] += 100
    nib.save(nib.Nifti1Image(np.asarray(labels.dataobj), moved), str(folder / "moved.nii"))
    done = geoseg("run", str(_job(folder, "out")))
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def _refused(done, *expected: str) -> None:
    text = done.stdout + done.stderr
    assert done.returncode != 0, text
    for part in expected:
        assert part in text, text


@pytest.mark.timeout(240)
def test_eval_refuses_a_reference_stored_ras_against_an_lps_prediction(ct_run):
    ras = nib.load(str(ct_run / "ras.nii"))
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")  # same shape, another grid
    assert ras.shape == IJK
    done = geoseg("eval", str(ct_run / "out.zarr"), str(ct_run / "ras.nii"))
    _refused(done, "REF", "is not on the voxel grid of PRED",
             "(z, y, x) along (+z, +y, +x)", "against (z, y, x) along (+z, -y, -x)",
             "origin (x, y, z) (40, 30, -50), REF's first", "resample_from_to")


@pytest.mark.timeout(240)
def test_eval_refuses_a_reference_whose_origin_moved_100_mm(ct_run):
    done = geoseg("eval", str(ct_run / "out.zarr"), str(ct_run / "moved.nii"))
    _refused(done, "origin (x, y, z) (140, 30, -50) against",
             "origin (x, y, z) (40, 30, -50)")


@pytest.mark.timeout(240)
def test_the_reference_resampled_onto_the_prediction_scores_as_nibabel_arrays_do(ct_run):
    """The advice works: nibabel's resample_from_to puts the RAS labels back on the CT's grid;
    the IoU of bone is then nibabel's (1.0: the same box), as it is against the original."""
    ct = nib.load(str(ct_run / "ct.nii"))
    back = resample_from_to(nib.load(str(ct_run / "ras.nii")), ct, order=0)
    nib.save(back, str(ct_run / "back.nii"))
    truth, bone = np.asarray(back.dataobj) > 0, np.asarray(ct.dataobj) > 300
    iou = (truth & bone).sum() / (truth | bone).sum()
    for ref in ("back.nii", "lps.nii"):
        out = ct_run / f"{ref}.json"
        done = geoseg("eval", str(ct_run / "out.zarr"), str(ct_run / ref), "--json", str(out),
                      "--overwrite")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(out.read_text())["per_class"]["bone"]["iou"] == pytest.approx(iou)


@pytest.mark.timeout(240)
def test_a_job_refuses_an_evaluate_reference_on_another_voxel_grid(ct_run):
    job = _job(ct_run, "ras-job", evaluate={"reference": {"url": str(ct_run / "ras.nii")}})
    done = geoseg("run", str(job))
    _refused(done, "evaluate.reference", "is not on the pixel grid of the input",
             "voxel affine (z, y, x) along (+z, +y, +x)",
             "nibabel.processing.resample_from_to(labels_img, input_img, order=0)")
    assert "gdalwarp" not in done.stderr  # no GIS advice for a CT volume
    assert not (ct_run / "ras-job.zarr" / "classes").exists()
