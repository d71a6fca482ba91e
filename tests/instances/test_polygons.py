"""Chunked instance polygons against rasterio's polygons of the whole array."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import fsspec
import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio.features
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from geoseg.errors import InstanceError
from geoseg.instances.polygons import geojson_text, instance_polygons, write_polygons
from geoseg.instances.table import object_table
from geoseg.io.georef import GeoRef

TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0)
ROTATED = (3.0, 1.5, 100.0, -0.5, -2.0, 50.0)
GEOREF = GeoRef.from_crs("EPSG:32618", TRANSFORM)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _synchronous() -> Iterator[None]:
    with dask.config.set(scheduler="synchronous"):
        yield


def random_labels(shape: tuple[int, int], density: float, seed: int,
                  connectivity: int = 2) -> tuple[np.ndarray, int]:
    """Labels of random blobs; 8-connected by default, so some are MultiPolygons."""
    mask = np.random.default_rng(seed).random(shape) < density
    return ndi.label(mask, ndi.generate_binary_structure(2, connectivity))


def whole_image_polygons(labels: np.ndarray, georef: GeoRef | None) -> dict[int, shapely.Geometry]:
    """Each id's polygons from rasterio on the whole array, unioned."""
    transform = rasterio.Affine.identity() if georef is None else georef.affine
    pieces: dict[int, list[shapely.Geometry]] = {}
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0,
                                                transform=transform, connectivity=4):
        pieces.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    return {i: shapely.union_all(p) for i, p in pieces.items()}


def assert_matches_whole_image(polygons: gpd.GeoDataFrame, labels: np.ndarray,
                               georef: GeoRef | None) -> None:
    expected = whole_image_polygons(labels, georef)
    assert polygons["id"].tolist() == sorted(expected)
    pixel_area = 1.0 if georef is None else abs(georef.affine.determinant)
    counts = np.bincount(labels.ravel())[polygons["id"]]
    np.testing.assert_array_equal(polygons["area_px"], counts)
    np.testing.assert_allclose(polygons.area, counts * pixel_area)
    assert polygons.is_valid.all()
    for id_, geom in zip(polygons["id"], polygons.geometry):
        assert geom.symmetric_difference(expected[id_]).area == pytest.approx(0, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.data())
