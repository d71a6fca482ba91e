"""The chunked object table against scikit-image's regionprops and numpy on the whole array."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.measure import regionprops

from geoseg.errors import InstanceError
from geoseg.instances.table import chunk_partial, merge, object_table, write_table
from geoseg.io import nifti, omezarr
from geoseg.io.georef import GeoRef
from geoseg.io.readers.base import SPACE

TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0)
ROTATED = (3.0, 1.5, 100.0, -0.5, -2.0, 50.0)  # rotated and sheared: exercises b and d


@pytest.fixture(autouse=True)
def _synchronous() -> Iterator[None]:
    with dask.config.set(scheduler="synchronous"):
        yield


def random_labels(shape: tuple[int, ...], density: float, seed: int,
                  connectivity: int = 1) -> tuple[np.ndarray, int]:
    mask = np.random.default_rng(seed).random(shape) < density
    return ndi.label(mask, ndi.generate_binary_structure(len(shape), connectivity))


@st.composite
def chunked_labels(draw: st.DrawFn, ndim: int) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """A label raster (4/6- or 8/26-connected objects), its count and odd chunks."""
    largest = 30 if ndim == 2 else 10
    shape = tuple(draw(st.integers(1, largest)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(max(1, n // 5), n)) for n in shape)
    density = draw(st.floats(0.05, 0.9))
    labels, count = random_labels(shape, density, draw(st.integers(0, 2**32 - 1)),
                                  draw(st.sampled_from([1, ndim])))
    return labels, count, chunks


def assert_matches_regionprops(table: pd.DataFrame, labels: np.ndarray) -> None:
    props = regionprops(labels)
    ndim = labels.ndim
    axes = ("z", "y", "x")[3 - ndim:]
    np.testing.assert_array_equal(table["id"], [p.label for p in props])
    np.testing.assert_array_equal(table["area_px"], [p.area for p in props])
    bbox = [f"min_{a}" for a in axes] + [f"max_{a}" for a in axes]
    np.testing.assert_array_equal(table[bbox].to_numpy().reshape(-1, 2 * ndim),
                                  np.array([p.bbox for p in props]).reshape(-1, 2 * ndim))
    centroid = table[[f"centroid_{a}" for a in axes]].to_numpy()
    np.testing.assert_allclose(centroid, np.array([p.centroid for p in props]).reshape(-1, ndim))


@settings(max_examples=40, deadline=None)
@given(chunked_labels(2))
def test_matches_regionprops_2d(case: tuple[np.ndarray, int, tuple[int, ...]]) -> None:
    labels, count, chunks = case
    table = object_table(da.from_array(labels, chunks=chunks), count=count)
    assert len(table) == count
    assert_matches_regionprops(table, labels)


@settings(max_examples=25, deadline=None)
@given(chunked_labels(3))
def test_matches_regionprops_3d(case: tuple[np.ndarray, int, tuple[int, ...]]) -> None:
    labels, count, chunks = case
    table = object_table(da.from_array(labels, chunks=chunks), count=count)
    assert len(table) == count
    assert_matches_regionprops(table, labels)


def test_object_spanning_many_chunks() -> None:
    labels = np.zeros((50, 60), dtype=np.uint32)
    labels[3:47, 5:55] = 1  # a frame: 7 x 8 chunk rows and columns, with a hole
    labels[10:40, 12:48] = 0
    labels[20:30, 20:30] = 2
    table = object_table(da.from_array(labels, chunks=(7, 8)), count=2)
    assert_matches_regionprops(table, labels)


def test_class_is_the_majority_and_ties_go_to_the_smallest() -> None:
    labels, count = random_labels((40, 33), 0.6, seed=1)
    classes = np.random.default_rng(2).integers(0, 5, labels.shape).astype(np.uint8)
    labels[0, :4], classes[0, :4] = count + 1, [3, 1, 3, 1]  # a tie between classes 1 and 3
    table = object_table(da.from_array(labels, chunks=(7, 5)),
                         classes=da.from_array(classes, chunks=(11, 6)))
    expected = [np.bincount(classes[labels == i]).argmax() for i in table["id"]]
    np.testing.assert_array_equal(table["class"], expected)
    assert table["class"].iloc[-1] == 1


def test_mean_probability_is_that_of_the_class_over_the_pixels() -> None:
    labels, count = random_labels((31, 45), 0.5, seed=3, connectivity=2)
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 3, labels.shape)
    probabilities = rng.random((3, *labels.shape)).astype(np.float32)
    table = object_table(da.from_array(labels, chunks=(6, 7)), count=count,
                         classes=da.from_array(classes, chunks=(9, 4)),
                         probabilities=da.from_array(probabilities, chunks=(2, 8, 8)))
    assert len(table) == count
    for id_, class_, mean in zip(table["id"], table["class"], table["mean_probability"]):
        assert mean == pytest.approx(probabilities[class_][labels == id_].mean())


def test_class_defaults_to_the_arg_max_of_the_probabilities() -> None:
    labels, _ = random_labels((20, 20), 0.5, seed=5)
    probabilities = np.random.default_rng(6).random((4, 20, 20))
    table = object_table(da.from_array(labels, chunks=6),
                         probabilities=da.from_array(probabilities, chunks=(4, 7, 7)))
    argmax = probabilities.argmax(axis=0)
    expected = [np.bincount(argmax[labels == i]).argmax() for i in table["id"]]
    np.testing.assert_array_equal(table["class"], expected)


@pytest.mark.parametrize("transform", [TRANSFORM, ROTATED])
def test_map_coordinates_are_the_affine_of_the_pixel_centre(transform: tuple[float, ...]) -> None:
    labels, _ = random_labels((25, 37), 0.4, seed=7)
    georef = GeoRef.from_crs("EPSG:32618", transform)
    table = object_table(da.from_array(labels, chunks=(4, 9)), georef=georef)
    t = georef.affine
    x, y = t @ (table["centroid_x"].to_numpy() + 0.5, table["centroid_y"].to_numpy() + 0.5)
    np.testing.assert_allclose(table["x"], x)
    np.testing.assert_allclose(table["y"], y)
    np.testing.assert_allclose(table["area"], table["area_px"] * abs(t.determinant))
    assert table.attrs["crs"] == georef.crs_wkt


def test_volume_world_coordinates_are_the_voxel_affine_of_the_centroid() -> None:
    """Rows 0, 1, 2 of ``voxel_affine @ (z, y, x, 1)`` are world x, y, z (GeoRef's convention)."""
    labels, count = random_labels((9, 11, 13), 0.3, seed=8)
    matrix = np.array([[0.0, 0.0, -1.5, 90.0], [0.0, 2.0, 0.3, -20.0],
                       [3.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
    georef = GeoRef.from_voxel_affine(matrix, units="mm")
    table = object_table(da.from_array(labels, chunks=(4, 5, 6)), count=count, georef=georef)
    centroid = table[["centroid_z", "centroid_y", "centroid_x"]].to_numpy()
    world = (matrix @ np.column_stack([centroid, np.ones(len(table))]).T).T
    np.testing.assert_allclose(table[["x", "y", "z"]].to_numpy(), world[:, :3])
    np.testing.assert_allclose(table["area"], table["area_px"] * 9.0)
    assert table.attrs["units"] == "mm"


def nifti_case(labels: np.ndarray) -> tuple[GeoRef, np.ndarray]:
    """A NIfTI input's GeoRef (an oblique, flipped affine) and, from nibabel, the scanner
    ``(X, Y, Z)`` of the ``(z, y, x)`` labels' centroids (scipy's center_of_mass)."""
    ijk = labels.transpose(2, 1, 0)  # NIfTI's voxel order
    affine = np.array([[-0.8, 0.05, 0.0, 90.5], [0.1, 0.9, 0.0, -120.0],
                       [0.0, -0.2, 1.5, -60.0], [0.0, 0.0, 0.0, 1.0]])
    header = nib.Nifti1Image(ijk, affine).header
    centroids = ndi.center_of_mass(ijk > 0, ijk, np.arange(1, ijk.max() + 1))
    return nifti.header_georef(header), nib.affines.apply_affine(affine, centroids)


def ome_case(labels: np.ndarray) -> tuple[GeoRef, np.ndarray]:
    """An OME-Zarr input's GeoRef and, from its own scale and translation (z, y, x), the
    physical ``(x, y, z)`` of the labels' centroids."""
    scale, translation = [2.0, 0.5, 0.25], [10.0, -3.0, 7.5]
    image = {"axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
             "datasets": [{"path": "0", "coordinateTransformations": [
                 {"type": "scale", "scale": scale},
                 {"type": "translation", "translation": translation}]}]}
    centroids = ndi.center_of_mass(labels > 0, labels, np.arange(1, labels.max() + 1))
    world = np.asarray(centroids) * scale + translation
    return omezarr.georef(image, 0, (SPACE,) * 3), world[:, ::-1]


@pytest.mark.parametrize("case", [nifti_case, ome_case])
def test_volume_world_columns_are_named_for_the_world_axes_they_hold(case) -> None:
    """Columns x, y, z hold world x, y, z for NIfTI (scanner X = R-L first) and OME-Zarr inputs
    alike, as the georeference their readers make says."""
    labels, count = random_labels((12, 14, 16), 0.3, seed=15)
    georef, expected = case(labels)
    table = object_table(da.from_array(labels, chunks=(5, 6, 7)), count=count, georef=georef)
    np.testing.assert_allclose(table[["x", "y", "z"]].to_numpy(), expected, atol=1e-5)


def test_large_ids_and_unsigned_dtypes() -> None:
    labels, _ = random_labels((15, 16), 0.5, seed=9)
    big = np.where(labels > 0, labels.astype(np.uint64) + 2**40, 0).astype(np.uint64)
    table = object_table(da.from_array(big, chunks=(4, 7)))
    np.testing.assert_array_equal(table["id"], np.unique(big[big > 0]).astype(np.int64))


def test_negative_ids_are_background() -> None:
    """As regionprops on the labels with negative values set to 0: no rows for them."""
    labels, _ = random_labels((18, 21), 0.5, seed=14)
    signed = np.where(labels % 3 == 1, -labels, labels).astype(np.int16)
    table = object_table(da.from_array(signed, chunks=(5, 8)))
    assert_matches_regionprops(table, np.where(signed > 0, signed, 0))


def test_ids_beyond_int64_are_refused() -> None:
    """The id column is int64: a uint64 id from 2**63 on is refused, not wrapped negative."""
    labels = np.array([[1, 0], [0, 2**63 + 5]], np.uint64)
    with pytest.raises(InstanceError, match="id 9223372036854775813, above .* renumber"):
        object_table(da.from_array(labels, chunks=1))
    top = np.array([[1, 0], [0, 2**63 - 1]], np.uint64)
    assert object_table(da.from_array(top, chunks=1))["id"].tolist() == [1, 2**63 - 1]


def test_no_objects_gives_an_empty_table() -> None:
    table = object_table(da.zeros((10, 12), dtype=np.uint32, chunks=5),
                         classes=da.zeros((10, 12), dtype=np.uint8, chunks=4))
    assert len(table) == 0
    assert {"id", "class", "area_px", "min_y", "max_x", "centroid_x"} <= set(table.columns)


def test_merging_partials_equals_the_partial_of_the_whole() -> None:
    labels, _ = random_labels((12, 20), 0.5, seed=10)
    classes = np.random.default_rng(11).integers(0, 3, labels.shape)
    whole = chunk_partial(labels, (0, 0), classes)
    halves = merge([chunk_partial(labels[:, :9], (0, 0), classes[:, :9]),
                    chunk_partial(labels[:, 9:], (0, 9), classes[:, 9:])])
    for name in ("ids", "counts", "sums", "mins", "maxs", "hist_ids", "hist_values",
                 "hist_counts"):
        np.testing.assert_array_equal(getattr(halves, name), getattr(whole, name))


@pytest.mark.parametrize("make, message", [
    (lambda lab: {"labels": lab.astype(np.float32)}, "integer instance ids"),
    (lambda lab: {"labels": lab[None, None]}, "2 or 3 dimensions"),
    (lambda lab: {"labels": lab, "classes": lab[:-1]}, "Classes have shape"),
    (lambda lab: {"labels": lab, "classes": lab * 0.5}, "integer class ids"),
    (lambda lab: {"labels": lab, "probabilities": da.zeros((2, 3, 3))}, "Probabilities must"),
    (lambda lab: {"labels": lab, "count": 1}, "but count is 1"),
    (lambda lab: {"labels": lab, "georef": GeoRef.from_voxel_affine(np.eye(4))}, "voxel_affine"),
])
def test_bad_inputs_raise_clear_errors(make, message: str) -> None:
    labels, _ = random_labels((10, 10), 0.5, seed=12)
    arguments = make(da.from_array(labels, chunks=4))
    with pytest.raises(InstanceError, match=message):
        object_table(arguments.pop("labels"), **arguments)


def test_write_table_round_trips_parquet(tmp_path: Path) -> None:
    labels, count = random_labels((20, 21), 0.5, seed=13)
    georef = GeoRef.from_crs("EPSG:32618", TRANSFORM)
    table = object_table(da.from_array(labels, chunks=6), count=count, georef=georef)
    for url in (str(tmp_path / "objects.parquet"), "memory://tables/objects.parquet"):
        write_table(table, url)
        back = pd.read_parquet(url)
        pd.testing.assert_frame_equal(back, table, check_like=False)
        assert back.attrs["crs"] == georef.crs_wkt
