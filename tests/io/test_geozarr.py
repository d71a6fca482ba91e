"""Georeferenced Zarr: rioxarray's CF ``spatial_ref`` variable, and GeoZarr-style attributes
(``proj:`` and ``spatial:`` conventions, and older STAC-like ``proj:epsg`` / ``proj:transform``)
on the array or its group. CRS and transform must equal what was written, compared as rasterio
CRS objects and affine coefficients."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyproj
import pytest
import xarray as xr
import zarr
from affine import Affine
from rasterio.crs import CRS

import geoseg
from geoseg.errors import UnsupportedFormatError
from tests.conftest import textured_image

UTM = CRS.from_epsg(32618)
LAEA = CRS.from_epsg(3035)
AFFINE = Affine(20.0, 0.0, 4321000.0, 0.0, -20.0, 3210000.0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(60, 50, seed=4)


def write_array(
    path: str,
    image: np.ndarray,
    attrs: dict,
    group_attrs: dict | None = None,
    dims: tuple[str, ...] = ("band", "y", "x"),
) -> str:
    group = zarr.open_group(path, mode="w", attributes=group_attrs or {})
    group.create_array(
        "image",
        shape=image.shape,
        chunks=(3, 32, 32),
        dtype=image.dtype,
        dimension_names=list(dims),
        attributes=attrs,
    )[:] = image
    return path


def georef_of(raster: xr.DataArray) -> tuple[CRS | None, Affine | None]:
    crs = raster.attrs.get("crs")
    transform = raster.attrs.get("transform")
    return (CRS.from_wkt(crs) if crs else None), (Affine(*transform) if transform else None)


def test_zarr_written_by_rioxarray(tmp_path, image):
    pytest.importorskip("rioxarray")
    array = xr.DataArray(image, dims=("band", "y", "x"), coords={"band": [1, 2, 3]})
    array = array.rio.write_crs(LAEA).rio.write_transform(AFFINE)
    xs = AFFINE.c + AFFINE.a * (np.arange(50) + 0.5)
    ys = AFFINE.f + AFFINE.e * (np.arange(60) + 0.5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        array.assign_coords(x=xs, y=ys).to_dataset(name="image").to_zarr(str(tmp_path / "rio.zarr"))
    raster = geoseg.open_raster(str(tmp_path / "rio.zarr"))
    np.testing.assert_array_equal(raster.values, image)
    assert georef_of(raster) == (LAEA, AFFINE)
    np.testing.assert_allclose(raster.x.values, xs)
    np.testing.assert_allclose(raster.y.values, ys)


@pytest.mark.parametrize(
    ("attrs", "crs"),
    [
        ({"proj:code": "EPSG:32618"}, UTM),
        ({"proj:wkt2": UTM.to_wkt(version="WKT2_2019")}, UTM),
        ({"proj:projjson": json.loads(pyproj.CRS.from_epsg(3035).to_json())}, LAEA),
        ({"proj:epsg": 3035}, LAEA),
        ({"geo": {"proj": {"version": "0.1", "code": "EPSG:3035"}}}, LAEA),
    ],
)
def test_geozarr_crs_on_the_array(tmp_path, image, attrs, crs):
    conventions = {"spatial:dimensions": ["y", "x"], "spatial:transform": list(AFFINE)[:6]}
    raster = geoseg.open_raster(
        write_array(str(tmp_path / "a.zarr"), image, {**attrs, **conventions})
    )
    assert georef_of(raster) == (crs, AFFINE)
    assert (
        float(raster.x[0]) == AFFINE.c + AFFINE.a / 2
        and float(raster.y[-1]) == AFFINE.f + AFFINE.e * 59.5
    )
    np.testing.assert_array_equal(raster.values, image)


def test_geozarr_on_the_group_with_named_spatial_dimensions(tmp_path, image):
    """The example of the spatial convention: proj:code and spatial:transform on the group, and
    dimensions called Y and X."""
    group_attrs = {
        "proj:code": "EPSG:3035",
        "spatial:dimensions": ["Y", "X"],
        "spatial:transform": list(AFFINE)[:6],
        "spatial:registration": "pixel",
    }
    path = write_array(str(tmp_path / "g.zarr"), image, {}, group_attrs, dims=("band", "Y", "X"))
    raster = geoseg.open_raster(path)
    assert raster.dims == ("band", "y", "x")
    assert georef_of(raster) == (LAEA, AFFINE)


def test_array_attributes_win_over_the_group(tmp_path, image):
    path = write_array(
        str(tmp_path / "g.zarr"),
        image,
        {"proj:code": "EPSG:32618"},
        {"proj:code": "EPSG:3035", "spatial:transform": list(AFFINE)[:6]},
    )
    assert georef_of(geoseg.open_raster(path)) == (UTM, AFFINE)


def test_node_registration_moves_the_origin_to_the_pixel_corner(tmp_path, image):
    centre = Affine(1.0, 0.0, -10.0, 0.0, -1.0, 50.0)  # (0, 0) is the centre of the first pixel
    attrs = {
        "proj:code": "EPSG:4326",
        "spatial:transform": list(centre)[:6],
        "spatial:registration": "node",
    }
    raster = geoseg.open_raster(write_array(str(tmp_path / "n.zarr"), image, attrs))
    assert georef_of(raster) == (CRS.from_epsg(4326), Affine(1.0, 0.0, -10.5, 0.0, -1.0, 50.5))
    assert float(raster.x[0]) == -10.0 and float(raster.y[0]) == 50.0


def test_stac_style_nine_value_transform(tmp_path, image):
    attrs = {"proj:epsg": 32618, "proj:transform": [*list(AFFINE)[:6], 0, 0, 1]}
    assert georef_of(geoseg.open_raster(write_array(str(tmp_path / "s.zarr"), image, attrs))) == (
        UTM,
        AFFINE,
    )


def test_unknown_transform_types_are_skipped(tmp_path, image):
    attrs = {
        "proj:code": "EPSG:32618",
        "spatial:transform_type": "rpc",
        "spatial:transform": [1, 2, 3],
    }
    assert georef_of(geoseg.open_raster(write_array(str(tmp_path / "r.zarr"), image, attrs))) == (
        UTM,
        None,
    )


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"proj:code": "EPSG:999999"}, r"proj:code = 'EPSG:999999' is not a CRS PROJ knows"),
        ({"proj:epsg": "hello"},  # was a generic corrupt-metadata message about int()
         r"proj:epsg = 'hello' is not a CRS PROJ knows \(invalid literal for int"),
        ({"proj:code": "EPSG:abc"}, r"proj:code = 'EPSG:abc' is not a CRS PROJ knows"),
        (
            {"spatial:transform": [10.0, 0.0, 5.0]},
            r"spatial:transform = \[10\.0, 0\.0, 5\.0\] is not an affine",
        ),
        (
            {"proj:transform": "ten"},
            r"proj:transform = 'ten' is not an affine transform; expected 6 numbers",
        ),
    ],
)
def test_bad_geozarr_attributes_are_clear_errors(tmp_path, image, attrs, message):
    with pytest.raises(UnsupportedFormatError, match=message):
        geoseg.open_raster(write_array(str(tmp_path / "bad.zarr"), image, attrs))


def test_crs_attributes_that_disagree_are_refused_and_those_that_agree_read(tmp_path, image):
    """proj:code EPSG:4326 beside a UTM proj:wkt2 read as the WKT, silently."""
    conventions = {"spatial:dimensions": ["y", "x"], "spatial:transform": list(AFFINE)[:6]}
    wkt = UTM.to_wkt(version="WKT2_2019")
    agree = write_array(str(tmp_path / "a.zarr"), image,
                        {"proj:code": "EPSG:32618", "proj:wkt2": wkt, **conventions})
    assert georef_of(geoseg.open_raster(agree))[0] == UTM
    disagree = write_array(str(tmp_path / "b.zarr"), image,
                           {"proj:code": "EPSG:4326", "proj:wkt2": wkt, **conventions})
    with pytest.raises(UnsupportedFormatError, match=r"The Zarr attributes proj:wkt2 = .* and "
                                                     r"proj:code = 'EPSG:4326' name different "
                                                     r"CRSs; expected one CRS"):
        geoseg.open_raster(disagree)
