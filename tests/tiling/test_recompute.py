"""What tasks infer again: :func:`inference_cost` against pixels counted window by window, and
the warning :meth:`Plan.create` gives when it is high (never for a method without a halo)."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.tiling import Geometry, InferenceSettings, Layout, Plan, Tiling, region_tiles, regions
from geoseg.tiling.plan import fitted_tile, inference_cost, tiling_cost


def counted(spec: Tiling, region: tuple[int, ...]) -> float:
    """Window pixels of every task of ``region``, per window pixel of one whole-image pass:
    brute force, one window at a time."""
    def pixels(part: tuple[slice, ...]) -> int:
        return sum(math.prod(a.win_stop - a.win_start for a in t.axes)
                   for t in region_tiles(spec, part))

    whole = pixels(tuple(slice(0, n) for n in spec.shape))
    return sum(pixels(part) for part in regions(spec.shape, region)) / whole


@st.composite
def tilings(draw: st.DrawFn) -> tuple[Tiling, tuple[int, ...]]:
    ndim = draw(st.sampled_from([1, 2, 3]))
    shape = tuple(draw(st.integers(1, 90 if ndim < 3 else 30)) for _ in range(ndim))
    stride = draw(st.sampled_from([1, 2, 4]))
    blend = draw(st.sampled_from(["crop", "crop", "gaussian"]))
    halo = draw(st.integers(0, 2)) * stride if blend == "crop" else 0
    tile = draw(st.integers(2, 12)) * stride
    spec = Tiling.create(shape, tile=tile, halo=halo, stride=stride, blend=blend,
                         overlap=0.0 if blend == "crop" else 0.5)
    region = tuple(draw(st.integers(max(1, n // 6), n)) for n in shape)
    return spec, region


@settings(max_examples=150, deadline=None)
@given(tilings())
def test_the_factor_is_the_window_pixels_counted_one_by_one(case) -> None:
    spec, region = case
    assert inference_cost(spec, region) == pytest.approx(counted(spec, region))


@pytest.mark.parametrize("span, tile, stride, expected", [
    (256, 96, 1, 86), (192, 96, 1, 96), (40, 96, 1, 40), (100, 32, 8, 32), (97, 32, 8, 32),
    (3, 96, 2, 4), (2, 8, 4, 8)])
def test_a_halo_free_tile_splits_its_region_evenly(span, tile, stride, expected) -> None:
    assert fitted_tile(tile, span, stride) == expected


def test_a_method_without_halo_infers_its_regions_once() -> None:
    """The audit's case: 256-voxel chunks of a 4000^3 volume and a threshold. Tiles of 96 left
    a last tile reaching 32 voxels into the next task's region; the plan grew z to 512 and
    still warned of 1.40x, advising chunks of 96 when 256 were given."""
    shape = (4000, 4000, 4000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = Plan.create(shape, Geometry(halo=0, stride=1, n_classes=2), InferenceSettings(),
                           Layout.create(shape, 256))
    assert plan.region == (256, 256, 256)
    assert inference_cost(plan.tiling, plan.region) <= 1.0
    tiles = plan.windows((slice(0, 256),) * 3)
    assert max(a.win_stop for t in tiles for a in t.axes) <= 258  # 3 tiles of 86 per axis


SHAPES_AND_CHUNKS = [  # but a task per pixel of a large raster: over GEOSEG_MAX_TASKS anyway
    (shape, chunks)
    for shape in [(24, 48, 64), (4000, 4000, 4000), (130, 120), (5000, 7000), (1, 1000), (97, 3, 1001)]
    for chunks in [1, 7, 16, 100, 255, 256, 1000] if chunks > 1 or math.prod(shape) <= 1e6]


@pytest.mark.parametrize("shape, chunks", SHAPES_AND_CHUNKS)
@pytest.mark.parametrize("tile", [None, 64, 512])
def test_a_halo_free_method_never_warns_of_recomputation(shape, chunks, tile) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Plan.create(shape, Geometry(halo=0, stride=1, n_classes=3),
                    InferenceSettings(tile=tile), Layout.create(shape, chunks))


def test_the_warning_says_why_and_advises_chunks_the_tile_divides(monkeypatch) -> None:
    monkeypatch.setenv("GEOSEG_REGION_BYTES", str(256**3 * 24))  # regions may not grow
    shape = (1000, 1000, 1000)
    with pytest.warns(UserWarning) as caught:
        Plan.create(shape, Geometry(halo=8, stride=1, n_classes=2), InferenceSettings(),
                    Layout.create(shape, 256))
    said = str(caught[0].message)
    assert "tasks of (256, 256, 256) pixels infer 1.30x" in said
    assert "halos of 8 pixels and tiles of 96 pixels that reach past a task's region" in said
    assert "whole multiples of the tile, 96 pixels per axis" in said
    assert "at least 96" not in said
    monkeypatch.setenv("GEOSEG_REGION_BYTES", str(40**3 * 24))
    with pytest.warns(UserWarning) as caught:  # chunks shorter than the tile asked for
        Plan.create(shape, Geometry(halo=8, stride=1, n_classes=2), InferenceSettings(tile=96),
                    Layout.create(shape, 40))
    said = str(caught[0].message)
    assert "halos of 8 pixels around tiles shortened to a task's region" in said
    assert "at least 96 pixels per axis" in said


def _windows_per_pixel(spec: Tiling) -> float:
    """Pixels of every window one pass runs, per image pixel, counted tile by tile."""
    inferred = sum(math.prod(s.stop - s.start for s in t.window)
                   for r in regions(spec.shape, spec.shape) for t in region_tiles(spec, r))
    return inferred / math.prod(spec.shape)


@pytest.mark.parametrize("spec", [
    Tiling.create((2048, 2048), tile=64, halo=32),
    Tiling.create((2048, 2048), tile=16, halo=64, stride=16),
    Tiling.create((1500, 1100), tile=512, halo=0, blend="gaussian", overlap=0.75),
    Tiling.create((200, 200, 200), tile=64, halo=0, blend="constant", overlap=0.5),
])
def test_the_tiling_cost_is_what_one_pass_infers_per_pixel(spec) -> None:
    assert tiling_cost(spec) == pytest.approx(_windows_per_pixel(spec))


@pytest.mark.parametrize("settings, said", [
    (InferenceSettings(tile=7), ("The tiling infers about 81x the image's pixels: tiles of 16 "
     "pixels with halos of 64 compute windows of 144. Use tiles of at least 256 pixels")),
    (InferenceSettings(blend="gaussian", overlap=0.9999999), ("about 1008x the image's pixels: "
     "blended windows of 1024 pixels with overlap 0.9999999 step by 16. Use an overlap of 0.25")),
])
def test_a_tiling_that_infers_each_pixel_many_times_warns_with_the_factor(settings, said):
    with pytest.warns(UserWarning) as caught:
        Plan.create((2000, 2000), Geometry(halo=56, stride=16, n_classes=3), settings)
    assert any(said in str(w.message) for w in caught), [str(w.message) for w in caught]


@pytest.mark.parametrize("shape", [(64, 64), (5000, 7000), (30, 30, 30), (300, 300, 300)])
@pytest.mark.parametrize("global_context", [False, True])
def test_default_tilings_do_not_warn_of_their_cost(shape, global_context) -> None:
    """Default tiles and overlaps (blended windows for a model with global context)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Plan.create(shape, Geometry(halo=20, stride=4, global_context=global_context,
                                    n_classes=3), InferenceSettings(), Layout.create(shape))
    assert not [w for w in caught if "The tiling infers" in str(w.message)]
