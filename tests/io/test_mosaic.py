"""Many scenes as one raster: a glob or a list of GeoTIFFs on one grid, read as a mosaic."""

from __future__ import annotations

import itertools

import fsspec
import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

import geoseg
from geoseg.errors import RasterNotFoundError, UnsupportedFormatError
from geoseg.jobs import JobSpec, run
from tests.conftest import CRS, TRANSFORM, job_dict, textured_image

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def write_scene(path, data: np.ndarray, row: int, col: int, *, nodata=0, crs=CRS, transform=TRANSFORM) -> str:
    """``data`` as a GeoTIFF whose first pixel is at (row, col) of the ``transform`` grid."""
    placed = window_transform(Window(col, row, data.shape[2], data.shape[1]), transform)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=placed, nodata=nodata) as dst:
        dst.write(data)
    return str(path)


def cut(tmp_path, image: np.ndarray, rows: list[int], cols: list[int]) -> list[str]:
    """Cut ``image`` into scenes at the given row and column boundaries."""
    paths = []
    for i, (r0, r1) in enumerate(itertools.pairwise(rows)):
        for j, (c0, c1) in enumerate(itertools.pairwise(cols)):
            paths.append(write_scene(tmp_path / f"scene_{i}_{j}.tif", image[:, r0:r1, c0:c1], r0, c0))
    return paths


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_scenes_cut_anywhere_mosaic_back_to_the_image(tmp_path_factory, data):
    height, width = data.draw(st.integers(20, 90)), data.draw(st.integers(20, 90))
    rows = sorted({0, height, *data.draw(st.lists(st.integers(1, height - 1), max_size=3))})
    cols = sorted({0, width, *data.draw(st.lists(st.integers(1, width - 1), max_size=3))})
    image = textured_image(height, width, bands=2, seed=height * width)
    paths = cut(tmp_path_factory.mktemp("scenes"), image, rows, cols)
    order = data.draw(st.permutations(paths))
    raster = geoseg.open_raster(order, chunks=(32, 32))
    np.testing.assert_array_equal(raster.values, image)
    assert tuple(raster.attrs["transform"]) == tuple(TRANSFORM)[:6]


def test_a_glob_reads_the_union_first_scene_wins_and_gaps_are_nodata(tmp_path):
    a = np.full((1, 30, 40), 10, np.uint8)
    b = np.full((1, 30, 40), 20, np.uint8)
    b[:, :, :5] = 0  # nodata: the scene below shows through
    write_scene(tmp_path / "a.tif", a, 0, 0)
    write_scene(tmp_path / "b.tif", b, 20, 30)  # overlaps a's corner; leaves two corners uncovered
    raster = geoseg.open_raster(str(tmp_path / "*.tif"))
    values = raster.values[0]
    assert raster.shape == (1, 50, 70)
    assert (values[:30, :40] == 10).all()  # a is listed first (sorted) and wins the overlap
    assert (values[30:, 35:] == 20).all() and (values[20:30, 40:] == 20).all()
    assert (values[30:, :30] == 0).all() and (values[:20, 40:] == 0).all()  # uncovered: nodata
    assert raster.attrs["nodata"] == 0
    assert raster.attrs["transform"] == list(TRANSFORM)[:6]


def test_a_scene_below_shows_through_nan_and_infinite_pixels(tmp_path):
    a = np.full((2, 30, 40), 10, np.float32)
    a[:, 25, 35], a[:, 26, 36], a[:, 27, 37] = np.nan, np.inf, -np.inf
    a[0, 24, 34] = np.nan  # one band: no data for the run, which leaves such a pixel nodata
    write_scene(tmp_path / "a.tif", a, 0, 0)
    write_scene(tmp_path / "b.tif", np.full((2, 30, 40), 20, np.float32), 20, 30)
    values = geoseg.open_raster(str(tmp_path / "*.tif")).values
    expected = np.full((2, 50, 70), 0, np.float32)
    expected[:, 20:, 30:] = 20
    expected[:, :30, :40] = a
    expected[:, 24:28, 34:38][:, [0, 1, 2, 3], [0, 1, 2, 3]] = 20  # b's whole pixel, every band
    np.testing.assert_array_equal(values, expected)


def test_scenes_without_a_nodata_value_keep_their_zeros_and_mark_only_the_gaps(tmp_path):
    """Integer scenes declaring no nodata hold data in every pixel: a 0 is a value. Gaps
    between them read as a nodata value below the scenes' range, in a wider type."""
    a = textured_image(30, 40, bands=2, seed=1)
    a[:, :8, :8] = 0
    b = textured_image(30, 40, bands=2, seed=2)
    write_scene(tmp_path / "a.tif", a, 0, 0, nodata=None)
    write_scene(tmp_path / "b.tif", b, 20, 30, nodata=None)
    raster = geoseg.open_raster(str(tmp_path / "*.tif"))
    expected = np.full((2, 50, 70), -1, np.int16)
    expected[:, 20:, 30:] = b
    expected[:, :30, :40] = a
    assert raster.dtype == np.int16 and raster.attrs["nodata"] == -1
    np.testing.assert_array_equal(raster.values, expected)
    mask = geoseg.segment(raster, geoseg.methods.Threshold((100,), feature=1)).values
    assert (mask[:8, :8] == 0).all() and (mask[30:, :30] == 255).all()
    assert (mask[expected[0] >= 0] != 255).all()


