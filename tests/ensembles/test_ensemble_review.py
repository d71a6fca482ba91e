"""Review fixes: huge or malformed weights, duplicated class names, members that segment any
number of spatial axes beside 3-D networks, TTA of such members on volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.ensembles import TTA, Ensemble, EnsembleError, normalize_weights
from geoseg.errors import PlanError
from geoseg.methods import LocalThreshold, Threshold
from geoseg.models import registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ("background", "foreground")


@pytest.fixture(scope="module")
def volume() -> xr.DataArray:
    rng = np.random.default_rng(0)
    return xr.DataArray(rng.integers(0, 255, (8, 20, 24)).astype(np.uint8), dims=("z", "y", "x"))


def _model(architecture: str) -> geoseg.SegmentationModel:
    torch.manual_seed(0)
    cfg = {"in_channels": 1, "num_classes": 2, "depth": 1, "width": 4}
    info = geoseg.ModelInfo(name=architecture, architecture=architecture, config=cfg,
                            classes=tuple(map(ClassInfo, NAMES)), bands=("b",), mean=(100.0,), std=(50.0,))
    return geoseg.SegmentationModel(registry.build_network(architecture, cfg), info, device="cpu")


@pytest.fixture(scope="module")
def unet3d() -> geoseg.SegmentationModel:
    return _model("unet3d")


def test_huge_weights_normalize_without_overflow():
    assert normalize_weights([1e308, 1e308], 2) == normalize_weights([1, 1], 2) == (0.5, 0.5)
    assert normalize_weights([1e308, 0], 2) == (1.0, 0.0)
    image = np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64)
    t = Threshold([100])
    np.testing.assert_array_equal(Ensemble([t, t], weights=[1e308, 1e308]).predict_image(image),
                                  t.predict_image(image))


def test_refusals_quote_the_weights_given():
    with pytest.raises(EnsembleError, match=r"all zero \(\[0, 0\]\)"):
        normalize_weights([0, 0], 2)
    with pytest.raises(EnsembleError, match=r"\[1, inf\]"):
        normalize_weights([1, float("inf")], 2)


@pytest.mark.parametrize("weights", [["a", 1], ["1", 2], {"a": 1, "b": 2}, "ab", 5, [[1], [2]], [None, 1]])
def test_weights_that_are_not_numbers_are_refused(weights):
    with pytest.raises(EnsembleError, match=r"weights: a list of numbers.*got .*weights=\[2, 1\]"):
        Ensemble([Threshold([9]), Threshold([9])], weights=weights)


def test_duplicated_class_names_are_named():
    with pytest.raises(EnsembleError, match=r"names \['background'\] more than once"):
        Ensemble([Threshold([9]), Threshold([9])], classes=["background", "background"])


def test_a_member_with_duplicated_classes_is_named():
    twice = Threshold([9], class_names=("a", "b"))
    object.__setattr__(twice, "class_names", ("a", "a"))  # as a member built elsewhere may be
    with pytest.raises(EnsembleError, match=r"duplicated: \['a'\]"):
        Ensemble([Threshold([9], class_names=("a", "b")), twice])


@pytest.mark.parametrize("other", [Threshold([100]), LocalThreshold(5, class_names=NAMES)], ids=["thr", "local"])
@pytest.mark.parametrize("first", [True, False])
def test_any_axes_members_join_a_3d_network(unet3d, volume, other, first):
    members = [unet3d, other] if first else [other, unet3d]
    ens = Ensemble(members)
    assert ens.spatial_axes == 3 and len(ens.stride) == len(ens.halo) == 3
    got = geoseg.segment(volume, ens, output="probabilities").values
    alone = [geoseg.segment(volume, m, output="probabilities").values for m in members]
    np.testing.assert_allclose(got, np.mean(alone, axis=0), atol=1e-6)


def test_members_fixed_to_other_axes_still_conflict(unet3d):
    with pytest.raises(EnsembleError, match=r"different numbers of spatial axes.*unet: stride \(\d+, \d+\)"):
        Ensemble([unet3d, _model("unet")])


@pytest.mark.parametrize("transforms", ["d4", "flips"])
def test_tta_of_an_any_axes_member_segments_volumes(volume, transforms):
    member = LocalThreshold(5, "mean")
    tta = TTA(member, transforms)
    assert tta.spatial_axes is None
    assert len(tta.transforms_for(3)) == 8 and all(not t.k for t in tta.transforms_for(3))
    got = geoseg.segment(volume, tta, output="probabilities").values
    np.testing.assert_allclose(got, geoseg.segment(volume, member, output="probabilities").values, atol=1e-6)


def test_tta_of_a_2d_member_on_a_volume_is_still_refused(volume):
    with pytest.raises(PlanError, match="segments images"):
        geoseg.segment(volume, TTA(_model("unet"), "d4"))
