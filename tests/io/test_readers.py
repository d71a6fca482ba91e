"""open_raster: Zarr v2/v3 and GeoTIFF, local, memory:// and S3, metadata only on the client."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import zarr

import geoseg
from geoseg.errors import (
    BandMismatchError,
    CorruptInputError,
    RasterNotFoundError,
    UnsupportedFormatError,
)
from geoseg.io.readers import open_source
from tests.conftest import CRS, SHARED_DATA, TRANSFORM, textured_image, write_geotiff, write_zarr


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(90, 70, seed=1)


def test_zarr_v3_array(tmp_path, image):
    raster = geoseg.open_raster(write_zarr(tmp_path / "a.zarr", image, chunks=(32, 32)), chunks=32)
    assert raster.dims == ("band", "y", "x") and raster.shape == image.shape
    assert raster.data.chunks == ((3,), (32, 32, 26), (32, 32, 6))
    np.testing.assert_array_equal(raster.values, image)


def test_zarr_v2_two_dimensional_array_gets_a_band_axis(tmp_path, image):
    arr = zarr.create_array(str(tmp_path / "v2.zarr"), shape=image.shape[1:], chunks=(40, 40),
                            dtype="uint8", zarr_format=2)
    arr[:] = image[0]
    raster = geoseg.open_raster(str(tmp_path / "v2.zarr"))
    assert raster.shape == (1, 90, 70)
    np.testing.assert_array_equal(raster.values[0], image[0])


def test_zarr_group_with_spatial_ref_and_band_selection(tmp_path, image):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    arr = group.create_array("image", shape=image.shape, chunks=(3, 50, 50), dtype="uint8",
                             dimension_names=["band", "y", "x"],
                             attributes={"grid_mapping": "spatial_ref", "nodata": 0})
    arr[:] = image
    geo = geoseg.io.GeoRef.from_crs(CRS, TRANSFORM)
    group.create_array("spatial_ref", shape=(), dtype="int64", attributes=geo.spatial_ref_attrs())
    group.create_array("labels", shape=image.shape[1:], dtype="uint8", chunks=(50, 50))
    with pytest.raises(UnsupportedFormatError, match="labels, image|image, labels"):
        geoseg.open_raster(str(tmp_path / "g.zarr"))
    raster = geoseg.open_raster(str(tmp_path / "g.zarr"), variable="image", bands=[3, 1])
    np.testing.assert_array_equal(raster.values, image[[2, 0]])
    assert rasterio.crs.CRS.from_wkt(raster.attrs["crs"]) == rasterio.crs.CRS.from_string(CRS)
    assert tuple(raster.attrs["transform"]) == tuple(TRANSFORM)[:6]
    assert raster.attrs["nodata"] == 0
    assert float(raster.x[0]) == TRANSFORM.c + 5.0 and float(raster.y[0]) == TRANSFORM.f - 5.0


def test_memory_store(image):
    url = "memory://geoseg-test/img.zarr"
    write_zarr(url, image)
    np.testing.assert_array_equal(geoseg.open_raster(url).values, image)


def test_geotiff_keeps_georeferencing_and_reads_windows(tmp_path, image):
    path = write_geotiff(tmp_path / "a.tif", image, nodata=0)
    raster = geoseg.open_raster(path, chunks=(64, 64))
    np.testing.assert_array_equal(raster.values, image)
    np.testing.assert_array_equal(raster[:, 10:75, 5:69].values, image[:, 10:75, 5:69])
    with rasterio.open(path) as ds:
        assert rasterio.crs.CRS.from_wkt(raster.attrs["crs"]) == ds.crs
        assert tuple(raster.attrs["transform"]) == tuple(ds.transform)[:6]
        assert raster.attrs["nodata"] == ds.nodata


def test_client_reads_no_pixels(tmp_path, image, monkeypatch):
    """Opening reads metadata only: every pixel read happens inside a chunk task."""
    from geoseg.io import sources

    calls = []
    original = sources.GeoTIFFSource.read
    monkeypatch.setattr(sources.GeoTIFFSource, "read", lambda self, w: calls.append(w) or original(self, w))
    raster = geoseg.open_raster(write_geotiff(tmp_path / "a.tif", image), chunks=(32, 32))
    assert calls == []
    raster.compute()
    assert len(calls) == 3 * 3


def test_s3_zarr(s3_server, image):
    url = "s3://geoseg/inputs/img.zarr"
    arr = zarr.create_array(url, shape=image.shape, chunks=(3, 32, 32), dtype="uint8",
                            storage_options=s3_server)
    arr[:] = image
    raster = geoseg.open_raster(url, storage_options=s3_server)
    np.testing.assert_array_equal(raster.values, image)
    assert "SUPER-SECRET" not in repr(raster.encoding["geoseg_source"])


def test_missing_url(tmp_path):
    with pytest.raises(RasterNotFoundError, match="No raster at .*nope.zarr"):
        geoseg.open_raster(str(tmp_path / "nope.zarr"))


def test_a_broken_image_says_it_is_one(tmp_path):
    (tmp_path / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(UnsupportedFormatError, match="starts like an image file, but imageio cannot"):
        geoseg.open_raster(str(tmp_path / "notes.png"))


def test_band_numbers_out_of_range(tmp_path, image):
    with pytest.raises(BandMismatchError, match="numbered from 1 to 3"):
        geoseg.open_raster(write_geotiff(tmp_path / "a.tif", image), bands=[0, 4])


@pytest.mark.skipif(not (SHARED_DATA / "RGB.byte.tif").exists(), reason="shared Landsat sample absent")
def test_real_landsat_sample():
    raster = geoseg.open_raster(str(SHARED_DATA / "RGB.byte.tif"))
    with rasterio.open(SHARED_DATA / "RGB.byte.tif") as ds:
        np.testing.assert_array_equal(raster.values, ds.read())
        assert list(raster.band.values) == ["red", "green", "blue"]
        assert raster.attrs["nodata"] == ds.nodata == 0


def test_file_url(tmp_path, image):
    path = write_zarr(tmp_path / "f.zarr", image)
    np.testing.assert_array_equal(geoseg.open_raster(f"file://{path}").values, image)
    tif = write_geotiff(tmp_path / "f.tif", image)
    np.testing.assert_array_equal(geoseg.open_raster(f"file://{tif}").values, image)


def test_a_group_of_several_rasters_asks_which_one(tmp_path):
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    image = textured_image(20, 30)
    group.create_array("image", data=image, dimension_names=["band", "y", "x"])
    group.create_array("labels", data=image[0], dimension_names=["y", "x"])
    with pytest.raises(UnsupportedFormatError, match=r"holds 2 raster-like arrays \(image, labels\); .*"
                                                     r"input\.variable .*--variable .*"
                                                     r"--pred-variable or --ref-variable for "
                                                     r"geoseg eval.*variable="):
        geoseg.open_raster(str(tmp_path / "two.zarr"))
    np.testing.assert_array_equal(geoseg.open_raster(str(tmp_path / "two.zarr"), variable="labels").values[0],
                                  image[0])


def test_a_zarr_chunk_size_of_0_is_refused_naming_the_field(tmp_path):
    """zarr opens such metadata; every read or plan of it then divided by zero."""
    url = write_zarr(tmp_path / "zc.zarr", textured_image(64, 64))
    meta = json.loads((tmp_path / "zc.zarr" / "zarr.json").read_text())
    meta["chunk_grid"]["configuration"]["chunk_shape"] = [3, 0, 64]
    (tmp_path / "zc.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptInputError, match=rf"Zarr array {url} declares chunks \(3, 0, 64\) "
                       r"\(chunk_grid.configuration.chunk_shape in zarr.json\); every chunk size"):
        open_source(url)


def test_an_empty_raster_is_refused_with_its_shape(tmp_path):
    url = str(tmp_path / "empty.zarr")
    zarr.create_array(url, shape=(3, 0, 64), chunks=(3, 64, 64), dtype="uint8",
                      dimension_names=["band", "y", "x"])
    with pytest.raises(CorruptInputError, match=rf"input {url} declares shape \(3, 0, 64\) "
                       r"\(band, spatial axes\) and chunks \(64, 64\); every size must be >= 1"):
        open_source(url)


def test_an_overview_of_a_tiff_without_georeference_lies_on_its_pixel_grid(tmp_path):
    """GDAL gives the overviews of a TIFF without a georeference an all-zero transform: the
    overview is read on the full image's pixel grid, scaled as GDAL scales a georeferenced
    twin's (here translated by (100, 200) so that GDAL keeps it)."""
    from affine import Affine
    from rasterio.enums import Resampling

    data = textured_image(255, 321)
    paths = {}
    for name, georef in (("plain", {}), ("twin", {"crs": CRS, "transform": Affine.translation(100, 200)})):
        paths[name] = str(tmp_path / f"{name}.tif")
        with rasterio.open(paths[name], "w", driver="GTiff", height=255, width=321, count=3,
                           dtype="uint8", **georef) as ds:
            ds.write(data)
            ds.build_overviews([2, 4], Resampling.average)
    with rasterio.open(paths["twin"], overview_level=1) as ds:
        expected, twin = ds.read(), ds.transform
    raster = geoseg.open_raster(paths["plain"], level=2)
    np.testing.assert_array_equal(raster.values, expected)
    np.testing.assert_allclose(raster.attrs["transform"],
                               tuple(Affine.translation(-100, -200) @ twin)[:6])


