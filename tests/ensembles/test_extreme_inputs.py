"""Wrappers on the extremes of their input types: test-time augmentation, an ensemble and a TTA
of an ensemble segment as their member alone does, on uint8, int64 and uint64 bands (beyond
2**53, up to 2**64 - 1, where float64 rounds values together) and on float64 pixels in and out
of float32's range (a 1e300 is no data to a network, so to every wrapper of it).

References: Python's own integer comparison (exact at any size) and the plain member's result
on the whole image, against :func:`geoseg.segment` on a Zarr store in small chunks and the
wrapper's :meth:`predict_image`.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch

import geoseg
from geoseg.ensembles import TTA, Ensemble, transform_set
from geoseg.methods import Threshold
from tests.conftest import random_unet, textured_image, write_zarr

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NODATA_CLASS = 255
# the input check's warning about values unlike a network's training data: these are on purpose
UNLIKE_TRAINING = "ignore:segment\\(\\):UserWarning"


def segmented(tmp_path, image: np.ndarray, segmenter, name: str, **attrs: object) -> np.ndarray:
    """Class ids of ``image`` (band, y, x) stored in a Zarr store of 6 x 6 chunks, segmented in
    6-pixel output chunks (regions whose far end is padded), no data as :data:`NODATA_CLASS`."""
    raster = geoseg.open_raster(write_zarr(tmp_path / f"{name}.zarr", image, chunks=(6, 6), **attrs))
    with dask.config.set(scheduler="sync"):
        return geoseg.segment(raster, segmenter, chunks=6, nodata_class=NODATA_CLASS).values


def direct(image: np.ndarray, segmenter, nodata=None) -> np.ndarray:
    """Class ids of the whole image by the segmenter itself, no data as :data:`NODATA_CLASS`."""
    scores = segmenter.predict_image(image, nodata)
    return np.where(np.isnan(scores).any(axis=0), NODATA_CLASS, np.nan_to_num(scores).argmax(axis=0))


def wrappers(member) -> dict[str, object]:
    return {
        "tta flips": TTA(member, "flips"),
        "tta d4": TTA(member, "d4"),
        "ensemble": Ensemble([member, member]),
        "tta(ensemble)": TTA(Ensemble([member, member]), "d4"),
        "ensemble(tta)": Ensemble([TTA(member, "flips")]),
    }


def python_classes(values: np.ndarray, threshold: float, nodata=None) -> np.ndarray:
    """``x > threshold`` in Python's exact integers (no data: :data:`NODATA_CLASS`)."""
    return np.array([[NODATA_CLASS if nodata is not None and v == nodata else int(v > threshold)
                      for v in row] for row in values.tolist()])


# (dtype, the values a 15 x 15 band cycles through, threshold, nodata): each threshold lies
# between values float64 rounds to one number (but uint8's and float64's)
THRESHOLD_CASES = {
    "uint8": (np.uint8, [0, 99, 100, 101, 255], 100, 255),
    "int64 near -2**63": (np.int64, [-(2**63), -(2**63) + 1000, -(2**63) + 1400], -(2**63) + 1100,
                          -(2**63)),
    "int64 near 2**63": (np.int64, [2**63 - 3000, 2**63 - 1000, 2**63 - 1], 2**63 - 1100, None),
    "uint64 near 2**63": (np.uint64, [2**63 + 100, 2**63 + 3000, 7], 2**63 + 1500, 7),
    "uint64 near 2**64": (np.uint64, [2**64 - 1, 2**64 - 2, 2**64 - 1000], 2**64 - 2, None),
    "float64": (np.float64, [0.5, 1e300, -1e300, 1.0000001, 1.0], 1.0, None),
}


