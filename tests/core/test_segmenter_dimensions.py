"""``check_dimensions``: the one check, shared by ``geoseg.segment`` and jobs, that a segmenter
segments as many spatial axes as its input has."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.core.segmenter import Segmenter, check_dimensions
from geoseg.errors import PlanError


class Stub(Segmenter):
    """A segmenter of a given halo and stride (never run)."""

    classes = ()

    def __init__(self, halo: tuple[int, ...], stride: tuple[int, ...] | None = None, name: str = "stub"):
        self.halo, self.stride, self.name = halo, stride or (1,) * len(halo), name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise AssertionError("a dimension check never computes")


class AnyAxes(Stub):
    @property
    def spatial_axes(self) -> None:
        return None


@pytest.mark.parametrize("segmenter, axes", [
    (Stub((0, 0)), None),             # pointwise: any
    (Stub((0, 0), (2, 2)), 2),        # a stride makes it a 2D network
    (Stub((3, 3)), 2),
    (Stub((0, 4, 4)), 3),
    (AnyAxes((3, 3)), None),          # an n-D filter says so
])
def test_spatial_axes_default_to_the_halo_unless_pointwise(segmenter, axes):
    assert segmenter.spatial_axes == axes


@pytest.mark.parametrize("dims", [("y", "x"), ("z", "y", "x")])
def test_segmenters_of_any_axes_pass(dims):
    check_dimensions(Stub((0, 0)), dims, "the raster")
    check_dimensions(AnyAxes((5, 5)), dims, "the raster")


def test_a_2d_segmenter_on_a_volume_names_both_and_the_fix():
    with pytest.raises(PlanError, match=(
            r"^segment\(\): model: net segments images \(y, x\), but the raster has spatial axes "
            r"\('z', 'y', 'x'\); expected a model for volumes \(z, y, x\)\. Wrap it with "
            r"geoseg\.models\.SliceWise .*, or give a 3D model\.$")):
        check_dimensions(Stub((3, 3), name="net"), ("z", "y", "x"), "the raster", key="segment(): model")


def test_a_3d_segmenter_on_an_image_asks_for_a_2d_one():
    with pytest.raises(PlanError, match=r"^model: net3d segments volumes \(z, y, x\), but the input "
                                        r"x\.zarr has spatial axes \('y', 'x'\);.*Give a 2D model"):
        check_dimensions(Stub((1, 3, 3), name="net3d"), ("y", "x"), "the input x.zarr")
