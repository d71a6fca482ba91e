"""segment() on DataArrays as xarray users hold them: windows selected with ``.isel``/``.sel``,
uneven dask chunks, rioxarray's nodata, and pixel types no model computes on."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.errors import ParameterError, PlanError, UnsupportedFormatError
from geoseg.methods import Threshold
from geoseg.models import Segmenter
from geoseg.synth import make_scene
from tests.conftest import textured_image, write_zarr

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0)


class Identity(Segmenter):
    """Stand-in "model": scores are the input bands themselves."""

    name = "identity"

    def __init__(self, bands: int, halo: int = 0):
        self.classes = tuple(ClassInfo(f"b{i}") for i in range(bands))
        self.stride = (1, 1)
        self.halo = (halo, halo)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()


def write_tif(path, image: np.ndarray, nodata=None) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=image.shape[2], height=image.shape[1],
                       count=image.shape[0], dtype=image.dtype, crs="EPSG:32633", transform=TRANSFORM,
                       nodata=nodata, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(image)
        dst.descriptions = ("red", "green", "blue")[:image.shape[0]]
    return str(path)


# --- default output chunks: the raster's largest chunk per axis, not its first ---

def test_a_window_of_a_chunked_raster_gets_its_chunk_size_not_its_first_partial_chunk():
    image = np.zeros((1, 1024, 1024), np.uint8)
    sub = xr.DataArray(image, dims=("band", "y", "x")).chunk({"y": 128, "x": 128}).isel(
        y=slice(127, None), x=slice(127, None))
    assert sub.chunks[1][0] == 1
    out = geoseg.segment(sub, Identity(1))
    assert out.data.chunks == ((128,) * 7 + (1,), (128,) * 7 + (1,))
    assert len(out.data.dask) < 10_000  # 1.6 million when taken from the first chunk (1 x 1)


def test_uneven_chunks_give_the_largest_as_the_default():
    raster = xr.DataArray(np.zeros((1, 290, 290), np.uint8), dims=("band", "y", "x")).chunk(
        {"y": (13, 200, 77), "x": (13, 200, 77)})
    assert geoseg.segment(raster, Identity(1)).data.chunksize == (200, 200)


def test_chunks_given_still_win():
    raster = xr.DataArray(np.zeros((1, 290, 290), np.uint8), dims=("band", "y", "x")).chunk(50)
    assert geoseg.segment(raster, Identity(1), chunks=(30, 70)).data.chunksize == (30, 70)


@st.composite
def uneven_chunks(draw, n: int) -> tuple[int, ...]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(min(draw(st.integers(1, 60)), n - sum(sizes)))
    return tuple(sizes)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), height=st.integers(1, 100), width=st.integers(1, 100), halo=st.integers(0, 3))
def test_identity_model_reproduces_any_window_of_unevenly_chunked_input(data, height, width, halo):
    image = np.random.default_rng(height * width).integers(1, 255, (2, height, width)).astype(np.uint8)
    raster = xr.DataArray(image, dims=("band", "y", "x")).chunk(
        {"y": data.draw(uneven_chunks(height)), "x": data.draw(uneven_chunks(width))})
    y0, x0 = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    y1, x1 = data.draw(st.integers(y0 + 1, height)), data.draw(st.integers(x0 + 1, width))
    sub = raster.isel(y=slice(y0, y1), x=slice(x0, x1))
    with dask.config.set(scheduler="sync"):
        out = geoseg.segment(sub, Identity(2, halo), output="probabilities", tile=8)
        np.testing.assert_array_equal(out.values, image[:, y0:y1, x0:x1].astype(np.float32))
    assert out.data.chunks[1][0] == max(sub.chunks[1])
    assert out.data.chunks[2][0] == max(sub.chunks[2])


def test_a_window_of_a_stored_raster_equals_the_model_on_that_window(tmp_path, model_path):
    image = textured_image(150, 130, seed=5)
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, chunks=(40, 40)))
    model = geoseg.load_model(model_path)
    sub = raster.isel(y=slice(39, 141), x=slice(1, 121))
    reference = model.predict_image(image[:, 39:141, 1:121])
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(sub, model, output="probabilities", tile=32)
        classes = geoseg.segment(sub, model, tile=32)
        np.testing.assert_allclose(probs.values, reference, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(classes.values, reference.argmax(0))
    assert classes.data.chunksize == (40, 40)


# --- a window's georeference: its own transform, as rasterio and rioxarray give it ---

def _gdal(transform) -> str:
    return " ".join(repr(float(v)) for v in transform.to_gdal())


@pytest.mark.parametrize("rows, cols", [(slice(37, 237), slice(51, 311)), (slice(0, 10), slice(5, 400)),
                                        (slice(299, 300), slice(399, 400))])
def test_a_window_selected_with_isel_gets_its_own_transform(tmp_path, rows, cols):
    path = write_tif(tmp_path / "img.tif", textured_image(300, 400))
    sub = geoseg.open_raster(path).isel(y=rows, x=cols)
    out = geoseg.segment(sub, Identity(3), output="probabilities")
    expected = window_transform(Window.from_slices(rows, cols), TRANSFORM)
    assert out.attrs["transform"] == list(expected)[:6]
    assert out.spatial_ref.attrs["GeoTransform"] == _gdal(expected)
    assert out.attrs["crs"] == sub.attrs["crs"]


ROTATED = Affine.translation(1000, 2000) * Affine.rotation(30) * Affine.scale(2, -3)


@pytest.mark.parametrize("rows, cols", [(slice(5, 30), slice(7, 40)), (slice(3, 40, 3), slice(1, 50, 2)),
                                        (slice(46, 47), slice(0, 53))])
def test_a_window_of_a_rotated_raster_gets_its_own_transform(tmp_path, rows, cols):
    """A rotated grid has no map coordinates per axis: its y/x coordinates are its pixel
    indices, which place a window as rasterio.windows.transform does, a strided one with each
    pixel centred on the file pixel it holds (as the coordinates of a north-up window place it)."""
    image = textured_image(47, 53, bands=1)
    path = tmp_path / "rotated.tif"
    with rasterio.open(path, "w", driver="GTiff", width=53, height=47, count=1, dtype="uint8",
                       crs="EPSG:32618", transform=ROTATED) as dst:
        dst.write(image)
    sub = geoseg.open_raster(str(path)).isel(y=rows, x=cols)
    out = geoseg.segment(sub, geoseg.methods.Threshold((100.0,)), chunks=16)
    top = Window.from_slices((rows.start, rows.stop), (cols.start, cols.stop))
    xstep, ystep = cols.step or 1, rows.step or 1
    expected = (window_transform(top, ROTATED) @ Affine.translation((1 - xstep) / 2, (1 - ystep) / 2)
                @ Affine.scale(xstep, ystep))
    assert Affine(*out.attrs["transform"]).almost_equals(expected, 1e-9)
    assert out.spatial_ref.attrs["GeoTransform"] == _gdal(Affine(*out.attrs["transform"]))
    np.testing.assert_array_equal(out.values, image[0, rows, cols] > 100)
    with dask.config.set(scheduler="sync"):
        out.to_dataset().to_zarr(tmp_path / "out.zarr")
    back = geoseg.open_raster(str(tmp_path / "out.zarr"), variable="classes")
    assert Affine(*back.attrs["transform"]).almost_equals(expected, 1e-9)


@pytest.mark.parametrize("rotated", [True, False])
@pytest.mark.parametrize("rows, cols", [(slice(None, None, -1), slice(None)),
                                        (slice(None), slice(40, 2, -1)), (slice(40, 2, -3), slice(50, None, -2))])
def test_a_reversed_window_places_each_pixel_over_the_input_pixel_it_holds(tmp_path, rotated, rows, cols):
    """Each result pixel's footprint holds the centre (per rasterio's transform of the file) of
    the input pixel it was computed from; at a step of one the centres coincide."""
    transform = ROTATED if rotated else Affine.translation(1000, 2000) @ Affine.scale(2, -3)
    image = textured_image(47, 53, bands=1)
    path = tmp_path / "img.tif"
    with rasterio.open(path, "w", driver="GTiff", width=53, height=47, count=1, dtype="uint8",
                       crs="EPSG:32618", transform=transform) as dst:
        dst.write(image)
    out = geoseg.segment(geoseg.open_raster(str(path)).isel(y=rows, x=cols),
                         geoseg.methods.Threshold((100.0,)), chunks=16)
    placed = ~Affine(*out.attrs["transform"]) @ transform  # file pixel -> result pixel
    held_rows, held_cols = np.arange(47)[rows], np.arange(53)[cols]
    i, j = np.meshgrid(np.arange(len(held_rows)), np.arange(len(held_cols)), indexing="ij")
    u, v = placed @ (held_cols[j] + 0.5, held_rows[i] + 0.5)  # the held pixels' centres, in result pixels
    assert np.all((u >= j - 1e-9) & (u <= j + 1 + 1e-9) & (v >= i - 1e-9) & (v <= i + 1 + 1e-9))
    if abs(rows.step or 1) == abs(cols.step or 1) == 1:
        np.testing.assert_allclose(u, j + 0.5, atol=1e-9)
        np.testing.assert_allclose(v, i + 0.5, atol=1e-9)
    np.testing.assert_array_equal(out.values, image[0, rows, cols] > 100)


@pytest.mark.parametrize("rotated", [True, False])
def test_a_window_picked_with_a_list_of_pixels_is_refused_naming_the_fix(tmp_path, rotated):
    transform = ROTATED if rotated else Affine.translation(1000, 2000) @ Affine.scale(2, -3)
    path = tmp_path / "img.tif"
    with rasterio.open(path, "w", driver="GTiff", width=53, height=47, count=1, dtype="uint8",
                       crs="EPSG:32618", transform=transform) as dst:
        dst.write(textured_image(47, 53, bands=1))
    with pytest.raises(ParameterError, match=r"x coordinates are not evenly spaced .*slice"):
        geoseg.segment(geoseg.open_raster(str(path)).isel(x=[0, 10, 39]), Threshold((100.0,)))


def test_float32_map_coordinates_with_rounding_noise_are_not_taken_for_a_picked_window():
    """30 cm pixels 4000 km from the origin, stored in float32 as many files store them, step
    unevenly by up to 5% of a pixel: the raster was refused as picked with a list of pixels."""
    res, x0, y0 = 0.3, 500000.0, 4000000.0
    x = (x0 + res * (np.arange(64) + 0.5)).astype("float32")
    y = (y0 - res * (np.arange(64) + 0.5)).astype("float32")
    assert np.ptp(np.diff(y.astype(np.float64))) > 1e-6 * res  # uneven, as float32 holds them
    image = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    raster = xr.DataArray(image, dims=("band", "y", "x"), coords={"band": [1], "y": y, "x": x},
                          attrs={"transform": [res, 0.0, x0, 0.0, -res, y0]})
    out = geoseg.segment(raster, Threshold((0.5,)), chunks=32)
    np.testing.assert_array_equal(out.values, image[0] > 0.5)
    x[5] = np.nan  # still named as the coordinate that is not a number, not as a picked window
    with pytest.raises(UnsupportedFormatError, match=r"x coordinates hold a value that is not a finite number"):
        geoseg.segment(raster.assign_coords(x=x), Threshold((0.5,)), chunks=32)


def test_a_window_selected_with_sel_agrees_with_rioxarray(tmp_path):
    rioxarray = pytest.importorskip("rioxarray")
    path = write_tif(tmp_path / "img.tif", textured_image(300, 400))
    x, y = slice(500600.0, 502000.0), slice(4499000.0, 4498000.0)
    sub = geoseg.open_raster(path).sel(x=x, y=y)
    expected = rioxarray.open_rasterio(path).sel(x=x, y=y).rio.transform()
    out = geoseg.segment(sub, Identity(3))
    assert out.attrs["transform"] == list(expected)[:6]
    assert out.spatial_ref.attrs["GeoTransform"] == _gdal(expected)
    np.testing.assert_array_equal(out.x, sub.x)


def test_a_rioxarray_window_segmented_and_written_reads_back_where_it_lies(tmp_path):
    rioxarray = pytest.importorskip("rioxarray")
    path = write_tif(tmp_path / "img.tif", textured_image(300, 400))
    sub = rioxarray.open_rasterio(path).isel(y=slice(37, 237), x=slice(51, 311)).assign_coords(
        band=["red", "green", "blue"])
    out = geoseg.segment(sub, Identity(3))
    with dask.config.set(scheduler="sync"):
        out.to_dataset().to_zarr(tmp_path / "out.zarr")
    back = geoseg.open_raster(str(tmp_path / "out.zarr"), variable="classes")
    expected = window_transform(Window.from_slices((37, 237), (51, 311)), TRANSFORM)
    assert back.attrs["transform"] == list(expected)[:6]
    assert "transform" not in out.attrs  # rioxarray keeps it in spatial_ref only; none is added


def test_the_whole_image_keeps_its_transform_exactly(tmp_path):
    path = write_tif(tmp_path / "img.tif", textured_image(30, 40))
    raster = geoseg.open_raster(path)
    out = geoseg.segment(raster, Identity(3))
    assert out.attrs["transform"] == raster.attrs["transform"]
    assert out.spatial_ref.attrs["GeoTransform"] == raster.spatial_ref.attrs["GeoTransform"]


@pytest.mark.parametrize("where", ["attrs", "spatial_ref"])
def test_a_raster_without_coordinates_keeps_the_transform_it_declares(tmp_path, where):
    """xarray makes up 0, 1, 2... for a dimension without a coordinate: read as pixel centres,
    they put the result at the origin with a 1-unit pixel, in the raster's CRS."""
    raster = geoseg.open_raster(write_tif(tmp_path / "img.tif", textured_image(30, 40)))
    bare = raster.drop_vars(["x", "y"])
    if where == "attrs":
        bare = bare.drop_vars("spatial_ref")
    out = geoseg.segment(bare, Identity(3))
    if where == "attrs":
        assert out.attrs["transform"] == list(TRANSFORM)[:6]
    else:
        assert out.spatial_ref.attrs["GeoTransform"] == _gdal(TRANSFORM)


