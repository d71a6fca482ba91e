"""What ``geoseg eval`` says when its inputs cannot mean what the user thinks: label sets that
share no class name, a ``--map`` onto ids that are no class, a ``--bbox`` in another CRS."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
import zarr

from geoseg.errors import EvaluationError
from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output
from geoseg.report.eval import Labels, evaluate, region_slices
from tests.cli import geoseg
from tests.test_errors_cli import assert_clean, said

UTM = (10.0, 0.0, 5e5, 0.0, -10.0, 4.5e6)  # 10 m pixels, EPSG:32618


def _named(array: np.ndarray, names: tuple[str, ...] | None, url: str) -> Labels:
    return Labels(da.from_array(array, chunks=3), names, url=url)


def _store(tmp_path, pred: np.ndarray, ref: np.ndarray, pred_names: list[str],
           ref_names: list[str]) -> tuple[str, str]:
    """A geoseg output holding ``pred`` (UTM grid) and a Zarr of reference ``labels``."""
    target = create_output(str(tmp_path / "out.zarr"), shape=pred.shape, chunks=(8, 8),
                           georef=GeoRef.from_crs("EPSG:32618", UTM), class_names=pred_names,
                           class_dtype="uint8", nodata_class=255)
    target.open_group()["classes"][...] = pred
    reference = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w")
    reference.create_array("labels", shape=ref.shape, dtype="uint8", chunks=(5, 7),
                           attributes={"class_names": ref_names})[...] = ref
    return str(tmp_path / "out.zarr"), str(tmp_path / "ref.zarr")


def test_disjoint_class_names_warn_and_suggest_map(caplog):
    ref = np.array([[0, 1, 1, 0]], np.uint8)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        got = evaluate(_named(ref, ("water", "land"), "p.zarr"),
                       _named(ref, ("sea", "soil"), "r.zarr"))
    assert all(row["iou"] in (0.0, None) for row in got["per_class"].values())
    text = caplog.text
    assert "share no class name" in text and "water, land" in text and "sea, soil" in text
    assert "--map" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg"):  # paired by --map: nothing to say
        paired = evaluate(_named(ref, ("water", "land"), "p.zarr"),
                          _named(ref, ("sea", "soil"), "r.zarr"), mapping={0: 0, 1: 1})
    assert paired["miou"] == 1.0 and "share no class name" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg"):  # one shared name: no warning
        evaluate(_named(ref, ("water", "land"), "p.zarr"), _named(ref, ("water", "soil"), "r"))
    assert "share no class name" not in caplog.text


@pytest.mark.timeout(120)
def test_eval_command_warns_of_disjoint_names(tmp_path):
    labels = np.arange(64, dtype=np.uint8).reshape(8, 8) % 2
    out, ref = _store(tmp_path, labels, labels, ["water", "land"], ["sea", "soil"])
    done = geoseg("eval", out, ref, "--ref-variable", "labels")
    assert done.returncode == 0, done.stderr
    assert "share no class name" in said(done) and "--map" in said(done)
    mapped = geoseg("eval", out, ref, "--ref-variable", "labels", "--map", "0=0,1=1")
    assert mapped.returncode == 0 and "share no class name" not in said(mapped)


def test_map_onto_an_id_that_is_no_class_is_refused():
    ref = np.array([[0, 1, 2, 3]], np.uint8)
    pred = np.array([[0, 1, 1, 0]], np.uint8)
    with pytest.raises(EvaluationError) as caught:
        evaluate(_named(pred, ("other", "built"), "p.zarr"), _named(ref, None, "r.zarr"),
                 mapping={0: 0, 1: 0, 2: 1, 3: 7})
    message = str(caught.value)
    assert "3=7" in message and "0..1" in message and "other, built" in message
    assert "--ignore" in message


def test_map_of_ids_the_labels_never_hold_warns(caplog):
    ref = np.array([[0, 1, 1, 0]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.uint8)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        got = evaluate(_named(pred, None, "p.zarr"), _named(ref, None, "r.zarr"),
                       mapping={1: 5, 9: 0})
    # ref 1 -> class 5, never predicted: those pixels are misses, still scored
    assert got["pixels_scored"] == 4 and got["per_class"]["5"]["iou"] == 0.0
    assert "9=0 will map no scored pixel" in caplog.text
    assert "reference id 9 is no scored label of REF r.zarr (it holds 0, 1)" in caplog.text
    assert "never holds the predicted id(s) 5" in caplog.text


@pytest.mark.timeout(120)
def test_eval_command_refuses_a_map_onto_no_class(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    out, ref = _store(tmp_path, labels, labels, ["water", "land"], ["water", "land"])
    assert_clean(geoseg("eval", out, ref, "--ref-variable", "labels", "--map", "1=4"), 2,
                 "--map: received 1=4", "0..1 (water, land)")
    named = geoseg("eval", out, ref, "--ref-variable", "labels", "--map", "1=1,7=0")
    assert named.returncode == 0, named.stderr
    assert "7=0 will map no scored pixel: reference id 7 is no class of REF" in said(named)


def test_a_bbox_outside_the_raster_names_the_bbox_crs_and_bounds():
    wkt = GeoRef.from_crs("EPSG:32618", UTM).crs_wkt
    with pytest.raises(EvaluationError) as caught:
        region_slices((10, 12), bbox=(-80, 20, -70, 30), transform=UTM, crs_wkt=wkt)
    message = str(caught.value)
    assert "-80,20,-70,30" in message and "EPSG:32618" in message
    assert "500000,4499900,500120,4500000" in message  # bounds: 12 x 10 pixels of 10 m
    assert "in the raster's CRS" in message and "longitude/latitude" in message
    assert "window" not in message  # no window the user never gave
    # a bbox that overlaps the raster in part is clipped to it
    part = region_slices((10, 12), bbox=(500050, 4499950, 600000, 4600000), transform=UTM)
    assert part == (slice(0, 5), slice(5, 12))


@pytest.mark.timeout(120)
def test_eval_command_bbox_in_lon_lat_on_a_utm_raster(tmp_path):
    labels = np.zeros((10, 12), np.uint8)
    out, _ = _store(tmp_path, labels, labels, ["water", "land"], ["water", "land"])
    assert_clean(geoseg("eval", out, out, "--bbox", "-80,20,-70,30"), 2,
                 "bbox minx,miny,maxx,maxy -80,20,-70,30", "EPSG:32618",
                 "500000,4499900,500120,4500000", "must be in the raster's CRS")


def test_a_floating_point_nifti_mask_is_refused_with_how_to_store_it_as_labels(tmp_path):
    """Medical pipelines often store masks as float32; a NIfTI file has no array to name, so the
    advice is to store integers."""
    import nibabel as nib

    mask = np.zeros((6, 7, 5), np.float32)
    mask[2:4, 3:5, 1:3] = 1.0
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "ref.nii")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp_path / "pred.nii")
    result = geoseg("eval", str(tmp_path / "pred.nii"), str(tmp_path / "ref.nii"))
    assert_clean(result, 2, "ref.nii: received 1 band(s) of float32; expected one band of integer "
                 "labels", "save it with an integer dtype", "set_data_dtype(numpy.uint8)")
    assert "--ref-variable" not in said(result)