def test_scenes_without_a_nodata_value_and_no_gap_keep_their_type(tmp_path):
    image = textured_image(40, 50, bands=1, seed=3)
    image[:, 10:20] = 0
    paths = [write_scene(tmp_path / "top.tif", image[:, :25], 0, 0, nodata=None),
             write_scene(tmp_path / "bottom.tif", image[:, 25:], 25, 0, nodata=None)]
    raster = geoseg.open_raster(paths)
    assert raster.dtype == np.uint8 and "nodata" not in raster.attrs
    np.testing.assert_array_equal(raster.values, image)


def test_wide_integer_scenes_without_a_nodata_value_and_a_gap_are_refused(tmp_path):
    scene = np.ones((1, 10, 10), np.int32)
    paths = [write_scene(tmp_path / "a.tif", scene, 0, 0, nodata=None),
             write_scene(tmp_path / "b.tif", scene, 20, 20, nodata=None)]
    with pytest.raises(UnsupportedFormatError, match=r"leave gaps in the mosaic, and their int32 "
                                                     r"pixels declare no nodata value.*a_nodata"):
        geoseg.open_raster(paths)


def test_scenes_off_the_grid_or_in_another_crs_are_refused(tmp_path):
    image = textured_image(20, 20, bands=1)
    first = write_scene(tmp_path / "a.tif", image, 0, 0)
    shifted = TRANSFORM @ TRANSFORM.translation(0.5, 0)
    half = write_scene(tmp_path / "half.tif", image, 0, 20, transform=shifted)
    with pytest.raises(UnsupportedFormatError, match="fraction of a pixel"):
        geoseg.open_raster([first, half])
    other = write_scene(tmp_path / "utm19.tif", image, 0, 20, crs="EPSG:32619")
    with pytest.raises(UnsupportedFormatError, match="CRS differ"):
        geoseg.open_raster([first, other])
    with pytest.raises(RasterNotFoundError, match="No raster matches"):
        geoseg.open_raster(str(tmp_path / "nothing-*.tif"))


def test_a_job_over_a_mosaic_on_s3_equals_whole_image_inference(tmp_path, model_path, s3_server, cluster_address):
    image = textured_image(120, 100, seed=9)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_server)
    for path in cut(tmp_path, image, [0, 50, 120], [0, 64, 100]):
        fs.put(path, f"s3://geoseg/mosaic/{path.rsplit('/', 1)[-1]}")
    data = job_dict("s3://geoseg/mosaic/scene_*.tif", model_path, str(tmp_path / "out.zarr"))
    data["input"]["storage_options"] = s3_server
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)
    import zarr

    classes = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][...]
    np.testing.assert_array_equal(classes, geoseg.load_model(model_path).predict_image(image).argmax(0))
    assert report.provenance["input"]["format"] == "mosaic"


def test_a_glob_that_matches_only_itself_is_one_raster(tmp_path):
    """A local name holding a glob character matches itself: opened once, not globbed again."""
    image = textured_image(32, 48)
    path = tmp_path / "scene?.tif"
    with rasterio.open(path, "w", driver="GTiff", width=48, height=32, count=3, dtype="uint8",
                       crs=CRS, transform=TRANSFORM) as dst:
        dst.write(image)
    raster = geoseg.open_raster(str(path))
    assert raster.encoding["geoseg_source"].format == "geotiff"
    np.testing.assert_array_equal(raster.values, image)


@pytest.mark.parametrize("gap", [False, True])
def test_coverage_is_checked_band_by_band_past_the_cells_checked_at_once(tmp_path, monkeypatch, gap):
    """Scenes at unaligned offsets make many cells between their edges: checked a band of rows
    at a time, a mosaic without gaps keeps its type (it was taken to have gaps and widened, or
    refused for 4-byte integers)."""
    from geoseg.io import mosaic

    monkeypatch.setattr(mosaic, "MAX_COVER_CELLS", 5)
    image = textured_image(40, 60, bands=1, seed=4)
    paths = []
    for k, (top, bottom) in enumerate(itertools.pairwise([0, 7, 19, 26, 40])):
        for left, right in itertools.pairwise([0, 11 + 3 * k, 60]):  # cut at another column each
            if gap and (k, left) == (2, 0):
                continue
            paths.append(write_scene(tmp_path / f"s{k}_{left}.tif", image[:, top:bottom, left:right],
                                     top, left, nodata=None))
    raster = geoseg.open_raster(paths)
    if gap:
        assert raster.dtype == np.int16 and raster.attrs["nodata"] == -1
        assert (raster.values[:, 19:26, :17] == -1).all()
    else:
        assert raster.dtype == np.uint8 and "nodata" not in raster.attrs
        np.testing.assert_array_equal(raster.values, image)


def test_a_masked_scene_beside_an_unmasked_one_is_refused_naming_the_mask(tmp_path):
    """Both scenes store uint8; the masked one reads widened (int16, nodata -1): the refusal
    names the mask, not only the dtypes no file declares."""
    image = textured_image(20, 20, bands=1)
    first = write_scene(tmp_path / "a.tif", image, 0, 0, nodata=None)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(first, "r+") as dst:
        dst.write_mask(np.full((20, 20), 255, np.uint8))
    second = write_scene(tmp_path / "b.tif", image, 0, 20, nodata=None)
    with pytest.raises(UnsupportedFormatError, match=r"dtype differ.*a\.tif has an internal mask, whose "
                                                     r"masked pixels read as nodata -1 in int16.*gdalwarp"):
        geoseg.open_raster([first, second])