@pytest.mark.parametrize("case", THRESHOLD_CASES, ids=str)
def test_threshold_wrappers_equal_the_threshold_alone(tmp_path, case):
    """A TTA, an ensemble and a TTA of an ensemble of a manual threshold give its exact classes
    (a uint64 band failed under TTA, flips torch lacks; an ensemble rounded 64-bit integers to
    float64 and put 2**63 + 100 and 2**63 + 3000 in one class)."""
    dtype, cycle, threshold, nodata = THRESHOLD_CASES[case]
    values = np.array([cycle[i % len(cycle)] for i in range(15 * 15)], dtype).reshape(1, 15, 15)
    values[0] = values[0].T[::-1]  # not the same along both axes
    expected = python_classes(values[0], threshold, nodata)
    attrs = {} if nodata is None else {"nodata": nodata}
    alone = Threshold(thresholds=[threshold])
    np.testing.assert_array_equal(segmented(tmp_path, values, alone, "alone", **attrs), expected)
    for name, wrapper in wrappers(alone).items():
        got = segmented(tmp_path, values, wrapper, name, **attrs)
        np.testing.assert_array_equal(got, expected, err_msg=f"{case}, {name} through segment")
        np.testing.assert_array_equal(direct(values, wrapper, nodata), expected,
                                      err_msg=f"{case}, {name} by predict_image")


@pytest.mark.filterwarnings(UNLIKE_TRAINING)
def test_an_ensemble_gives_a_network_floats_and_a_threshold_its_integers(tmp_path):
    """In one ensemble over a uint64 band a network member still gets float64 with NaN where no
    data (its scores as alone), and a threshold member the band's integers (exact)."""
    net = random_unet(bands=1, depth=1, seed=3)
    thresholds = [2**63 + 127, 2**63 + 1500, 2**63 + 2100]
    threshold = Threshold(thresholds=thresholds)  # class_0 .. class_3, as the network's
    as_net = Ensemble([net, threshold], weights=[1, 0])
    as_threshold = Ensemble([net, threshold], weights=[0, 1])
    small = np.random.default_rng(0).integers(0, 256, (1, 24, 24)).astype(np.uint64)
    small[0, 3:6, 7:9] = 17  # no data
    net_alone = segmented(tmp_path, small, net, "net", nodata=17)
    assert len(np.unique(net_alone)) >= 3  # classes and the no data
    for name, wrapper in (("ensemble", as_net), ("tta(ensemble)", TTA(as_net, "flips"))):
        alone = net if name == "ensemble" else TTA(net, "flips")
        np.testing.assert_array_equal(segmented(tmp_path, small, wrapper, name, nodata=17),
                                      segmented(tmp_path, small, alone, f"{name}-alone", nodata=17))
    huge = small * np.uint64(10) + np.uint64(2**63)  # steps of 10 past 2**63: float64 merges them
    expected = np.array([[NODATA_CLASS if v == 2**63 + 170 else sum(v > t for t in thresholds)
                          for v in row] for row in huge[0].tolist()])
    for name, wrapper in (("thr", as_threshold), ("tta(thr)", TTA(as_threshold, "d4"))):
        got = segmented(tmp_path, huge, wrapper, name, nodata=2**63 + 170)
        np.testing.assert_array_equal(got, expected, err_msg=name)


class CountingThreshold(Threshold):
    """A manual threshold counting the calls of its ``prepare`` on one pixel: how an ensemble
    asks whether a member keeps 64-bit integers."""

    asked = 0

    def prepare(self, raw, nodata=None):
        if raw[0].size == 1:
            type(self).asked += 1
        return super().prepare(raw, nodata)


def test_an_ensemble_asks_a_member_once_whether_it_keeps_integers():
    """The answer is the same for every batch of a job; it was asked for every batch, by a
    member's ``prepare`` of one pixel."""
    values = np.arange(16 * 16, dtype=np.int64).reshape(1, 16, 16) + 2**62
    member = CountingThreshold(thresholds=[2**62 + 100])
    ensemble = Ensemble([member, member])
    expected = python_classes(values[0], 2**62 + 100)
    for _ in range(10):  # ten batches of a task
        tiles = torch.from_numpy(ensemble.prepare(values)[0])[None]
        got = ensemble.predict_tensor(tiles).argmax(dim=1)[0].numpy()
        np.testing.assert_array_equal(got, expected)
    assert CountingThreshold.asked == 2  # members 0 and 1, once each


