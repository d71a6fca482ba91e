"""open_raster on Zarr that xarray or rioxarray wrote from a window: the stored ``x``/``y``
coordinates place it, as rioxarray reads them, not the whole image's ``GeoTransform`` it kept."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

import geoseg
from geoseg.io.readers import _zarr
from tests.conftest import textured_image

rioxarray = pytest.importorskip("rioxarray")

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0)
ROWS, COLS = (37, 237), (51, 311)


@pytest.fixture
def tif(tmp_path) -> str:
    path = str(tmp_path / "img.tif")
    image = textured_image(300, 400)
    with rasterio.open(path, "w", driver="GTiff", width=400, height=300, count=3, dtype=image.dtype,
                       crs="EPSG:32633", transform=TRANSFORM) as dst:
        dst.write(image)
    return path


def _rioxarray_transform(path) -> tuple[float, ...]:
    return tuple(xr.open_zarr(path, decode_coords="all")["raster"].rio.transform())[:6]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_rioxarray_window_reads_where_rasterio_puts_it(tmp_path, tif, zarr_format):
    out = tmp_path / "sub.zarr"
    window = rioxarray.open_rasterio(tif).isel(y=slice(*ROWS), x=slice(*COLS))
    window.to_dataset(name="raster").to_zarr(out, zarr_format=zarr_format)
    raster = geoseg.open_raster(str(out), variable="raster")
    expected = window_transform(Window.from_slices(ROWS, COLS), TRANSFORM)
    assert raster.attrs["transform"] == list(expected)[:6]
    assert tuple(raster.attrs["transform"]) == _rioxarray_transform(out)
    np.testing.assert_array_equal(raster.x, xr.open_zarr(out).x)
    np.testing.assert_array_equal(raster.y, xr.open_zarr(out).y)


def test_the_whole_image_reads_its_transform_exactly(tmp_path, tif):
    out = tmp_path / "full.zarr"
    rioxarray.open_rasterio(tif).to_dataset(name="raster").to_zarr(out)
    assert geoseg.open_raster(str(out), variable="raster").attrs["transform"] == list(TRANSFORM)[:6]


def test_a_strided_selection_reads_its_coordinates_step(tmp_path, tif):
    out = tmp_path / "strided.zarr"
    rioxarray.open_rasterio(tif).isel(y=slice(10, 200, 2), x=slice(20, 300, 4)).to_dataset(
        name="raster").to_zarr(out)
    raster = geoseg.open_raster(str(out), variable="raster")
    t = Affine(*raster.attrs["transform"])
    assert (t.a, t.e) == pytest.approx((40.0, -20.0))
    np.testing.assert_allclose(raster.x, xr.open_zarr(out).x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(raster.y, xr.open_zarr(out).y, rtol=0, atol=1e-6)


def test_a_transform_attribute_is_placed_by_the_coordinates_too(tmp_path):
    out = tmp_path / "attrs.zarr"
    x = 500000.0 + 10.0 * (np.arange(20, 50) + 0.5)
    y = 4500000.0 - 10.0 * (np.arange(5, 25) + 0.5)
    xr.DataArray(np.zeros((20, 30), np.uint8), dims=("y", "x"), coords={"y": y, "x": x},
                 attrs={"crs": "EPSG:32633", "transform": list(TRANSFORM)[:6]}).to_dataset(
        name="raster").to_zarr(out)
    raster = geoseg.open_raster(str(out), variable="raster")
    assert raster.attrs["transform"] == list(window_transform(Window(20, 5, 30, 20), TRANSFORM))[:6]


def test_a_rotated_geotransform_is_kept_as_is(tmp_path):
    out = tmp_path / "rotated.zarr"
    gdal = "500000.0 10.0 2.0 4500000.0 1.0 -10.0"
    spatial_ref = xr.Variable((), 0, {"GeoTransform": gdal})
    xr.Dataset({"raster": (("y", "x"), np.zeros((20, 30), np.uint8), {"grid_mapping": "spatial_ref"})},
               coords={"y": np.arange(20.0), "x": np.arange(30.0), "spatial_ref": spatial_ref}).to_zarr(out)
    raster = geoseg.open_raster(str(out), variable="raster")
    assert raster.attrs["transform"] == [10.0, 2.0, 500000.0, 1.0, -10.0, 4500000.0]


def test_long_coordinates_are_read_by_their_ends_only(tmp_path, tif, monkeypatch):
    out = tmp_path / "sub.zarr"
    rioxarray.open_rasterio(tif).isel(y=slice(*ROWS), x=slice(*COLS)).to_dataset(
        name="raster").to_zarr(out)
    monkeypatch.setattr(_zarr, "MAX_COORD_READ", 8)
    read = []
    original = _zarr._coord_values
    monkeypatch.setattr(_zarr, "_coord_values", lambda c: read.append(v := original(c)) or v)
    raster = geoseg.open_raster(str(out), variable="raster")
    assert [len(v) for v in read] == [3, 3]
    assert raster.attrs["transform"] == list(window_transform(Window.from_slices(ROWS, COLS), TRANSFORM))[:6]


def test_coordinates_of_other_lengths_or_types_are_not_read(tmp_path):
    out = tmp_path / "odd.zarr"
    xr.Dataset({"raster": (("y", "x"), np.zeros((20, 30), np.uint8), {"transform": list(TRANSFORM)[:6]}),
                "y": ("y", np.array([f"r{i}" for i in range(20)]))}).to_zarr(out)
    assert geoseg.open_raster(str(out), variable="raster").attrs["transform"] == list(TRANSFORM)[:6]


def test_coordinates_that_are_not_finite_numbers_are_refused_naming_the_axis():
    from affine import Affine

    from geoseg.errors import UnsupportedFormatError
    from geoseg.io.georef import coords_transform

    grid = Affine(10, 0, 500000, 0, -10, 4500000)
    y = 4500000 - 10 * (np.arange(4) + 0.5)
    for x, said in ((np.array([np.nan, 15.0, 25.0]), ("x coordinates hold a value that is not a "
                                                      "finite number \\(nan\\)")),
                    (np.array([1e308, np.inf, np.inf]), "x coordinates hold .*\\(inf\\)")):
        with pytest.raises(UnsupportedFormatError, match=said):
            coords_transform(grid, y, x)
    with pytest.raises(UnsupportedFormatError, match="beyond any finite number"):
        coords_transform(grid, y, np.array([-1.7e308, 1.7e308]))  # a step past any float
