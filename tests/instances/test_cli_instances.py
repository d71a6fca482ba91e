"""``geoseg instances``: label a mask geoseg did not write, or an output in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from scipy import ndimage as ndi
from skimage import filters

from tests.cli import geoseg
from tests.instances.test_components import assert_same_partition


def test_semantic_zarr_mask_gets_instances_per_class(tmp_path, cluster_address):
    rng = np.random.default_rng(3)
    mask = ndi.zoom(rng.integers(0, 3, (12, 10)), 8, order=0).astype(np.uint8)
    arr = zarr.create_array(str(tmp_path / "mask.zarr"), shape=mask.shape, chunks=(30, 17),
                            dtype="uint8", dimension_names=["y", "x"])
    arr[:] = mask
    out = tmp_path / "labels.zarr"
    done = geoseg("instances", str(tmp_path / "mask.zarr"), "--out", str(out), "--cluster",
                  cluster_address, "--classes", "1,2")
    assert done.returncode == 0, done.stderr
    labels = zarr.open_group(str(out), mode="r")["instances"][:]
    ref = np.zeros(mask.shape, np.int64)
    for value in (1, 2):
        part, _ = ndi.label(mask == value)
        ref[part > 0] = part[part > 0] + ref.max()
    assert_same_partition(labels, ref)
    table = pd.read_parquet(out / "instances.parquet")
    assert len(table) == ref.max() and set(table["class"]) == {1, 2}
    assert f"{ref.max()} instance(s)" in " ".join(done.stderr.split())
    assert geoseg("verify", str(out)).returncode == 0
    opened = xr.open_zarr(str(out), mask_and_scale=False)  # as the README says any output opens
    np.testing.assert_array_equal(opened["instances"].values, labels)


def test_instances_made_with_other_settings_are_kept_unless_overwrite(tmp_path):
    mask = ndi.zoom(np.random.default_rng(4).integers(0, 3, (6, 5)), 8, order=0).astype(np.uint8)
    zarr.create_array(str(tmp_path / "mask.zarr"), shape=mask.shape, chunks=(24, 24), dtype="uint8",
                      dimension_names=["y", "x"])[:] = mask
    out = tmp_path / "labels.zarr"
    first = geoseg("instances", str(tmp_path / "mask.zarr"), "--out", str(out), "--cluster",
                   "threads", "--classes", "1,2")
    assert first.returncode == 0, first.stderr
    kept = zarr.open_group(str(out), mode="r")["instances"][:]
    table = (out / "instances.parquet").read_bytes()

    again = geoseg("instances", str(out), "--cluster", "threads", "--classes", "1")
    said = " ".join(again.stderr.split())
    assert again.returncode == 2, said
    assert "made with other settings (classes [1, 2] -> [1])" in said and "--overwrite" in said
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["instances"][:], kept)
    assert (out / "instances.parquet").read_bytes() == table
    assert geoseg("instances", str(out), "--cluster", "threads", "--classes", "1,2").returncode == 0

    replaced = geoseg("instances", str(out), "--cluster", "threads", "--classes", "1",
                      "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    ones, n = ndi.label(mask == 1)
    assert_same_partition(zarr.open_group(str(out), mode="r")["instances"][:], ones)
    assert len(pd.read_parquet(out / "instances.parquet")) == n


def test_thresholded_mri_volume_end_to_end(tmp_path, cluster_address):
    nib = pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    image = nib.load(str(Path(data_path) / "anatomical.nii"))
    volume = np.asarray(image.dataobj, dtype=float)
    mask = (volume > filters.threshold_otsu(volume) * 0.6).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, image.affine), str(tmp_path / "mask.nii"))
    out = tmp_path / "labels.zarr"
    done = geoseg("instances", str(tmp_path / "mask.nii"), "--out", str(out), "--cluster",
                  cluster_address, "--connectivity", "3")
    assert done.returncode == 0, done.stderr
    group = zarr.open_group(str(out), mode="r")
    stored = group["classes"][:]
    ref, n = ndi.label(stored, np.ones((3, 3, 3)))
    assert n > 1 and stored.sum() == mask.sum()
    assert_same_partition(group["instances"][:], ref)
    table = pd.read_parquet(out / "instances.parquet")
    assert len(table) == n and "area" in table and not (out / "polygons.parquet").exists()
    voxel = abs(np.linalg.det(image.affine[:3, :3]))
    np.testing.assert_allclose(table["area"], table["area_px"] * voxel)
    assert xr.open_zarr(str(out), mask_and_scale=False)["instances"].dims == ("z", "y", "x")


def test_a_foreign_mask_without_out_is_refused(tmp_path, cluster_address):
    arr = zarr.create_array(str(tmp_path / "mask.zarr"), shape=(8, 8), chunks=(4, 4), dtype="uint8")
    arr[:] = 1
    done = geoseg("instances", str(tmp_path / "mask.zarr"), "--cluster", cluster_address)
    assert done.returncode == 2 and "give --out" in done.stderr
    assert "Traceback" not in done.stderr


def test_float_mask_is_refused_with_advice(tmp_path, cluster_address):
    arr = zarr.create_array(str(tmp_path / "mask.zarr"), shape=(8, 8), chunks=(4, 4),
                            dtype="float32")
    arr[:] = 0.5
    done = geoseg("instances", str(tmp_path / "mask.zarr"), "--out", str(tmp_path / "o.zarr"),
                  "--cluster", cluster_address)
    assert done.returncode == 2 and "integer class ids" in done.stderr
    assert not (tmp_path / "o.zarr").exists()
