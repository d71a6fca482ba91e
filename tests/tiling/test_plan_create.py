"""The Plan, by Hypothesis: regions, chunks, windows and halos per axis, in 2D and 3D, from
shapes alone (no data, no model, no cluster)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import PlanError
from geoseg.tiling import Geometry, InferenceSettings, Layout, Plan


@st.composite
def plans(draw: st.DrawFn, blends: tuple[str, ...] = ("crop",)) -> Plan:
    ndim = draw(st.sampled_from([2, 3]))
    top = 160 if ndim == 2 else 40
    shape = tuple(draw(st.integers(1, top)) for _ in range(ndim))
    stride = tuple(draw(st.sampled_from([1, 2, 4])) for _ in range(ndim))
    tile = tuple(max(2 * s, draw(st.integers(n // 5 + 1, n + 8))) for s, n in zip(stride, shape))
    halo = tuple(draw(st.integers(0, 3)) * s + draw(st.integers(0, 1)) for s in stride)  # off-stride too
    chunks = tuple(draw(st.integers(max(1, n // 4), n + 8)) for n in shape)
    shards = (tuple(c * draw(st.integers(1, 3)) for c in chunks) if draw(st.booleans()) else None)
    blend = draw(st.sampled_from(blends))
    given_halo = draw(st.booleans()) and blend == "crop"
    geometry = Geometry(halo=halo[::-1], stride=stride, n_classes=draw(st.integers(1, 300)))
    settings_ = InferenceSettings(tile=tile if draw(st.booleans()) else None,
                                  halo=halo if given_halo else None, blend=blend,
                                  overlap=None if blend == "crop" else draw(
                                      st.sampled_from([None, 0.25, 0.5])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recompute warnings: not what these tests check
        return Plan.create(shape, geometry, settings_, Layout.create(shape, chunks, shards))


def _round_up(n: int, s: int) -> int:
    return -(-n // s) * s


@settings(max_examples=120, deadline=None)
@given(plans(("crop", "gaussian")))
def test_regions_cover_the_raster_exactly_once_and_are_whole_chunks(plan: Plan) -> None:
    covered = np.zeros(plan.shape, dtype=np.int32)
    count = 0
    for region in plan.regions():
        covered[region] += 1
        count += 1
        for r, n, c, u, size in zip(region, plan.shape, plan.chunks, plan.layout.shards, plan.region):
            assert r.start % size == 0 and r.start % c == 0  # starts on the chunk (shard) grid
            assert r.stop - r.start == size or r.stop == n  # whole regions but the last
    assert (covered == 1).all()
    assert count == plan.n_tasks
    for c, u, size, n in zip(plan.chunks, plan.layout.shards, plan.region, plan.shape):
        assert 1 <= c <= n and u % c == 0 and size % u == 0  # chunks divide shards divide regions


@settings(max_examples=120, deadline=None)
@given(plans())
def test_cropped_windows_write_each_pixel_once_with_its_halo_around_it(plan: Plan) -> None:
    padded = tuple(_round_up(n, s) for n, s in zip(plan.shape, plan.tiling.stride))
    for region in plan.regions():
        written = np.zeros([r.stop - r.start for r in region], dtype=np.int32)
        tiles = plan.windows(region)
        read = plan.read_window(region)
        for tile in tiles:
            written[tuple(slice(o.start - r.start, o.stop - r.start)
                          for o, r in zip(tile.output, region))] += 1
            for a, h, p, w, n in zip(tile.axes, plan.halo, padded, read, plan.shape):
                assert a.win_start <= max(a.out_start - h, 0) and a.win_stop >= min(a.out_stop + h, p)
                assert w.start <= a.win_start and min(a.win_stop, n) <= w.stop  # the task reads it
        assert (written == 1).all()
        assert all(0 <= w.start and w.stop <= n for w, n in zip(read, plan.shape))


@settings(max_examples=80, deadline=None)
@given(plans(("gaussian", "linear")))
def test_blended_windows_cover_every_region_pixel_and_share_one_size(plan: Plan) -> None:
    for region in plan.regions():
        covered = np.zeros([r.stop - r.start for r in region], dtype=np.int32)
        for tile in plan.windows(region):
            assert tuple(w.stop - w.start for w in tile.window) == plan.tiling.window_shape
            covered[tuple(slice(o.start - r.start, o.stop - r.start)
                          for o, r in zip(tile.output, region))] += 1
        assert (covered >= 1).all()


@settings(max_examples=100, deadline=None)
@given(plans())
def test_halo_and_tile_stay_per_axis_rounded_up_to_each_axis_stride(plan: Plan) -> None:
    for t, h, s in zip(plan.tile, plan.halo, plan.tiling.stride):
        assert t % s == 0 and h % s == 0 and t >= s


def test_a_per_axis_halo_reaches_the_plan_per_axis() -> None:
    geometry = Geometry(halo=(8, 8, 8), stride=(1, 2, 2))
    plan = Plan.create((40, 64, 64), geometry, InferenceSettings(tile=32, halo=(2, 8, 5)))
    assert plan.halo == (2, 8, 6) and plan.tile == (32, 32, 32)  # 5 rounded up to the stride 2
    default = Plan.create((40, 64, 64), Geometry(halo=(1, 12, 12), stride=(1, 4, 4)))
    assert default.halo == (1, 12, 12)  # the segmenter's own, axis by axis


def test_a_default_tile_shortened_to_a_tiny_region_keeps_two_strides() -> None:
    """Found by the Hypothesis plans above: a region of one stride used to shorten the default
    tile below the two strides border padding needs, and the plan refused itself."""
    plan = Plan.create((40, 2), Geometry(halo=0, stride=2))
    assert plan.tile == (40, 4) and plan.region == (40, 2)
    assert [t.window for t in plan.windows((slice(0, 40), slice(0, 2)))] == [(slice(0, 40), slice(0, 2))]


def test_a_uniform_segmenter_geometry_fits_any_number_of_axes() -> None:
    plan = Plan.create((10, 20, 30), Geometry(halo=(3, 3), stride=(1, 1)))  # a 2D method on a volume
    assert plan.halo == (3, 3, 3) and plan.tiling.stride == (1, 1, 1)
    with pytest.raises(PlanError, match="halo"):
        Plan.create((10, 20, 30), Geometry(halo=(3, 4), stride=1))


def test_a_halo_with_a_blend_is_an_error_not_silently_dropped() -> None:
    with pytest.raises(PlanError, match=r"halo=16 was given with blend='gaussian'.*blend='crop'"):
        Plan.create((64, 64), Geometry(halo=8), InferenceSettings(halo=16, blend="gaussian"))
    with pytest.raises(PlanError, match="the default for deeplab"):
        Plan.create((64, 64), Geometry(halo=8, global_context=True, name="deeplab"),
                    InferenceSettings(halo=(0, 4)))
    blended = Plan.create((64, 64), Geometry(halo=8), InferenceSettings(halo=0, blend="gaussian"))
    assert blended.halo == (0, 0)  # a zero halo drops nothing
    assert Plan.create((64, 64), Geometry(halo=8, global_context=True)).tiling.blend == "gaussian"


def test_an_overlap_with_crop_is_an_error_not_silently_dropped() -> None:
    with pytest.raises(PlanError, match=r"overlap=0.25 was given with blend='crop' \(the default "
                                        r"for unet\).*inference.blend: gaussian"):
        Plan.create((64, 64), Geometry(halo=8, name="unet"), InferenceSettings(overlap=0.25))
    with pytest.raises(PlanError, match=r"overlap=0.5 was given with blend='crop';"):
        Plan.create((64, 64), Geometry(halo=8), InferenceSettings(overlap=0.5, blend="crop"))
    assert Plan.create((64, 64), Geometry(halo=8), InferenceSettings(overlap=0.0)).halo == (8, 8)


def test_layout_chunks_default_by_dimensionality_follow_the_input_and_clip_shards() -> None:
    assert Layout.create((3000, 500)).chunks == (1024, 500)
    assert Layout.create((300, 300, 300)).chunks == (128, 128, 128)
    assert Layout.create((300, 300), like=(64, 32)).chunks == (64, 32)
    assert Layout.create((300, 300), 50, like=(64, 32)).chunks == (50, 50)
    layout = Layout.create((300, 1000), (128, 128), (512, 512))
    assert layout.shards == (384, 512)  # the raster rounded up to whole chunks
    with pytest.raises(PlanError, match="chunks"):
        Layout.create((300, 300), (0, 10))


@pytest.mark.timeout(60)
def test_importing_tiling_loads_no_numpy() -> None:
    code = "import sys, geoseg.tiling; print(sorted(m for m in ('numpy', 'torch', 'dask') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@settings(max_examples=60, deadline=None)
@given(receptive=st.integers(1, 60), stride=st.sampled_from([1, 2, 8]), given=st.integers(0, 80))
def test_a_halo_below_the_receptive_field_is_warned_of_and_only_then(receptive, stride, given):
    """It trades exactness for speed (pixels near a tile edge differ from whole-image inference),
    which nothing said: the planner now warns, naming both halos."""
    geometry = Geometry(halo=receptive, stride=stride, name="net")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = Plan.create((300, 300), geometry, InferenceSettings(tile=64, halo=given))
    said = [str(w.message) for w in caught if "receptive field" in str(w.message)]
    short = plan.tiling.halo[0] < receptive  # the halo given, rounded up to the stride
    assert len(said) == int(short), said
    if short:
        assert said[0].startswith(f"halo {plan.tiling.halo} is below net's receptive field "
                                  f"(({receptive}, {receptive}) pixels per side)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Plan.create((300, 300), geometry, InferenceSettings(tile=64))  # its own halo: exact
    assert not [w for w in caught if "receptive field" in str(w.message)]


def test_one_tile_over_the_whole_image_is_not_warned_of_a_short_halo():
    """It has no tile edge inside the image, so its result is exact whatever the halo."""
    geometry = Geometry(halo=51, stride=8, name="net")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Plan.create((64, 64), geometry, InferenceSettings(tile=64, halo=0))
        Plan.create((64, 300), geometry, InferenceSettings(tile=64, halo=0))  # edges along x
    said = [str(w.message) for w in caught if "receptive field" in str(w.message)]
    assert len(said) == 1, said