def test_a_tiff_placed_by_ground_control_points_only_warns_that_they_are_not_carried(tmp_path):
    """rasterio sees four GCPs and no transform; geoseg reads the pixel grid and says that
    its outputs will not be georeferenced, and how to keep the georeference."""
    from rasterio.control import GroundControlPoint

    path = str(tmp_path / "gcps.tif")
    points = [GroundControlPoint(row, col, 500000 + 10 * col, 4500000 - 10 * row)
              for row, col in ((0, 0), (0, 40), (30, 0), (30, 40))]
    with rasterio.open(path, "w", driver="GTiff", height=30, width=40, count=1, dtype="uint8",
                       gcps=points, crs=CRS) as ds:
        ds.write(textured_image(30, 40, bands=1))
    with rasterio.open(path) as ds:
        assert len(ds.gcps[0]) == 4 and ds.crs is None and ds.transform.is_identity
    with pytest.warns(UserWarning, match=r"gcps\.tif is georeferenced by 4 ground control points.*"
                                         r"no georeference.*gdalwarp"):
        raster = geoseg.open_raster(path)
    assert raster.attrs["transform"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    with warnings.catch_warnings():  # a file with a transform says nothing
        warnings.simplefilter("error")
        geoseg.open_raster(write_geotiff(tmp_path / "placed.tif", textured_image(30, 40)))


def test_an_alpha_band_left_out_of_the_bands_read_warns_that_transparency_is_not_no_data(tmp_path):
    path = str(tmp_path / "rgba.tif")
    with rasterio.open(path, "w", driver="GTiff", height=30, width=40, count=4, dtype="uint8",
                       crs=CRS, transform=TRANSFORM, photometric="RGB", alpha="YES") as ds:
        ds.write(textured_image(30, 40, bands=4))
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    with pytest.warns(UserWarning, match=r"band 4 is marked alpha .* segmented as data.*"
                                         r"gdal_translate -b 1 -b 2 -b 3 -mask 4"):
        geoseg.open_raster(path, bands=[1, 2, 3])
    with warnings.catch_warnings():  # read as a band, it is the user's data
        warnings.simplefilter("error")
        assert geoseg.open_raster(path).shape[0] == 4


@pytest.mark.parametrize("levels", [300, 100_000])
def test_a_projjson_crs_nested_too_deeply_is_refused_before_rasterio_decodes_it(tmp_path, image,
                                                                                 levels):
    """rasterio decodes a PROJJSON string with Python's json: 990 levels already reached the
    recursion limit (a RecursionError, with whatever the garbage collector runs then failing)."""
    crs = '{"type": ' + "[" * levels + "]" * levels + "}"
    url = write_zarr(tmp_path / "a.zarr", image, crs=crs, transform=list(TRANSFORM)[:6])
    with pytest.raises(UnsupportedFormatError, match=f"received a CRS written as PROJJSON that "
                                                     f"nests {levels + 1} levels deep; expected"):
        geoseg.open_raster(url)
    projjson = json.dumps(rasterio.crs.CRS.from_string(CRS).to_dict(projjson=True))
    raster = geoseg.open_raster(write_zarr(tmp_path / "b.zarr", image, crs=projjson,
                                           transform=list(TRANSFORM)[:6]))
    assert rasterio.crs.CRS.from_wkt(raster.attrs["crs"]) == rasterio.crs.CRS.from_string(CRS)