def test_a_rotated_transform_is_kept_as_is():
    rotated = [10.0, 2.0, 500000.0, 1.0, -10.0, 4500000.0]
    raster = xr.DataArray(np.zeros((1, 20, 30), np.uint8), dims=("band", "y", "x"),
                          coords={"y": np.arange(20.0), "x": np.arange(30.0)},
                          attrs={"transform": rotated}).isel(x=slice(5, None))
    assert geoseg.segment(raster, Identity(1)).attrs["transform"] == rotated


# --- nodata: rioxarray's _FillValue, by the Zarr reader's rules ---

def test_rioxarray_fill_value_marks_nodata(tmp_path, model_path):
    rioxarray = pytest.importorskip("rioxarray")
    image = textured_image(90, 110, seed=3)
    image[image == 0] = 1
    image[:, 20:50, 30:70] = 0
    path = write_tif(tmp_path / "nd.tif", image, nodata=0)
    raster = rioxarray.open_rasterio(path).assign_coords(band=["red", "green", "blue"])
    assert raster.attrs["_FillValue"] == 0 and "nodata" not in raster.attrs
    model = geoseg.load_model(model_path)
    with dask.config.set(scheduler="sync"):
        out = geoseg.segment(raster, model, chunks=64)
        classes = out.values
    expected = model.predict_image(image, nodata=0).argmax(0)
    expected[20:50, 30:70] = 255
    np.testing.assert_array_equal(classes, expected)
    assert out.attrs["nodata"] == 255 and "_FillValue" not in out.attrs  # the input's 0 is a class


