"""Where an input's no data is declared beyond a plain ``nodata`` value: the CF ``_FillValue``
attribute xarray and rioxarray write to Zarr, and a GeoTIFF's internal (per-dataset) mask. Each
is compared with an independent read (rioxarray, rasterio)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
import zarr
from rasterio.env import Env

import geoseg
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io import open_source
from tests.conftest import textured_image, write_geotiff


def rioxarray_zarr(tmp_path, image: np.ndarray, nodata: float, zarr_format: int) -> str:
    """``image`` written as a GeoTIFF with ``nodata``, then to Zarr by rioxarray."""
    tif = write_geotiff(tmp_path / "scene.tif", image, nodata=nodata)
    url = str(tmp_path / "scene.zarr")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        data = rioxarray.open_rasterio(tif).rename("image")
        data.to_dataset().to_zarr(url, mode="w", zarr_format=zarr_format)
    return url


def rioxarray_nodata(url: str) -> float:
    """The nodata rioxarray reads from the stored (undecoded) values."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        return xr.open_zarr(url, mask_and_scale=False)["image"].rio.nodata


def test_a_zarr_written_by_rioxarray_keeps_its_nodata(tmp_path):
    image = textured_image(64, 96, seed=1)
    image[:, :8, :8] = 0
    url = rioxarray_zarr(tmp_path, image, 0, zarr_format=3)
    assert "_FillValue" in zarr.open_array(url + "/image").attrs  # the CF attribute, not fill_value
    source = open_source(url, variable="image")
    assert source.georef.nodata == rioxarray_nodata(url) == 0
    assert geoseg.open_raster(url, variable="image").attrs["nodata"] == 0


def test_a_float_fill_value_attribute_is_decoded_as_xarray_encodes_it(tmp_path):
    """xarray stores a float ``_FillValue`` of a Zarr v3 array base64-encoded."""
    image = textured_image(64, 96, seed=2).astype("float32")
    image[:, :8, :8] = -9999.0
    url = rioxarray_zarr(tmp_path, image, -9999.0, zarr_format=3)
    assert isinstance(zarr.open_array(url + "/image").attrs["_FillValue"], str)
    assert open_source(url, variable="image").georef.nodata == rioxarray_nodata(url) == -9999.0


@pytest.mark.parametrize(("dtype", "nodata"), [("uint8", 0), ("float32", -9999.0)])
def test_a_zarr_v2_written_by_rioxarray_keeps_its_nodata(tmp_path, dtype, nodata):
    """For Zarr v2, xarray writes CF's _FillValue as the array's fill_value in .zarray, not as
    an attribute (as for v3): geoseg read no nodata there."""
    image = textured_image(64, 96, seed=6).astype(dtype)
    image[:, :8, :8] = nodata
    url = rioxarray_zarr(tmp_path, image, nodata, zarr_format=2)
    array = zarr.open_array(url + "/image")
    assert array.metadata.zarr_format == 2 and "_FillValue" not in array.attrs
    assert array.metadata.fill_value == nodata
    assert open_source(url, variable="image").georef.nodata == rioxarray_nodata(url) == nodata
    assert geoseg.open_raster(url, variable="image").attrs["nodata"] == nodata


def test_a_zarr_v2_fill_value_is_nodata_where_xarray_reads_it_so(tmp_path):
    """A Zarr v2 array zarr wrote in xarray's encoding (dimension names in _ARRAY_DIMENSIONS)
    declares its nodata by its fill_value, as a v3 one does by its _FillValue attribute; a
    fill_value alone, v2 without that encoding or v3, is only what absent chunks read as."""
    dims = ["band", "y", "x"]
    v2 = zarr.create_array(str(tmp_path / "v2.zarr"), shape=(2, 16, 16), chunks=(2, 8, 8),
                           dtype="int16", fill_value=-9999, zarr_format=2,
                           attributes={"_ARRAY_DIMENSIONS": dims})
    v2[:, :8, :] = 1  # the other half: chunks never written, read as the fill value
    assert open_source(str(tmp_path / "v2.zarr")).georef.nodata == -9999
    raster = geoseg.open_raster(str(tmp_path / "v2.zarr"))
    valid = geoseg.core.segmenter.valid_mask(raster.values, raster.attrs["nodata"])
    assert valid[:8].all() and not valid[8:].any()
    zarr.create_array(str(tmp_path / "v3.zarr"), shape=(2, 16, 16), chunks=(2, 8, 8),
                      dtype="int16", fill_value=-9999, dimension_names=dims,
                      attributes={"_FillValue": -9999})
    assert open_source(str(tmp_path / "v3.zarr")).georef.nodata == -9999  # v3: the attribute
    for fmt in (2, 3):  # fill_value metadata alone: no nodata, in either format
        zarr.create_array(str(tmp_path / f"plain{fmt}.zarr"), shape=(16, 16), chunks=(8, 8),
                          dtype="int16", fill_value=-9999, zarr_format=fmt)
        assert open_source(str(tmp_path / f"plain{fmt}.zarr")).georef.nodata is None, fmt