def float64_image() -> np.ndarray:
    """A float64 image with finite pixels past float32: 1e300 at (5, 5), 3.5e38 (just past
    float32's 3.4028e38) at (20, 20), -1e39 in one band at (9, 30)."""
    image = textured_image(32, 36).astype(np.float64)
    image[:, 5, 5] = 1e300
    image[:, 20, 20] = 3.5e38
    image[1, 9, 30] = -1e39
    return image


BEYOND_FLOAT32 = ((5, 5), (20, 20), (9, 30))


@pytest.mark.filterwarnings(UNLIKE_TRAINING)
def test_float64_beyond_float32_is_no_data_in_every_wrapper_of_a_network(tmp_path):
    """A network refuses a float64 pixel that normalises to no float32 number; an ensemble of it
    fed its members 0 there and wrote class 1. Every wrapper writes no data there, and scores
    elsewhere as its member does (an ensemble of two equal members as one, a TTA of it as the
    TTA of one)."""
    net = random_unet(depth=1, seed=3)
    image = float64_image()
    alone = segmented(tmp_path, image, net, "net")
    for y, x in BEYOND_FLOAT32:
        assert alone[y, x] == NODATA_CLASS
    assert len(np.unique(alone)) >= 3
    references = {"net": alone, "tta": segmented(tmp_path, image, TTA(net, "d4"), "tta")}
    for name, wrapper, reference in (
            ("ensemble", Ensemble([net, net]), "net"),
            ("ensemble(tta)", Ensemble([TTA(net, "d4")]), "tta"),
            ("tta(ensemble)", TTA(Ensemble([net, net]), "d4"), "tta"),
            ("ensemble(ensemble)", Ensemble([Ensemble([net]), net]), "net")):
        np.testing.assert_array_equal(segmented(tmp_path, image, wrapper, name),
                                      references[reference], err_msg=name)
        np.testing.assert_array_equal(direct(image, wrapper), direct(image, net if reference ==
                                      "net" else TTA(net, "d4")), err_msg=f"{name} by predict_image")


def test_float64_in_float32_range_gives_an_ensemble_what_float32_gives(tmp_path):
    """Within float32's range a float64 image is segmented as its float32 copy, by an ensemble
    of a network and a threshold too."""
    ensemble = Ensemble([random_unet(depth=1, seed=3), Threshold(thresholds=[64, 128, 192], feature=1)])
    image = textured_image(32, 36).astype(np.float64) * 1.5 - 20
    np.testing.assert_array_equal(segmented(tmp_path, image, ensemble, "f64"),
                                  segmented(tmp_path, image.astype(np.float32), ensemble, "f32"))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.uint16, torch.uint32,
                                   torch.int64, torch.uint64, torch.float64], ids=str)
def test_transforms_move_every_integer_type_as_numpy_does(dtype):
    """Flips and quarter turns of a batch of any integer type (uint64 near 2**64 too) equal
    numpy's, and undo them, bit for bit."""
    info = torch.iinfo(dtype) if not dtype.is_floating_point else None
    top = 2**64 - 1 if dtype == torch.uint64 else (info.max if info else 1e300)
    values = np.array([top - v for v in range(2 * 3 * 4 * 5)], dtype=object).reshape(2, 3, 4, 5)
    array = values.astype(torch.empty((), dtype=dtype).numpy().dtype)
    batch = torch.from_numpy(array.copy())
    for t in transform_set("d4", 2):
        expected = np.flip(array, axis=tuple(2 + a for a in t.flips)) if t.flips else array
        expected = np.rot90(expected, t.k, axes=(-2, -1))
        moved = t.apply(batch)
        assert moved.dtype == dtype
        np.testing.assert_array_equal(moved.numpy(), expected)
        np.testing.assert_array_equal(t.undo(moved).numpy(), array)