@pytest.mark.parametrize("key", ["_FillValue", "missing_value", "fill_value", "nodata"])
def test_each_nodata_attribute_is_read(key):
    image = np.full((1, 20, 20), 7, np.uint8)
    image[0, :5] = 3
    raster = xr.DataArray(image, dims=("band", "y", "x"), attrs={key: 3})
    with dask.config.set(scheduler="sync"):
        classes = geoseg.segment(raster, Identity(1)).values
    assert (classes[:5] == 255).all() and (classes[5:] == 0).all()


@pytest.mark.parametrize("dtype, nodata, others", [
    (np.uint64, 2**64 - 1, [2**64 - 2, 2**64 - 1000]),  # float64 holds none of them apart
    (np.int64, 2**53 + 1, [2**53, 2**53 + 2]),
])
def test_a_64_bit_nodata_marks_only_its_own_pixels(tmp_path, dtype, nodata, others):
    """Compared as integers, as numpy compares them, from attributes and from a Zarr store."""
    image = np.array([[[nodata, *others, 5, 7]]], dtype=dtype)
    expected = [[255, 1, 1, 0, 1]]
    raster = xr.DataArray(image, dims=("band", "y", "x"), attrs={"nodata": np.array(nodata, dtype)})
    with dask.config.set(scheduler="sync"):
        assert geoseg.segment(raster, Threshold((6.0,))).values.tolist() == expected
        url = str(tmp_path / "wide.zarr")
        zarr.create_array(url, shape=image.shape, dtype=dtype, chunks=image.shape,
                          dimension_names=("band", "y", "x"), attributes={"nodata": nodata})[:] = image
        assert geoseg.segment(geoseg.open_raster(url), Threshold((6.0,))).values.tolist() == expected


