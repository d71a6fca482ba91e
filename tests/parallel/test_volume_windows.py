"""A window cut from a volume (``.isel``) is placed where it lies: its ``voxel_affine`` moves by
the voxel indices its coordinates hold, as nibabel's slicer moves a NIfTI image's affine."""

from __future__ import annotations

import dask
import nibabel as nib
import numpy as np

import geoseg
from geoseg.methods import Threshold


def _ct(path) -> str:
    rng = np.random.default_rng(0)
    data = rng.integers(-100, 900, size=(40, 36, 12)).astype(np.int16)  # (i, j, k)
    affine = np.array([[-0.7, 0, 0, 40.0], [0, -0.7, 0, 30.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def _as_zyx(affine: np.ndarray) -> np.ndarray:
    """nibabel's (i, j, k) columns in geoseg's (z, y, x) order."""
    return affine[:, [2, 1, 0, 3]]


def test_a_volume_window_gets_the_affine_nibabel_gives_the_same_slice(tmp_path):
    path = _ct(tmp_path / "ct.nii")
    raster = geoseg.open_raster(path)
    image = nib.load(path)
    for cut, (k, j, i) in [((slice(3, 9), slice(5, 30), slice(2, 38)), (slice(3, 9), slice(5, 30), slice(2, 38))),
                           ((slice(0, 12, 2), slice(None), slice(10, None)), (slice(0, 12, 2), slice(None), slice(10, None)))]:
        window = raster.isel(z=cut[0], y=cut[1], x=cut[2])
        with dask.config.set(scheduler="sync"):
            mask = geoseg.segment(window, Threshold((300.0,)))
        expected = _as_zyx(image.slicer[i, j, k].affine)
        np.testing.assert_allclose(np.asarray(mask.attrs["voxel_affine"]), expected, atol=1e-5)
        data = np.asarray(image.dataobj)[i, j, k].transpose(2, 1, 0)
        np.testing.assert_array_equal(mask.values, (data > 300).astype(np.uint8))


def test_the_whole_volume_keeps_its_affine_exactly(tmp_path):
    raster = geoseg.open_raster(_ct(tmp_path / "ct.nii"))
    mask = geoseg.segment(raster, Threshold((300.0,)))
    assert mask.attrs["voxel_affine"] == raster.attrs["voxel_affine"]
    assert mask.coords["z"].attrs["long_name"] == "voxel index"
