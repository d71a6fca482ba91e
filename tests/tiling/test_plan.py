"""Properties of the tiling plan, by Hypothesis: pure arithmetic, no data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import PlanError
from geoseg.tiling import Tiling, read_window, region_tiles, regions


@st.composite
def plans(draw: st.DrawFn) -> tuple[Tiling, tuple[int, int]]:
    stride = draw(st.sampled_from([1, 2, 4, 8, 16]))
    shape = (draw(st.integers(1, 300)), draw(st.integers(1, 300)))
    tile = draw(st.integers(1, 10)) * stride
    halo = draw(st.integers(0, 4)) * stride
    if tile + 2 * halo < 2 * stride:
        tile = 2 * stride
    # at most about 8 regions per axis: 1-pixel chunks still come with small shapes, and an
    # example stays cheap (1-pixel chunks of a 300 x 300 raster were 90,000 regions)
    chunks = tuple(draw(st.integers(max(1, n // 8), 120)) for n in shape)
    return Tiling.create(shape, tile=tile, halo=halo, stride=stride), chunks


@settings(max_examples=200, deadline=None)
@given(plans())
def test_every_output_pixel_is_written_exactly_once(plan: tuple[Tiling, tuple[int, int]]) -> None:
    spec, chunks = plan
    written = np.zeros(spec.shape, dtype=np.int32)
    for region in regions(spec.shape, chunks):
        for tile in region_tiles(spec, region):
            out = tile.output
            assert all(r.start <= o.start < o.stop <= r.stop for o, r in zip(out, region))
            written[out] += 1
    assert (written == 1).all()


@settings(max_examples=200, deadline=None)
@given(plans())
def test_windows_are_aligned_equal_sized_and_hold_core_plus_halo(
        plan: tuple[Tiling, tuple[int, int]]) -> None:
    spec, chunks = plan
    for region in regions(spec.shape, chunks):
        tiles = region_tiles(spec, region)
        lengths = {tuple(a.win_stop - a.win_start for a in t.axes) for t in tiles}
        assert len(lengths) == 1  # one window shape per region: its tiles batch together
        for tile in tiles:
            for axis, p, s, h, length in zip(tile.axes, spec.padded_shape, spec.stride, spec.halo,
                                              spec.window_shape):
                assert axis.win_start % s == 0 and axis.win_stop % s == 0
                assert 0 <= axis.win_start and axis.win_stop <= p
                assert axis.win_stop - axis.win_start <= length
                assert axis.win_start <= max(axis.out_start - h, 0)
                assert axis.win_stop >= min(axis.out_stop + h, p)
        window = read_window(tiles)
        assert all(w.start <= t.window[i].start and t.window[i].stop <= w.stop
                   for t in tiles for i, w in enumerate(window))


@settings(max_examples=200, deadline=None)
@given(plans())
def test_a_region_shorter_than_a_tile_reads_little_more_than_itself(
        plan: tuple[Tiling, tuple[int, int]]) -> None:
    """The last region along an axis is often short; its window is its own stride-rounded span
    plus halos (at least two strides), not a whole tile grown inward."""
    spec, chunks = plan
    for region in regions(spec.shape, chunks):
        window = read_window(region_tiles(spec, region))
        for r, w, t, h, s in zip(region, window, spec.tile, spec.halo, spec.stride):
            span = -(-r.stop // s) * s - r.start // s * s
            if span < t:
                assert w.stop - w.start <= max(span, 2 * s) + 2 * h, (region, window)


def test_edge_tiles_are_kept_and_shifted_inward() -> None:
    spec = Tiling.create((100,), tile=32, halo=8, stride=8)
    tiles = region_tiles(spec, (slice(64, 100),))
    assert [(t.axes[0].out_start, t.axes[0].out_stop) for t in tiles] == [(64, 96), (96, 100)]
    last = tiles[-1].axes[0]
    assert (last.win_start, last.win_stop) == (104 - 48, 104)  # padded extent is 104


def test_a_short_last_region_gets_a_short_tile() -> None:
    spec = Tiling.create((1000,), tile=512, halo=16, stride=16)
    (tile,) = region_tiles(spec, (slice(960, 1000),))  # 40 pixels, 48 with the stride
    assert (tile.axes[0].out_start, tile.axes[0].out_stop) == (960, 1000)
    assert (tile.axes[0].win_start, tile.axes[0].win_stop) == (928, 1008)  # 48 + 2 halos, not 544


def test_tile_and_halo_are_rounded_up_to_the_stride() -> None:
    spec = Tiling.create((50, 60), tile=100, halo=51, stride=8)
    assert spec.tile == (104, 104) and spec.halo == (56, 56)


@pytest.mark.parametrize("kwargs, match", [
    ({"tile": 0, "halo": 0, "stride": 1}, "positive"),
    ({"tile": 8, "halo": 0, "stride": 8}, "twice the stride"),
    ({"tile": (8, 8, 8), "halo": 0, "stride": 1}, "3 values"),
])
def test_invalid_plans_say_what_is_wrong(kwargs: dict, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        Tiling.create((10, 10), **kwargs)


@pytest.mark.parametrize("value", [True, (64, False), 2.5, "64"])
def test_a_size_that_is_no_whole_number_is_refused_a_bool_included(value):
    """chunks=True passed as 1 and planned one task per pixel (83,100 for a small image)."""
    from geoseg.tiling.plan import coerce_per_axis

    with pytest.raises(PlanError, match=r"chunks=.*: expected an int, or one int per axis"):
        coerce_per_axis(value, 2, "chunks")
    assert coerce_per_axis(64, 2, "chunks") == (64, 64)