def test_a_nodata_attribute_that_is_no_number_is_refused():
    raster = xr.DataArray(np.zeros((1, 8, 8), np.uint8), dims=("band", "y", "x"),
                          attrs={"_FillValue": "none"})
    with pytest.raises(ValueError, match=r"attrs\['_FillValue'\] = 'none'; expected a number"):
        geoseg.segment(raster, Identity(1))


# --- pixel types: refused as open_raster refuses them ---

@pytest.mark.parametrize("dtype, kind", [(np.complex64, "complex"), (str, "text"), (object, "not numbers"),
                                         ("datetime64[s]", "dates and times")])
def test_pixels_no_model_computes_on_are_refused_at_segment_time(dtype, kind):
    raster = xr.DataArray(np.ones((3, 16, 16), np.uint8), dims=("band", "y", "x")).astype(dtype)
    with pytest.raises(UnsupportedFormatError, match=f"dtype .*\\({kind}\\); geoseg reads bool, integer "
                                                     "and floating-point rasters. Convert it first"):
        geoseg.segment(raster, Identity(3))


@pytest.mark.parametrize("dtype", [bool, np.int16, np.uint32, np.float16, np.float64])
def test_numbers_and_bools_are_accepted(dtype):
    raster = xr.DataArray(np.ones((1, 16, 16)), dims=("band", "y", "x")).astype(dtype)
    with dask.config.set(scheduler="sync"):
        assert geoseg.segment(raster, Identity(1)).values.shape == (16, 16)


