"""Chunked connected components against scipy.ndimage.label on the whole array."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage import data, filters

from geoseg.errors import InstanceError
from geoseg.instances.components import label, neighbour_offsets, relabel_plan


def assert_same_partition(got: np.ndarray, ref: np.ndarray) -> None:
    """Same objects up to renumbering: a one-to-one map between the two sets of ids."""
    np.testing.assert_array_equal(got > 0, ref > 0)
    pairs = np.unique(np.stack([got[got > 0], ref[ref > 0]]).astype(np.int64), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def assert_contiguous(got: np.ndarray, count: int) -> None:
    ids = np.unique(got[got > 0])
    np.testing.assert_array_equal(ids, np.arange(1, count + 1))


def reference(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    return ndi.label(mask, ndi.generate_binary_structure(mask.ndim, connectivity))


@st.composite
def masks(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...], int]:
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 24 if ndim == 2 else 12), min_size=ndim,
                                max_size=ndim)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    density = draw(st.floats(0.05, 0.95))
    seed = draw(st.integers(0, 2**32 - 1))
    mask = np.random.default_rng(seed).random(shape) < density
    return mask, chunks, draw(st.integers(1, ndim))


@given(masks())
@settings(max_examples=150, deadline=None)
def test_same_partition_as_scipy_at_any_chunking(case: tuple[np.ndarray, tuple[int, ...], int]) -> None:
    mask, chunks, connectivity = case
    labels, count = label(da.from_array(mask, chunks=chunks), connectivity=connectivity)
    got = labels.compute()
    ref, ref_count = reference(mask, connectivity)
    assert count == ref_count
    assert got.dtype == np.uint32 and got.shape == mask.shape
    assert_same_partition(got, ref)
    assert_contiguous(got, count)


@given(st.integers(0, 2**32 - 1), st.integers(1, 2))
@settings(max_examples=40, deadline=None)
def test_semantic_mask_gives_components_per_class(seed: int, connectivity: int) -> None:
    """Pixels of different classes never join; class 0 is background."""
    rng = np.random.default_rng(seed)
    classes = ndi.zoom(rng.integers(0, 4, (8, 8)), 4, order=0)[:29, :31]
    labels, count = label(da.from_array(classes, chunks=(7, 9)), connectivity=connectivity)
    got = labels.compute()
    ref = np.zeros(classes.shape, np.int64)
    for value in (1, 2, 3):
        part, _ = reference(classes == value, connectivity)
        ref[part > 0] = part[part > 0] + ref.max()
    assert count == len(np.unique(ref)) - 1
    assert_same_partition(got, ref)


def test_classes_pick_the_objects() -> None:
    classes = np.array([[1, 1, 2, 2], [0, 3, 3, 2], [1, 0, 2, 2]])
    labels, count = label(da.from_array(classes, chunks=2), classes=[2, 0])
    got = labels.compute()
    assert count == 3  # the class-2 object and two class-0 pixels that do not touch
    assert (got[classes == 1] == 0).all() and (got[classes == 3] == 0).all()
    assert len(np.unique(got[classes == 2])) == 1


def test_any_integer_class_can_be_listed() -> None:
    """A negative class, and classes 2**32 apart, are objects each of their own class."""
    values = np.array([-1, 0, 1, 2**32 + 1, 7])
    picked = ndi.zoom(np.random.default_rng(8).integers(0, 5, (6, 7)), 4, order=0)[:23, :26]
    classes = values[picked]
    listed = [-1, 1, 2**32 + 1]
    labels, count = label(da.from_array(classes, chunks=(6, 9)), classes=listed)
    ref = np.zeros(classes.shape, np.int64)
    for value in listed:
        part, _ = reference(classes == value, 1)
        ref[part > 0] = part[part > 0] + ref.max()
    assert count == ref.max()
    assert_same_partition(labels.compute(), ref)


def test_uint64_values_from_2_63_on_are_classes_like_any_other() -> None:
    """Components per value of a uint64 mask; one-row chunks take cc3d's single-row path."""
    values = np.array([0, 1, 2**63 + 5, 2**64 - 1], np.uint64)
    mask = values[ndi.zoom(np.random.default_rng(9).integers(0, 4, (4, 5)), 3, order=0)]
    ref = np.zeros(mask.shape, np.int64)
    for value in values[1:]:
        part, _ = reference(mask == value, 1)
        ref[part > 0] = part[part > 0] + ref.max()
    for chunks in ((1, 5), (5, 4)):
        labels, count = label(da.from_array(mask, chunks=chunks))
        assert count == ref.max()
        assert_same_partition(labels.compute(), ref)


