"""Label downsampling against a per-block reference written with plain Python counting."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import ExportError
from geoseg.io.exports import pyramid
from geoseg.io.exports.pyramid import (
    coarse_window,
    downsample,
    downsample_window,
    factors_between,
    parse_resampling,
)

NODATA = 255


def reference_mode(
    fine: np.ndarray, shape: tuple[int, ...], factors: tuple[int, ...]
) -> np.ndarray:
    """Most common class per block (no data only if nothing else; ties to the smallest id)."""
    out = np.full(shape, NODATA, dtype=fine.dtype)
    for index in itertools.product(*(range(n) for n in shape)):
        block = fine[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))]
        counts = Counter(v for v in block.ravel().tolist() if v != NODATA)
        if counts:
            best = max(counts.values())
            out[index] = min(v for v, c in counts.items() if c == best)
    return out


@st.composite
def labelled(draw):
    ndim = draw(st.integers(2, 3))
    factors = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    fine_shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    coarse = tuple(max(1, -(-n // f)) for n, f in zip(fine_shape, factors))
    values = st.sampled_from([0, 1, 2, 7, NODATA])
    fine = np.array(
        draw(
            st.lists(values, min_size=int(np.prod(fine_shape)), max_size=int(np.prod(fine_shape)))
        ),
        dtype=np.uint8,
    )
    return fine.reshape(fine_shape), coarse, factors


@settings(max_examples=150, deadline=None)
@given(labelled())
def test_mode_equals_per_block_counting(case):
    fine, coarse, factors = case
    np.testing.assert_array_equal(
        downsample(fine, coarse, factors, "mode", NODATA), reference_mode(fine, coarse, factors)
    )


@settings(max_examples=100, deadline=None)
@given(labelled(), st.sampled_from(["mode", "nearest"]))
def test_windows_tile_the_whole_result_and_keep_only_present_ids(case, method):
    fine, coarse, factors = case
    whole = downsample(fine, coarse, factors, method, NODATA)
    pieced = np.empty_like(whole)
    for index in itertools.product(*(range(0, n, 2) for n in coarse)):
        window = tuple(slice(i, min(i + 2, n)) for i, n in zip(index, coarse))
        pieced[window] = downsample_window(
            lambda w: fine[w], fine.shape, window, factors, method, NODATA
        )
    np.testing.assert_array_equal(pieced, whole)
    assert set(np.unique(whole).tolist()) <= set(np.unique(fine).tolist()) | {NODATA}


@settings(max_examples=100, deadline=None)
@given(labelled(), st.sampled_from(["mode", "nearest"]), st.integers(1, 12))
def test_a_bounded_read_equals_the_whole_block_at_once(case, method, window):
    """However few fine pixels may be read at once (in pieces of the window, or one coarse
    pixel's block counted in pieces), every coarse pixel is its whole block's value."""
    fine, coarse, factors = case
    whole = downsample(fine, coarse, factors, method, NODATA)
    reads = []

    def read(w):
        reads.append(fine[w].size)
        return fine[w]

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(pyramid, "MODE_WINDOW", window)
        bounded = coarse_window(read, fine.shape, tuple(slice(0, n) for n in coarse), factors,
                                method, NODATA, fine.dtype)
    np.testing.assert_array_equal(bounded, whole)
    assert max(reads, default=0) <= window


def test_nearest_takes_each_block_centre():
    fine = np.arange(36, dtype=np.uint16).reshape(6, 6)
    np.testing.assert_array_equal(
        downsample(fine, (2, 2), (3, 3), "nearest", 65535), fine[1::3, 1::3]
    )


def test_factors_from_ome_zarr_style_level_shapes():
    assert factors_between((13, 65, 47), (13, 32, 23)) == (1, 2, 2)
    assert factors_between((1, 65, 47), (1, 16, 11)) == (1, 4, 4)


@pytest.mark.parametrize("name", ["average", "bilinear", "cubic", "gauss"])
def test_averaging_resampling_is_refused(name):
    with pytest.raises(ExportError, match="not allowed for class ids"):
        parse_resampling(name)