def test_one_feature_per_instance_equal_to_the_whole_image(height: int, width: int,
                                                           data: st.DataObject) -> None:
    chunks = (data.draw(st.integers(max(1, height // 5), height)),
              data.draw(st.integers(max(1, width // 5), width)))
    labels, count = random_labels((height, width), data.draw(st.floats(0.05, 0.9)),
                                  data.draw(st.integers(0, 2**32 - 1)))
    georef = data.draw(st.sampled_from([None, GEOREF, GeoRef.from_crs(None, ROTATED)]))
    array = da.from_array(labels, chunks=chunks)
    if data.draw(st.booleans()):  # a zero-length chunk, as a rechunk or a concatenate leaves
        at = [data.draw(st.integers(0, len(axis))) for axis in array.chunks]
        array = array.rechunk(tuple(axis[:i] + (0,) + axis[i:] for axis, i in zip(array.chunks, at)))
    polygons = instance_polygons(array, georef)
    assert len(polygons) == count
    assert_matches_whole_image(polygons, labels, georef)


def test_an_instance_across_many_chunks_is_one_polygon_with_its_hole() -> None:
    labels = np.zeros((50, 60), dtype=np.uint32)
    labels[3:47, 5:55] = 1  # a frame over 7 chunk rows and 7 chunk columns
    labels[10:40, 12:48] = 0
    labels[20:30, 20:30] = 2
    labels[22:24, 22:24] = 0
    chunks = (7, 8)
    chunk_rows, chunk_cols = range(3 // 7, 46 // 7 + 1), range(5 // 8, 54 // 8 + 1)
    assert len(chunk_rows) * len(chunk_cols) == 49
    polygons = instance_polygons(da.from_array(labels, chunks=chunks), GEOREF)
    assert len(polygons) == 2
    frame = polygons.geometry.iloc[0]
    assert frame.geom_type == "Polygon" and len(frame.interiors) == 1
    assert_matches_whole_image(polygons, labels, GEOREF)


def test_diagonal_parts_make_one_multipolygon() -> None:
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[1, 1] = labels[2, 2] = labels[3, 3] = 7
    polygons = instance_polygons(da.from_array(labels, chunks=(2, 4)), None)
    assert polygons["id"].tolist() == [7]
    assert polygons.geometry.iloc[0].geom_type == "MultiPolygon"
    assert polygons["area_px"].tolist() == [3]


def test_a_checkerboard_of_one_id_is_one_multipolygon_of_every_square() -> None:
    """Pieces of one id inside a chunk touch its other pieces at corners only: only those at
    chunk borders are unioned (a union of all 131,072 squares of a 512^2 board took 45 s)."""
    yy, xx = np.mgrid[:96, :96]
    labels = ((yy + xx) % 2 == 0).astype(np.uint8)
    polygons = instance_polygons(da.from_array(labels, chunks=(32, 40)), GEOREF)
    board = polygons.geometry.iloc[0]
    assert board.geom_type == "MultiPolygon" and len(board.geoms) == 96 * 96 // 2
    assert_matches_whole_image(polygons, labels, GEOREF)


def test_pixel_coordinates_without_a_georef() -> None:
    labels = np.zeros((9, 11), dtype=np.uint16)
    labels[2:5, 3:10] = 1
    polygons = instance_polygons(da.from_array(labels, chunks=(4, 4)), None)
    assert polygons.crs is None
    assert polygons.geometry.iloc[0].bounds == (3.0, 2.0, 10.0, 5.0)  # x = column, y = row


def test_class_is_the_majority_as_in_the_table() -> None:
    labels, count = random_labels((30, 26), 0.5, seed=1)
    classes = da.from_array(np.random.default_rng(2).integers(0, 4, labels.shape), chunks=(8, 9))
    dlabels = da.from_array(labels, chunks=(6, 7))
    polygons = instance_polygons(dlabels, GEOREF, classes=classes)
    table = object_table(dlabels, count=count, classes=classes)
    assert polygons.columns.tolist() == ["id", "class", "area_px", "geometry"]
    np.testing.assert_array_equal(polygons["class"], table["class"])
    np.testing.assert_array_equal(polygons["area_px"], table["area_px"])


def test_negative_ids_are_background_also_with_classes() -> None:
    labels, _ = random_labels((24, 19), 0.5, seed=6)
    signed = np.where(labels % 3 == 1, -labels, labels).astype(np.int32)
    classes = np.random.default_rng(7).integers(0, 4, labels.shape)
    polygons = instance_polygons(da.from_array(signed, chunks=(7, 6)), None,
                                 classes=da.from_array(classes, chunks=(7, 6)))
    kept = np.where(signed > 0, signed, 0)
    assert_matches_whole_image(polygons, kept, None)
    expected = [np.bincount(classes[kept == i]).argmax() for i in polygons["id"]]
    np.testing.assert_array_equal(polygons["class"], expected)


def test_ids_beyond_int32() -> None:
    labels, _ = random_labels((16, 17), 0.5, seed=3)
    big = np.where(labels > 0, labels.astype(np.uint64) + 2**40, 0).astype(np.uint64)
    polygons = instance_polygons(da.from_array(big, chunks=(5, 6)), GEOREF)
    np.testing.assert_array_equal(polygons["id"], np.unique(big[big > 0]).astype(np.int64))
    np.testing.assert_array_equal(polygons["area_px"], np.unique(big[big > 0],
                                                                 return_counts=True)[1])


def test_ids_beyond_int64_are_refused() -> None:
    labels = np.array([[1, 0], [0, 2**63 + 5]], np.uint64)
    with pytest.raises(InstanceError, match="id 9223372036854775813, above .* renumber"):
        instance_polygons(da.from_array(labels, chunks=1), None)


@pytest.mark.parametrize("shape", [(8, 8), (0, 5)])
def test_no_objects_gives_no_features(shape: tuple[int, int]) -> None:
    polygons = instance_polygons(da.zeros(shape, dtype=np.uint32, chunks=3), GEOREF)
    assert len(polygons) == 0 and polygons.crs == "EPSG:32618"


@pytest.mark.parametrize("labels, message", [
    (da.zeros((4, 4), dtype=np.float32, chunks=2), "integer instance ids"),
    (da.zeros((2, 4, 4), dtype=np.uint32, chunks=2), "must have 2 dimensions"),
])
def test_bad_labels_raise_clear_errors(labels: da.Array, message: str) -> None:
    with pytest.raises(InstanceError, match=message):
        instance_polygons(labels, None)


def test_geoparquet_round_trips_with_the_crs(tmp_path: Path) -> None:
    labels, _ = random_labels((20, 23), 0.5, seed=4)
    polygons = instance_polygons(da.from_array(labels, chunks=(6, 7)), GEOREF)
    path = tmp_path / "instances.parquet"
    write_polygons(polygons, str(path))
    back = gpd.read_parquet(path)
    assert back.crs == polygons.crs == "EPSG:32618"
    assert back["id"].tolist() == polygons["id"].tolist()
    assert back.geom_equals_exact(polygons, tolerance=0).all()


def test_geojson_is_rfc_7946_on_wgs_84_one_feature_per_id() -> None:
    """It was in the raster's CRS (UTM metres), which web maps read as degrees off the globe."""
    labels, count = random_labels((20, 23), 0.5, seed=5)
    polygons = instance_polygons(da.from_array(labels, chunks=(6, 7)), GEOREF)
    url = "memory://polygons/instances.geojson"
    write_polygons(polygons, url, format="geojson")
    with fsspec.open(url, "rt") as file:
        collection = json.load(file)
    assert collection["type"] == "FeatureCollection" and "crs" not in collection
    features = collection["features"]
    assert [f["id"] for f in features] == list(range(1, count + 1))
    assert [f["properties"]["id"] for f in features] == list(range(1, count + 1))
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True)
    for feature, geom in zip(features, polygons.geometry):
        written = shapely.geometry.shape(feature["geometry"])
        expected = shapely.transform(geom, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
        assert written.equals_exact(expected, tolerance=1e-7)  # 7 decimals: about 1 cm
        assert all(part.exterior.is_ccw for part in getattr(written, "geoms", [written]))
    back = gpd.read_file(json.dumps(collection))
    assert back.crs.to_epsg() == 4326 and back["id"].tolist() == list(range(1, count + 1))


def test_geojson_of_pixel_coordinates_names_no_crs_and_keeps_them() -> None:
    labels, count = random_labels((12, 9), 0.5, seed=6)
    polygons = instance_polygons(da.from_array(labels, chunks=(5, 4)), None)
    collection = json.loads(geojson_text(polygons))
    assert "crs" not in collection and len(collection["features"]) == count
    for feature, geom in zip(collection["features"], polygons.geometry):
        assert shapely.geometry.shape(feature["geometry"]).equals(geom)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    polygons = instance_polygons(da.ones((2, 2), dtype=np.uint8, chunks=1), None)
    with pytest.raises(InstanceError, match="geoparquet, geojson"):
        write_polygons(polygons, str(tmp_path / "x.shp"), format="shapefile")


def geojson_peak(count: int, crs: str | None) -> str:
    """``bytes peak``: a GeoJSON file of ``count`` 24-sided polygons, and the most Python
    allocated at once while writing it (after the polygons were made)."""
    import tempfile
    import tracemalloc

    centres = np.random.default_rng(0).uniform(4e5, 5e5, (count, 1, 2))
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    rings = centres + 10 * np.stack([np.cos(angles), np.sin(angles)], -1)
    polygons = gpd.GeoDataFrame({"id": np.arange(1, count + 1)},
                                geometry=shapely.polygons(rings), crs=crs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "instances.geojson"
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            write_polygons(polygons, str(path), format="geojson")
            peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
        return f"{path.stat().st_size} {peak}"


@pytest.mark.parametrize("crs", ["EPSG:32618", None])
def test_geojson_is_written_as_text_not_parsed_into_python_objects(crs: str | None) -> None:
    """It was parsed into Python lists and floats to move the ids: 6 to 9 times the text's size
    here, 700 MB for 100,000 polygons. Now the text is held twice at most, with the polygons'
    WKB. Measured in a process of its own: tracemalloc counts every thread's allocations, and
    other tests' clusters run threads here."""
    code = ("from tests.instances.test_polygons import geojson_peak; "
            f"print(geojson_peak(5000, {crs!r}))")
    measured = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=120)
    size, peak = map(int, measured.stdout.split()[-2:])
    assert size > 2_000_000 and peak < 3 * size, (size, peak)