# --- what a result keeps of its input's attributes, and its bands' names ---

def test_a_class_map_of_a_scaled_geotiff_saves_and_reads_back_as_its_class_ids(tmp_path):
    """rioxarray puts a reflectance GeoTIFF's scale and offset (and band names) in ``attrs``;
    the class map carried them, so ``to_zarr`` then ``open_zarr`` decoded the ids 0..2 as
    -0.1, -0.0999, ... and ``rio.to_raster`` refused the three band names for one band."""
    rioxarray = pytest.importorskip("rioxarray")
    image = textured_image(128, 160, seed=5)
    path = write_tif(tmp_path / "refl.tif", image)
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = (0.0001,) * 3, (-0.1,) * 3
    raster = rioxarray.open_rasterio(path, chunks={"x": 64, "y": 64})
    assert raster.attrs["scale_factor"] == 0.0001 and len(raster.attrs["long_name"]) == 3
    expected = image.argmax(0)  # Identity's scores are the bands: the class is the largest
    out = geoseg.segment(raster, Identity(3))
    assert not {"scale_factor", "add_offset", "long_name"} & set(out.attrs)
    with dask.config.set(scheduler="sync"):
        out.to_dataset().to_zarr(tmp_path / "out.zarr")
        out.rio.to_raster(tmp_path / "out.tif")
    back = xr.open_zarr(tmp_path / "out.zarr")["classes"].values
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, expected)
    with rasterio.open(tmp_path / "out.tif") as written:
        np.testing.assert_array_equal(written.read(1), expected)


class RGB(Identity):
    bands = ("red", "green", "blue")


@pytest.mark.parametrize("names, attrs, said", [
    (["blue", "green", "red"], {}, r"isel\(band=\[2, 1, 0\]\)"),
    ([1, 2, 3], {"long_name": ("blue", "green", "red")}, r"isel\(band=\[2, 1, 0\]\)"),
    (["red", "red", "blue"], {}, "Select bands holding red, green, blue")])