def test_object_spanning_many_chunks_gets_one_id() -> None:
    """A one-pixel-wide spiral through 40 chunks, plus a dot in its middle: two objects."""
    mask = np.zeros((64, 64), bool)
    mask[2, 2:62] = mask[2:62, 61] = mask[61, 4:62] = mask[6:62, 4] = True
    mask[6, 4:58] = mask[6:58, 57] = mask[57, 8:58] = True
    mask[30, 30] = True
    labels, count = label(da.from_array(mask, chunks=8))
    got = labels.compute()
    assert count == 2 == reference(mask, 1)[1]
    spiral = got == got[2, 2]
    assert spiral.sum() == mask.sum() - 1 and got[30, 30] not in (0, got[2, 2])
    assert len({(y // 8, x // 8) for y, x in zip(*np.nonzero(spiral))}) >= 9


def test_diagonal_corner_between_four_chunks() -> None:
    """Full connectivity joins pixels that meet only at the corner shared by four chunks."""
    mask = np.zeros((8, 8), bool)
    mask[3, 3] = mask[4, 4] = True   # down-right across the corner
    mask[0, 4] = mask[1, 3] = True   # down-left across the vertical border only
    _, n_face = label(da.from_array(mask, chunks=4), connectivity=1)
    full, n_full = label(da.from_array(mask, chunks=4), connectivity=2)
    assert n_face == 4 and n_full == 2
    assert full.compute()[3, 3] == full.compute()[4, 4]


def test_chunk_invariance_on_a_large_random_mask() -> None:
    mask = ndi.binary_opening(np.random.default_rng(1).random((600, 500)) < 0.55)
    a, n_a = label(da.from_array(mask, chunks=(97, 128)), connectivity=2)
    b, n_b = label(da.from_array(mask, chunks=(600, 33)), connectivity=2)
    assert n_a == n_b
    assert_same_partition(a.compute(), b.compute())


def test_coins_otsu_mask() -> None:
    coins = data.coins()
    mask = coins > filters.threshold_otsu(coins)
    ref, n = reference(mask, 2)
    for chunks in ((64, 64), (303, 17)):
        labels, count = label(da.from_array(mask, chunks=chunks), connectivity=2)
        assert count == n
        assert_same_partition(labels.compute(), ref)


def test_thresholded_mri_volume() -> None:
    nib = pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    volume = np.asarray(nib.load(str(Path(data_path) / "anatomical.nii")).dataobj, dtype=float)
    mask = volume > filters.threshold_otsu(volume) * 0.6
    for connectivity in (1, 3):
        ref, n = reference(mask, connectivity)
        assert n > 1
        labels, count = label(da.from_array(mask, chunks=(7, 11, 6)), connectivity=connectivity)
        assert count == n
        assert_same_partition(labels.compute(), ref)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_zero_length_chunks_are_no_border(connectivity: int) -> None:
    """Chunks on either side of an empty one touch: their objects join, as in the whole array."""
    mask = np.random.default_rng(10).random((9, 7)) < 0.6
    dmask = da.from_array(mask, chunks=((3, 0, 2, 0, 4), (3, 0, 4)))
    labels, count = label(dmask, connectivity=connectivity)
    ref, n = reference(mask, connectivity)
    assert count == n
    assert labels.chunks == dmask.chunks
    assert_same_partition(labels.compute(), ref)


@pytest.mark.parametrize("shape", [(0, 5), (4, 0, 3)])
def test_an_empty_mask_has_no_objects(shape: tuple[int, ...]) -> None:
    labels, count = label(da.zeros(shape, dtype=bool, chunks=2))
    assert count == 0
    got = labels.compute()
    assert got.shape == shape and got.dtype == np.uint32


def test_neighbour_offsets_match_scipy_structure() -> None:
    for ndim in (2, 3):
        for connectivity in range(1, ndim + 1):
            structure = ndi.generate_binary_structure(ndim, connectivity)
            full = {tuple(np.array(i) - 1) for i in np.argwhere(structure)} - {(0,) * ndim}
            half = set(neighbour_offsets(ndim, connectivity))
            assert half | {tuple(-np.array(o)) for o in half} == full
            assert len(half) * 2 == len(full)


def test_ids_past_uint32_switch_dtype() -> None:
    """The plan numbers 2**32 + 3 objects held in one pretend chunk without touching pixels."""
    counts = np.array([2**32 + 3])
    plans, count = relabel_plan(counts, np.zeros((0, 2), np.int64))
    assert count == 2**32 + 3 and plans[0].base == 0
    from geoseg.instances.components import label_dtype

    assert label_dtype(count) == np.uint64 and label_dtype(2**32 - 1) == np.uint32


@pytest.mark.parametrize("mask, message", [
    (da.zeros((4, 4), dtype=float, chunks=2), "integer or boolean"),
    (da.zeros((4,), dtype=bool, chunks=2), "2D or 3D"),
    (da.zeros((2, 2, 2, 2), dtype=bool, chunks=1), "2D or 3D"),
])
def test_bad_masks_say_what_to_do(mask: da.Array, message: str) -> None:
    with pytest.raises(InstanceError, match=message):
        label(mask)


def test_connectivity_out_of_range() -> None:
    with pytest.raises(InstanceError, match="connectivity=3"):
        label(da.zeros((4, 4), dtype=bool, chunks=2), connectivity=3)


def test_label_of_a_segment_result_leaves_its_nodata_class_out():
    """segment() writes no-data pixels as class 255: with classes=None they are background, as
    the job's instances leave the nodata class out, not objects of their own."""
    import xarray as xr

    import geoseg
    from geoseg.instances import label

    image = np.zeros((1, 64, 64), np.uint8)
    image[0, 5:15, 5:15] = 200  # one object
    image[0, 40:50, 40:50] = 200  # another
    image[0, 20:30, :] = 0  # no data: a band across the raster (the fill value)
    image[0, 30:35, 10:20] = 7  # background (class 0), valid
    raster = xr.DataArray(da.from_array(image, chunks=(1, 32, 32)), dims=("band", "y", "x"),
                          attrs={"_FillValue": 0})
    classes = geoseg.segment(raster, geoseg.methods.Threshold((128.0,)))
    assert classes.attrs["nodata"] == 255 and (classes.values == 255).any()
    labels, count = label(classes)
    expected, n = ndi.label(classes.values == 1)
    assert count == n == 2
    np.testing.assert_array_equal(labels.compute() > 0, expected > 0)
    _, with_nodata = label(classes, classes=[1, 255])  # asked for: its components are objects
    assert with_nodata == 2 + ndi.label(classes.values == 255)[1]


@pytest.mark.parametrize("shape, chunks", [((9, 9), 4), ((9, 9, 9), 4)])
def test_read_only_chunks_are_labelled(shape, chunks):
    """dask's ones() gives read-only blocks (its 1-pixel corner chunk among them), which cc3d
    refused; the components are scipy's."""
    def read_only(block):
        block = block.copy()
        block.setflags(write=False)
        return block

    mask = da.ones(shape, dtype=np.uint8, chunks=chunks)
    assert label(mask)[1] == 1
    mask = da.from_array(np.eye(8, dtype=np.uint8) + np.eye(8, k=4, dtype=np.uint8),
                         chunks=3).map_blocks(read_only)
    labels, count = label(mask, connectivity=2)
    expected, n = ndi.label(mask.compute(), structure=np.ones((3, 3)))
    assert count == n
    np.testing.assert_array_equal(labels.compute() > 0, expected > 0)
