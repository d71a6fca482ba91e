"""geoseg convert keeps the input's value scaling (GeoTIFF band scale/offset/units, Zarr CF
attributes) beside the stored values it copies, checked against rioxarray, rasterio and xarray."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
import zarr

import geoseg
from geoseg.errors import CorruptInputError
from geoseg.io.convert import convert
from geoseg.jobs import JobSpec, run
from tests.conftest import textured_image, write_geotiff
from tests.io.test_convert import gzipped_nifti
from tests.io.test_volume_inputs import write_nifti

REFLECTANCE = {"scales": (0.0001, 0.0001), "offsets": (-0.1, -0.1),
               "units": ("reflectance", "reflectance")}
PER_BAND = {"scales": (0.0001, 0.02), "offsets": (-0.1, 0.0), "units": ("reflectance", "K")}


def scaled_geotiff(path, scales, offsets, units) -> str:
    """A two-band uint16 GeoTIFF (nodata 0 in its top-left corner) whose bands declare scales,
    offsets and units, like a reflectance product's."""
    image = (textured_image(96, 112, seed=7)[:2].astype("uint16") * 30 + 1000).astype("uint16")
    image[:, :10, :12] = 0
    tif = write_geotiff(path, image, nodata=0)
    with rasterio.open(tif, "r+") as ds:
        ds.scales, ds.offsets, ds.units = scales, offsets, units
    return tif


def raw_counts(tif, bands=None) -> np.ndarray:
    with rasterio.open(tif) as ds:
        return ds.read(bands)


def test_a_shared_scale_and_offset_reach_xarray_as_rioxarray_applies_them(tmp_path):
    tif = scaled_geotiff(tmp_path / "scaled.tif", **REFLECTANCE)
    out = str(tmp_path / "scaled.zarr")
    convert(tif, out, chunks=32)
    expected = rioxarray.open_rasterio(tif, mask_and_scale=True)
    decoded = xr.open_zarr(out, mask_and_scale=True)["raster"]
    np.testing.assert_allclose(decoded.values, expected.values, rtol=1e-6, equal_nan=True)
    assert np.isnan(decoded.values[:, :10, :12]).all()  # nodata, not the offset -0.1
    assert decoded.attrs["units"] == "reflectance"
    raster = geoseg.open_raster(out)  # geoseg reads the stored counts, as from the GeoTIFF
    assert raster.dtype == np.uint16 and raster.attrs["nodata"] == 0
    np.testing.assert_array_equal(raster.values, raw_counts(tif))
    np.testing.assert_array_equal(xr.open_zarr(out, mask_and_scale=False)["raster"].values,
                                  raw_counts(tif))


def test_a_job_on_the_converted_zarr_gives_the_classes_it_gives_on_the_geotiff(
        tmp_path, cluster_address):
    tif = scaled_geotiff(tmp_path / "scaled.tif", **REFLECTANCE)
    out = str(tmp_path / "scaled.zarr")
    convert(tif, out, chunks=32)
    classes = []
    for name, url in (("tif", tif), ("zarr", out)):
        mask = str(tmp_path / f"classes_{name}.zarr")
        spec = {"input": {"url": url}, "model": {"method": "otsu", "params": {"feature": "mean"}},
                "output": {"url": mask, "chunks": [32, 32]}}
        run(JobSpec.from_dict(spec), scheduler=cluster_address)
        classes.append(xr.open_zarr(mask, mask_and_scale=False)["classes"].values)
    np.testing.assert_array_equal(classes[0], classes[1])
    assert (classes[1][:10, :12] == 255).all() and len(np.unique(classes[1][10:])) == 2


def test_scales_that_differ_per_band_are_kept_per_band_with_a_warning(tmp_path):
    tif = scaled_geotiff(tmp_path / "mixed.tif", **PER_BAND)
    out = str(tmp_path / "mixed.zarr")
    with pytest.warns(UserWarning, match="xarray does not apply"):
        convert(tif, out, chunks=32)
    attrs = dict(zarr.open_group(out, mode="r")["raster"].attrs)
    assert attrs["band_scales"] == [0.0001, 0.02] and attrs["band_offsets"] == [-0.1, 0.0]
    assert attrs["band_units"] == ["reflectance", "K"]
    assert not {"scale_factor", "add_offset", "units", "_FillValue"} & set(attrs)
    stored = xr.open_zarr(out)["raster"]  # xarray applies none of them: the counts
    np.testing.assert_array_equal(stored.values, raw_counts(tif))
    scales = np.asarray(attrs["band_scales"])[:, None, None]
    offsets = np.asarray(attrs["band_offsets"])[:, None, None]
    expected = rioxarray.open_rasterio(tif, mask_and_scale=True).values
    valid = stored.values != 0
    np.testing.assert_allclose((stored.values * scales + offsets)[valid], expected[valid],
                               rtol=1e-6)


