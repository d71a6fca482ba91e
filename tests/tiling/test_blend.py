"""Blending plans and weights: pure arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import PlanError
from geoseg.tiling import Tiling, region_tiles, regions
from geoseg.tiling.blend import blend_weights


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), tile=st.integers(1, 12), stride=st.sampled_from([1, 2, 8]),
       overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]), chunk=st.integers(3, 150))
def test_blended_windows_cover_every_pixel_and_match_across_regions(n, tile, stride, overlap, chunk):
    spec = Tiling.create((n,), tile=max(2, tile) * stride, halo=0, stride=stride, blend="gaussian",
                             overlap=overlap)
    whole = {(t.axes[0].win_start, t.axes[0].win_stop) for t in region_tiles(spec, (slice(0, n),))}
    covered = np.zeros(n, dtype=int)
    for region in regions((n,), (chunk,)):
        for tile_ in region_tiles(spec, region):
            assert (tile_.axes[0].win_start, tile_.axes[0].win_stop) in whole  # the whole image's windows
            w = tile_.window[0]
            assert w.start % stride == 0 and 0 <= w.start and w.stop <= spec.padded_shape[0]
            assert w.stop - w.start == spec.window_shape[0]
            covered[tile_.output] += 1
    assert (covered >= 1).all()


def test_windows_follow_the_sliding_window_grid():
    spec = Tiling.create((100,), tile=40, halo=0, blend="constant", overlap=0.25)
    starts = [t.window[0].start for t in region_tiles(spec, (slice(0, 100),))]
    assert starts == [0, 30, 60]  # step int(40 * 0.75) = 30; last ends at 100


@pytest.mark.parametrize("mode", ["gaussian", "constant", "linear", "cosine"])
def test_weights_are_positive_symmetric_and_peak_inside(mode):
    w = blend_weights(mode, (16, 10), ramp=(4, 4))
    assert w.shape == (16, 10) and (w >= 1e-3).all()
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)
    assert w[8, 5] == w.max()


def test_gaussian_weights_follow_the_formula():
    w = blend_weights("gaussian", (8,))
    x = np.arange(8) - 3.5
    np.testing.assert_allclose(w, np.maximum(np.exp(-x**2 / (2 * 1.0**2)), 1e-3), rtol=1e-6)


def test_bad_blend_settings():
    with pytest.raises(PlanError, match="not a blend mode"):
        Tiling.create((10,), tile=4, halo=0, blend="average")
    with pytest.raises(PlanError, match=r"fraction in \[0, 1\)"):
        Tiling.create((10,), tile=4, halo=0, blend="gaussian", overlap=1.0)