def test_zarr_nodata_attributes_are_read_in_rioxarrays_order(tmp_path):
    """``_FillValue``, then ``missing_value``, ``fill_value`` and ``nodata`` (attributes: the
    array's own ``fill_value`` metadata declares no nodata)."""
    for attrs, expected in [({"nodata": 7}, 7.0), ({"missing_value": 3, "nodata": 7}, 3.0),
                            ({"_FillValue": 1, "nodata": 7}, 1.0), ({}, None)]:
        url = str(tmp_path / f"a{len(attrs)}{expected}.zarr")
        array = zarr.create_array(url, shape=(16, 16), chunks=(16, 16), dtype="uint8",
                                  fill_value=5)
        array.attrs.update(attrs)
        assert open_source(url).georef.nodata == expected, attrs


def test_a_bad_fill_value_attribute_says_what_it_received(tmp_path):
    url = str(tmp_path / "bad.zarr")
    zarr.create_array(url, shape=(16, 16), chunks=(16, 16), dtype="uint8").attrs["_FillValue"] = "x"
    with pytest.raises(CorruptInputError, match=r"_FillValue.*'x'.*expected a number"):
        open_source(url)


def write_masked(path, image: np.ndarray, mask: np.ndarray, nodata: float | None = None) -> str:
    """``image`` as a tiled GeoTIFF with an internal per-dataset mask (0: no data)."""
    write_geotiff(path, image, nodata=nodata)
    with Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    return str(path)


def masked_pixels(shape: tuple[int, int]) -> np.ndarray:
    mask = np.full(shape, 255, np.uint8)
    mask[30:50, 60:90] = 0
    mask[:3, :] = 0
    return mask


def rasterio_valid(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        assert all(rasterio.enums.MaskFlags.per_dataset in f for f in src.mask_flag_enums)
        return src.read_masks(1) > 0


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_a_geotiffs_internal_mask_marks_no_data(tmp_path, dtype):
    image = textured_image(100, 130, seed=3).astype(dtype) + 1  # no value is 0 or -1
    path = write_masked(tmp_path / "masked.tif", image, masked_pixels((100, 130)))
    source = open_source(path)
    raster = geoseg.open_raster(path, chunks=48)  # windows cutting the masked area
    valid = geoseg.core.segmenter.valid_mask(raster.values, source.georef.nodata)
    np.testing.assert_array_equal(valid, rasterio_valid(path))
    with rasterio.open(path) as src:  # the other pixels keep their values
        np.testing.assert_array_equal(raster.values[:, valid], src.read()[:, valid])


def test_an_internal_mask_with_a_nodata_value_keeps_the_value(tmp_path):
    image = textured_image(100, 130, seed=4) + 1
    path = write_masked(tmp_path / "both.tif", image, masked_pixels((100, 130)), nodata=0)
    source = open_source(path)
    assert (source.dtype, source.georef.nodata) == ("uint8", 0)
    raster = geoseg.open_raster(path)
    valid = geoseg.core.segmenter.valid_mask(raster.values, 0)
    np.testing.assert_array_equal(valid, rasterio_valid(path))


def test_a_wide_integer_geotiff_with_a_mask_is_refused_with_the_fix(tmp_path):
    image = textured_image(64, 64, seed=5).astype("int32")
    path = write_masked(tmp_path / "wide.tif", image, masked_pixels((64, 64)))
    with pytest.raises(UnsupportedFormatError, match=r"internal mask.*int32.*nodata"):
        open_source(path)