@pytest.mark.parametrize("from_zarr", [False, True])
def test_one_band_picked_out_of_differing_ones_takes_its_own_scale(tmp_path, from_zarr):
    """From the GeoTIFF, or from its conversion's per-band attributes."""
    tif = scaled_geotiff(tmp_path / "mixed.tif", **PER_BAND)
    source = tif
    if from_zarr:
        source = str(tmp_path / "mixed.zarr")
        with pytest.warns(UserWarning):
            convert(tif, source, chunks=32)
    out = str(tmp_path / "band2.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one band: CF holds it, nothing to warn about
        convert(source, out, bands=[2])
    attrs = dict(zarr.open_group(out, mode="r")["raster"].attrs)
    assert attrs["scale_factor"] == 0.02 and attrs["units"] == "K" and "add_offset" not in attrs
    expected = rioxarray.open_rasterio(tif, mask_and_scale=True).values[[1]]
    decoded = xr.open_zarr(out)["raster"].values
    np.testing.assert_allclose(decoded, expected, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(geoseg.open_raster(out).values, raw_counts(tif, [2]))


def test_per_band_scales_without_units_survive_converting_the_output_again(tmp_path):
    tif = scaled_geotiff(tmp_path / "mixed.tif", PER_BAND["scales"], PER_BAND["offsets"], ("", ""))
    first, again = str(tmp_path / "first.zarr"), str(tmp_path / "again.zarr")
    with pytest.warns(UserWarning, match="band_scales"):
        convert(tif, first)
    with pytest.warns(UserWarning, match="band_scales"):
        convert(first, again)
    attrs = dict(zarr.open_group(again, mode="r")["raster"].attrs)
    assert attrs["band_scales"] == [0.0001, 0.02] and attrs["band_offsets"] == [-0.1, 0.0]
    assert "band_units" not in attrs and "units" not in attrs
    np.testing.assert_array_equal(geoseg.open_raster(again).values, raw_counts(tif))


def test_per_band_scales_not_one_per_band_are_refused(tmp_path):
    tif = scaled_geotiff(tmp_path / "mixed.tif", **PER_BAND)
    first, again = str(tmp_path / "first.zarr"), tmp_path / "again.zarr"
    with pytest.warns(UserWarning):
        convert(tif, first)
    zarr.open_group(first, mode="r+")["raster"].attrs["band_scales"] = [0.5]
    said = (r"band_scales=\[0.5\]; expected a list of 2 values, one per band\. "
            r"Fix or remove it, then convert again\.$")
    with pytest.raises(CorruptInputError, match=said):  # refused before anything is written
        convert(first, str(again))
    assert not again.exists()


def test_an_unscaled_geotiff_writes_no_scaling(tmp_path):
    tif = scaled_geotiff(tmp_path / "plain.tif", (1.0, 1.0), (0.0, 0.0), ("", ""))
    out = str(tmp_path / "plain.zarr")
    convert(tif, out)
    attrs = dict(zarr.open_group(out, mode="r")["raster"].attrs)
    assert not {"scale_factor", "add_offset", "units", "_FillValue", "band_scales",
                "band_offsets", "band_units"} & set(attrs)
    assert xr.open_zarr(out)["raster"].dtype == np.uint16


def xarray_scaled_zarr(path, scale_factor) -> str:
    """An int16 (band, y, x) Zarr that xarray wrote with CF scale_factor, add_offset, units."""
    values = np.random.default_rng(2).uniform(5, 30, size=(1, 40, 50))
    values[0, :4, :4] = np.nan
    data = xr.DataArray(values, dims=("band", "y", "x"), attrs={"units": "degC"})
    encoding = {"raster": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 5.0,
                           "_FillValue": -1}}
    data.to_dataset(name="raster").to_zarr(str(path), encoding=encoding, zarr_format=3)
    zarr.open_group(str(path), mode="r+")["raster"].attrs["scale_factor"] = scale_factor
    return str(path)


def test_a_zarr_inputs_cf_scaling_is_kept(tmp_path):
    source = xarray_scaled_zarr(tmp_path / "cf.zarr", 0.01)
    out = str(tmp_path / "out.zarr")
    convert(source, out, chunks=16)
    expected = xr.open_zarr(source)["raster"].values
    np.testing.assert_allclose(xr.open_zarr(out)["raster"].values, expected, equal_nan=True)
    assert xr.open_zarr(out)["raster"].attrs["units"] == "degC"
    stored = zarr.open_group(source, mode="r")["raster"][:]
    np.testing.assert_array_equal(geoseg.open_raster(out).values, stored)


def test_a_scale_that_is_no_number_is_refused(tmp_path):
    source = xarray_scaled_zarr(tmp_path / "cf.zarr", "0.01x")
    out = tmp_path / "out.zarr"
    with pytest.raises(CorruptInputError, match=r"scale_factor.*'0.01x'; expected a finite number.*again\.$"):
        convert(source, str(out))
    assert not out.exists()


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_scaled_nifti_is_converted_as_read_with_its_scaling_applied(tmp_path, gzipped):
    """nibabel applies scl_slope and scl_inter: the values are physical, no scaling is left."""
    data = np.random.default_rng(3).integers(0, 1000, size=(9, 8, 5), dtype=np.int16)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    scaled = {"slope": 0.5, "inter": -10.0}
    scan = (gzipped_nifti(tmp_path, data, affine, **scaled) if gzipped
            else str(write_nifti(tmp_path / "scan.nii", data, affine, **scaled)))
    out = str(tmp_path / "scan.zarr")
    convert(scan, out)
    expected = np.transpose(data * 0.5 - 10.0, (2, 1, 0))
    np.testing.assert_allclose(geoseg.open_raster(out).values[0], expected, rtol=1e-6)
    np.testing.assert_allclose(xr.open_zarr(out)["raster"].values[0], expected, rtol=1e-6)
    attrs = dict(zarr.open_group(out, mode="r")["raster"].attrs)
    assert not {"scale_factor", "add_offset", "band_scales"} & set(attrs)
    assert attrs["units"] == "mm"  # the voxel spacing's, as before