def test_bands_named_as_the_models_in_another_order_are_warned_about(names, attrs, said):
    """The model read BGR as RGB without a word (a job warns): 0.57 of pixels agreed."""
    raster = xr.DataArray(np.zeros((3, 16, 16), np.uint8), dims=("band", "y", "x"),
                          coords={"band": names}, attrs=attrs)
    with pytest.warns(UserWarning, match=rf"bands reach identity as .*expects red, green, blue .*{said}"):
        geoseg.segment(raster, RGB(3))


@pytest.mark.parametrize("names, attrs", [(["red", "green", "blue"], {}),
                                          ([1, 2, 3], {"long_name": ("red", "green", "blue")}),
                                          ([1, 2, 3], {})])
def test_bands_in_the_models_order_or_unnamed_give_no_warning(names, attrs):
    raster = xr.DataArray(np.zeros((3, 16, 16), np.uint8), dims=("band", "y", "x"),
                          coords={"band": names}, attrs=attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        geoseg.segment(raster, RGB(3))


def test_a_rioxarray_raster_reordered_as_the_warning_says_warns_no_more():
    """isel keeps long_name in file order: the reordered raster warned again, and following that
    advice swapped the bands back."""
    raster = xr.DataArray(np.zeros((3, 16, 16), np.uint8), dims=("band", "y", "x"),
                          coords={"band": [1, 2, 3]}, attrs={"long_name": ("blue", "green", "red")})
    with pytest.warns(UserWarning, match=r"isel\(band=\[2, 1, 0\]\)"):
        geoseg.segment(raster, RGB(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        geoseg.segment(raster.isel(band=[2, 1, 0]), RGB(3))


@pytest.mark.parametrize("coords", [{}, {"band": [1.0, 2.0, 3.0]}])
def test_long_name_without_rioxarray_s_band_numbers_names_the_bands_in_order(coords):
    """Without a band coordinate, or with float numbers, long_name was no longer read."""
    raster = xr.DataArray(np.zeros((3, 16, 16), np.uint8), dims=("band", "y", "x"),
                          coords=coords, attrs={"long_name": ("blue", "green", "red")})
    with pytest.warns(UserWarning, match="bands reach identity as blue, green, red"):
        geoseg.segment(raster, RGB(3))


def _range_warnings(raster: xr.DataArray) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        geoseg.segment(raster, "builtin:demo-unet")
    return [str(w.message) for w in caught if "was trained on band" in str(w.message)]


def test_reflectance_in_0_1_given_to_a_model_of_0_255_is_warned_about_with_figures():
    """The commonest mistake of all ran silently in segment() (a job warned, only of values
    spread wider than the model's): the demo scene divided by 255, in memory."""
    image = make_scene(256, 256, seed=3).image
    said = _range_warnings(xr.DataArray(image / np.float32(255), dims=("band", "y", "x")))
    assert len(said) == 3, said
    assert "band 1 (0): sampled values" in said[0] and "demo-unet was trained on band red" in said[0]
    assert "its values reach 0.9" in said[0] and "under a tenth of the model's" in said[0]
    assert "raster.isel(band=...)" in said[0] and "input.bands" not in said[0]
    assert _range_warnings(xr.DataArray(image, dims=("band", "y", "x"))) == []  # as trained


def test_values_past_float32_are_warned_about_readably_and_said_to_become_no_data():
    """A float64 scene times 1e300 was said to be "2608387500000000078475820414...992.0 model
    stds away" (a 300-digit number), with numpy's overflow warnings beside it."""
    image = make_scene(256, 256, seed=3).image.astype(np.float64) * 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow warning of numpy's own
        said = _range_warnings(xr.DataArray(image, dims=("band", "y", "x")))
    assert len(said) == 3, said
    assert "past float32's largest number (3.403e+38)" in said[0], said[0]
    assert "such pixels are left as no data" in said[0] and len(said[0]) < 600, said[0]


def test_a_stored_raster_is_sampled_where_its_chunks_are(tmp_path):
    image = make_scene(256, 256, seed=4).image.astype(np.int16) * 40 - 2000  # another sensor's scale
    raster = geoseg.open_raster(write_zarr(tmp_path / "scene.zarr", image, chunks=(128, 128)))
    said = _range_warnings(raster)
    assert len(said) == 3 and all("4 chunk(s)" in s and "model stds away" in s for s in said), said
    assert _range_warnings(raster * 1) == []  # a computed raster is not read before it is asked for


def test_a_wrapped_model_is_checked_as_the_model_itself():
    """TTA, ensembles and slice-wise models hold a model file's statistics too."""
    from geoseg import TTA, Ensemble

    image = make_scene(256, 256, seed=3).image / np.float32(255)
    model = geoseg.load_model("builtin:demo-unet")
    raster = xr.DataArray(image, dims=("band", "y", "x"))
    for wrapped in (TTA(model, "flips"), Ensemble([model, TTA(model, "flips")])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            geoseg.segment(raster, wrapped)
        said = [str(w.message) for w in caught if "was trained on band" in str(w.message)]
        assert len(said) == 3, said  # one per band, the same model counted once


def test_models_built_in_memory_are_told_apart_though_none_has_a_hash_yet():
    from geoseg import TTA, Ensemble
    from geoseg.ensembles.members import trained_models
    from tests.conftest import random_unet

    a, b = random_unet(seed=1), random_unet(seed=2)
    assert a.info.sha256 == b.info.sha256 == ""  # what the first version keyed them by
    assert trained_models(Ensemble([a, b, TTA(a, "flips")])) == [a.info, b.info]


def test_calm_water_and_a_few_valid_pixels_are_not_called_off_the_models_range():
    """Narrow, but of the model's magnitude (uint8 water about 30, std 2.5), warned as 'rescale';
    as did two valid pixels among no-data."""
    rng = np.random.default_rng(4)
    water = np.clip(rng.normal(30, 2.5, (3, 256, 256)), 0, 255).astype(np.uint8)
    assert _range_warnings(xr.DataArray(water, dims=("band", "y", "x"))) == []
    sparse = np.zeros((3, 256, 256), np.float32)
    sparse[:, 5, 5:7] = 0.5  # two valid pixels of reflectance
    raster = xr.DataArray(sparse, dims=("band", "y", "x"), attrs={"nodata": 0})
    assert _range_warnings(raster) == []


def test_a_constant_band_is_not_called_off_the_models_range():
    image = make_scene(128, 128, seed=5).image
    image[1] = 100  # one flat band, inside the model's range: a field, or a test image
    assert _range_warnings(xr.DataArray(image, dims=("band", "y", "x"))) == []
    empty = np.zeros((3, 128, 128), np.uint8)  # an unwritten region, its nodata not declared
    assert _range_warnings(xr.DataArray(empty, dims=("band", "y", "x"))) == []


# --- what a segmenter and a raster's axes must be, said clearly ---


def test_an_axis_holding_the_models_bands_is_advised_renamed_not_selected():
    """dims ("channel", "y", "x") were advised raster.isel(channel=0), which drops two of the
    model's three bands."""
    from tests.conftest import random_unet

    image = textured_image(40, 50, bands=3, seed=1)
    raster = xr.DataArray(image, dims=("channel", "y", "x"))
    said = r"the model takes 3\), name it so: raster\.rename\(\{'channel': 'band'\}\)"
    with pytest.raises(PlanError, match=said) as refused:
        geoseg.segment(raster, random_unet(bands=3))
    assert "isel(channel=0)" not in str(refused.value)
    with pytest.raises(PlanError, match=r"If 'channel' holds the bands.*else select"):
        geoseg.segment(raster, Threshold([100]))  # any band count: both ways said


def test_a_segmenter_without_classes_is_refused_naming_the_attribute():
    """A subclass that did not set classes (docs/api.md: required) failed with AttributeError."""

    class NoClasses(Segmenter):
        name = "no-classes"

        def predict(self, batch: np.ndarray) -> np.ndarray:
            return batch

    raster = xr.DataArray(textured_image(40, 50, bands=1, seed=1), dims=("band", "y", "x"))
    with pytest.raises(ParameterError, match=r"segment\(\): model: NoClasses does not set classes; expected"):
        geoseg.segment(raster, NoClasses())
