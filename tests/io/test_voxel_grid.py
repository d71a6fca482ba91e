"""Volumes on one voxel grid, or not: :func:`geoseg.io.georef.grid_difference` compares voxel
affines as read from real NIfTI files (nibabel-written) and OME-Zarr images, within the rounding
of a float32 NIfTI header, and names the orientation, spacing and origin of each side."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import zarr

from geoseg.io.georef import GeoRef, grid_difference
from geoseg.io.readers import open_source

IJK = (40, 30, 12)  # NIfTI (i, j, k); geoseg reads (z, y, x) = (12, 30, 40)
LPS = np.array([[-0.7, 0, 0, 40.0], [0, -0.7, 0, 30.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
SIGNED = {"R": "+x", "L": "-x", "A": "+y", "P": "-y", "S": "+z", "I": "-z"}


def _nifti(path, affine: np.ndarray, data: np.ndarray | None = None) -> str:
    data = np.zeros(IJK, np.uint8) if data is None else data
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def _read(url: str):
    source = open_source(url)
    return source.shape[1:], source.georef


def _difference(a: str, b: str) -> str | None:
    return grid_difference(*_read(a), *_read(b))


def _directions(affine: np.ndarray) -> str:
    """nibabel's axis codes of an (i, j, k) affine, as geoseg words them for (z, y, x)."""
    return ", ".join(SIGNED[code] for code in reversed(nib.aff2axcodes(affine)))


def test_a_volume_matches_itself_and_a_copy_of_its_grid(tmp_path):
    ct = _nifti(tmp_path / "ct.nii", LPS)
    assert _difference(ct, ct) is None
    assert _difference(ct, _nifti(tmp_path / "labels.nii", LPS)) is None


def test_the_same_labels_stored_ras_are_another_grid(tmp_path):
    """nibabel's as_closest_canonical flips the array and the affine: the same world, another
    voxel grid (voxel (0, 0, 0) is another point), which a voxel by voxel score cannot use."""
    data = np.zeros(IJK, np.uint8)
    data[5:9, 2:6, 1:3] = 1
    lps = _nifti(tmp_path / "lps.nii", LPS, data)
    ras_image = nib.as_closest_canonical(nib.load(lps))
    ras = str(tmp_path / "ras.nii")
    nib.save(ras_image, ras)
    assert nib.aff2axcodes(ras_image.affine) == ("R", "A", "S")
    differs = _difference(ras, lps)
    assert differs is not None and differs.startswith("voxel affine ")
    ras_words, lps_words = _directions(ras_image.affine), _directions(LPS)
    assert (ras_words, lps_words) == ("+z, +y, +x", "+z, -y, -x")
    assert f"along ({ras_words})" in differs.split(" against ")[0]
    assert f"along ({lps_words})" in differs.split(" against ")[1]
    origin = ras_image.affine[:3, 3]  # world point of voxel (0, 0, 0), from nibabel
    assert f"origin (x, y, z) ({', '.join(f'{v:.6g}' for v in origin)})" in differs


def test_an_origin_moved_100_mm_or_another_spacing_is_another_grid(tmp_path):
    ct = _nifti(tmp_path / "ct.nii", LPS)
    moved = LPS.copy()
    moved[0, 3] += 100
    differs = _difference(_nifti(tmp_path / "moved.nii", moved), ct)
    assert differs is not None
    assert "origin (x, y, z) (140, 30, -50) against " in differs
    assert differs.endswith("origin (x, y, z) (40, 30, -50)")
    finer = LPS @ np.diag([1, 1, 0.5, 1])  # k spacing 1.25 instead of 2.5
    differs = _difference(_nifti(tmp_path / "finer.nii", finer), ct)
    assert differs.startswith("voxel affine (z, y, x) along (+z, -y, -x), spacing (1.25, 0.7, 0.7)")
    assert differs.endswith("spacing (2.5, 0.7, 0.7), origin (x, y, z) (40, 30, -50)")


def test_float32_header_rounding_is_one_grid_a_thousandth_of_a_mm_is_not(tmp_path):
    """A NIfTI header holds its affine in float32: a far origin read back differs from the
    float64 one by ~1e-5 mm. That is one grid; a shift of 1e-3 mm is not."""
    affine = LPS.copy()
    affine[:3, 3] = [-123.456789, 498.7654321, 1000.1234567]
    path = _nifti(tmp_path / "far.nii", affine)
    shape, read = _read(path)
    stored = nib.load(path).affine  # float32 terms, from nibabel
    assert not np.array_equal(stored, affine)  # the header did round the origin
    exact = GeoRef.from_voxel_affine(affine[:, [2, 1, 0, 3]])  # geoseg's (z, y, x) columns
    assert grid_difference(shape, read, shape, exact) is None
    shifted = affine.copy()
    shifted[1, 3] += 1e-3
    assert grid_difference(shape, read, shape, GeoRef.from_voxel_affine(
        shifted[:, [2, 1, 0, 3]])) is not None


def _ome_volume(path, scale: list[float], translation: list[float]) -> str:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=IJK[::-1], dtype="uint8", chunks=(6, 15, 20))
    array[:] = 0
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": n, "type": "space", "unit": "millimeter"} for n in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": scale},
            {"type": "translation", "translation": translation}]}]}]
    return str(path)


def test_an_ome_zarr_image_and_a_nifti_of_one_grid_match(tmp_path):
    """An OME-Zarr image's scale and translation (z, y, x) against a NIfTI affine placing the
    same voxel centres: one grid. Moved 100 mm along z: another."""
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    nifti = _nifti(tmp_path / "ct.nii", affine)
    assert _difference(_ome_volume(tmp_path / "a.ome.zarr", [2.5, 0.8, 0.7],
                                   [30.0, -20.0, 10.0]), nifti) is None
    differs = _difference(_ome_volume(tmp_path / "b.ome.zarr", [2.5, 0.8, 0.7],
                                      [130.0, -20.0, 10.0]), nifti)
    assert differs is not None and "origin (x, y, z) (10, -20, 130) against " in differs


@pytest.mark.parametrize("plain", [GeoRef(), GeoRef(nodata=0.0)])
def test_a_side_without_a_voxel_affine_matches_any(tmp_path, plain):
    shape, georef = _read(_nifti(tmp_path / "ct.nii", LPS))
    assert grid_difference(shape, georef, shape, plain) is None
    assert grid_difference(shape, plain, shape, georef) is None
    assert grid_difference(shape, georef, (12, 30, 41), plain).startswith("shape ")
