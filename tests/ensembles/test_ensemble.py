"""Ensembles: combination rules, class reconciliation, chunked exactness, one read per window."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import dask
import numpy as np
import pytest
import torch

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.ensembles import TTA, Ensemble, EnsembleError, EnsembleRef, normalize_weights
from geoseg.errors import BandMismatchError
from geoseg.io.sources import ZarrSource
from geoseg.models import SegmentationModel, Segmenter
from geoseg.models.ranges import sample_windows
from geoseg.parallel.lazy import MIN_TASK_PIXELS
from geoseg.tiling import Geometry, InferenceSettings, Layout, Plan
from tests.conftest import random_unet, textured_image, write_zarr

HEIGHT, WIDTH = 101, 87


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Fixed(Segmenter):
    """Stand-in member: the same score vector at every pixel."""

    def __init__(self, scores: tuple[float, ...], names: tuple[str, ...] | None = None, name: str = "fixed"):
        self.name = name
        self.scores = np.asarray(scores, np.float32)
        names = names or tuple(f"class_{i}" for i in range(len(scores)))
        self.classes = tuple(ClassInfo(n) for n in names)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        n, _, *spatial = batch.shape
        return np.broadcast_to(self.scores.reshape(1, -1, *([1] * len(spatial))),
                               (n, len(self.scores), *spatial)).copy()


def permuted(model: SegmentationModel, order: list[int]) -> SegmentationModel:
    """The same network with its output channels (and class names) in ``order``."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        net.head.weight.copy_(model.net.head.weight[order])
        net.head.bias.copy_(model.net.head.bias[order])
    info = dataclasses.replace(model.info, classes=tuple(model.classes[i] for i in order), name="permuted")
    return SegmentationModel(net, info, device="cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(HEIGHT, WIDTH, seed=5)


@pytest.fixture(scope="module")
def unet() -> SegmentationModel:
    return random_unet(seed=3, depth=1)


@pytest.fixture(scope="module")
def members() -> list[Segmenter]:
    """Different depths/widths/checkpoints: strides 4 and 2, halos differ; one permuted, one TTA."""
    return [random_unet(seed=3, depth=2, width=8), permuted(random_unet(seed=0, depth=1, width=4), [2, 0, 3, 1]),
            TTA(random_unet(seed=3, depth=1, width=8))]


def test_mean_of_one_model_repeated_is_that_model(unet, image):
    expected = unet.predict_image(image)
    for n in (1, 3):
        got = Ensemble([unet] * n).predict_image(image)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_weights_are_normalized(unet, image):
    other = random_unet(seed=0, depth=1, width=4)
    assert normalize_weights((2, 2), 2) == normalize_weights((1, 1), 2) == (0.5, 0.5)
    a = Ensemble([unet, other], weights=(2, 2)).predict_image(image)
    b = Ensemble([unet, other], weights=(1, 1)).predict_image(image)
    np.testing.assert_array_equal(a, b)
    only_other = Ensemble([unet, other], weights=(0, 3)).predict_image(image)
    np.testing.assert_allclose(only_other, other.predict_image(image), atol=1e-6, rtol=0)


@pytest.mark.parametrize("weights", [(1, -1), (0, 0), (1,), (1, float("nan"))])
def test_bad_weights_raise(unet, weights):
    with pytest.raises(EnsembleError, match="weight"):
        Ensemble([unet, unet], weights=weights)


def test_unknown_combine_and_empty_members_raise(unet):
    with pytest.raises(EnsembleError, match="combine"):
        Ensemble([unet], combine="median")
    with pytest.raises(EnsembleError, match="at least one"):
        Ensemble([])


def _class_of(ens: Ensemble) -> int:
    scores = ens.predict(np.zeros((1, 1, 2, 2), np.float32))
    ids = scores.argmax(1)
    assert np.all(ids == ids.flat[0])
    return int(ids.flat[0])


def test_vote_majority_and_weights():
    a, b, c = Fixed((0.6, 0.4, 0.0)), Fixed((0.0, 0.3, 0.7)), Fixed((0.1, 0.2, 0.7))
    assert _class_of(Ensemble([a, b, c], combine="vote")) == 2
    assert _class_of(Ensemble([a, b, c], weights=(3, 1, 1), combine="vote")) == 0
    shares = Ensemble([a, b, c], weights=(2, 1, 1), combine="vote").predict(np.zeros((1, 1, 1, 1)))
    np.testing.assert_allclose(shares[0, :, 0, 0], [0.5, 0.0, 0.5], atol=1e-6)


def test_vote_tie_goes_to_highest_mean_probability_then_lowest_id():
    # Tie in votes (one each for class 0 and 1): class 1 has the higher mean probability.
    a, b = Fixed((0.6, 0.4, 0.0)), Fixed((0.1, 0.9, 0.0))
    assert _class_of(Ensemble([a, b], combine="vote")) == 1
    assert _class_of(Ensemble([b, a], combine="vote")) == 1
    # Tie in votes and in mean probability: the lowest class id wins.
    c, d = Fixed((0.3, 0.0, 0.7)), Fixed((0.7, 0.0, 0.3))
    assert _class_of(Ensemble([c, d], combine="vote")) == 0
    assert _class_of(Ensemble([d, c], combine="vote")) == 0
    # A mean ensemble of the same members would pick class 1 / class 0 too; max picks the peak.
    assert _class_of(Ensemble([a, b], combine="max")) == 1


def test_max_is_per_class_maximum():
    a, b = Fixed((0.6, 0.4, 0.0)), Fixed((0.1, 0.2, 0.7))
    scores = Ensemble([a, b], combine="max").predict(np.zeros((2, 1, 3, 3)))
    np.testing.assert_array_equal(scores[1, :, 2, 2], np.float32([0.6, 0.4, 0.7]))


def test_permuted_class_order_gives_the_same_ensemble(image):
    a, b = random_unet(seed=3, depth=1), random_unet(seed=0, depth=2, width=4)
    b_perm = permuted(b, [3, 1, 0, 2])
    assert [c.name for c in b_perm.classes] != [c.name for c in b.classes]
    for combine in ("mean", "vote", "max"):
        ref = Ensemble([a, b], combine=combine).predict_image(image)
        got = Ensemble([a, b_perm], combine=combine).predict_image(image)
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    # The ensemble's order can be chosen: the first member's, or explicit names.
    flipped = Ensemble([a, b_perm], classes=[c.name for c in b_perm.classes])
    assert flipped.classes == b_perm.classes
    ref_mean = Ensemble([a, b]).predict_image(image)
    np.testing.assert_allclose(flipped.predict_image(image), ref_mean[[3, 1, 0, 2]], atol=1e-6, rtol=0)


def test_mismatched_class_names_raise_before_compute(unet):
    other = Fixed((0.1, 0.2, 0.3, 0.4), names=("class_0", "class_1", "class_2", "water"), name="odd")
    with pytest.raises(EnsembleError, match=r"member 1 \(odd\).*missing: \['class_3'\], extra: \['water'\]"):
        Ensemble([unet, other])
    with pytest.raises(EnsembleError, match="missing"):
        Ensemble([unet, Fixed((0.5, 0.5, 0.0))])


def test_a_class_mismatch_names_both_members_and_their_class_counts(unet):
    """Which member set the ensemble's classes, and how many each has, in the one message."""
    three = Fixed((0.5, 0.5, 0.0), name="three")
    with pytest.raises(EnsembleError, match=r"member 1 \(three\) has 3 classes \['class_0', "
                                            r"'class_1', 'class_2'\] but the ensemble's 4 classes "
                                            r"\(member 0, random-unet\) are \['class_0'"):
        Ensemble([unet, three])
    with pytest.raises(EnsembleError, match=r"member 0 \(three\) has 3 classes .* 2 classes "
                                            r"\(as given\) are \['class_0', 'class_1'\]") as told:
        Ensemble([three], classes=["class_0", "class_1"])
    # it suggested the very classes=[...] that was refused
    assert "only sets their order: it names every class of every member, not a subset" in \
        str(told.value)


def test_mismatched_band_counts_raise_before_compute(unet, tmp_path):
    with pytest.raises(BandMismatchError, match=r"member 1 .* expects 4 band.*expects 3"):
        Ensemble([unet, random_unet(bands=4)])
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", textured_image(40, 40, bands=4)))
    with pytest.raises(BandMismatchError, match="expects 3 band.*has 4"):
        geoseg.segment(raster, Ensemble([unet, unet]))


def test_a_classical_member_whose_feature_names_other_bands_is_refused_before_compute(
        unet, tmp_path):
    """The README promises it; a threshold of "the only band" beside a 3-band network was
    accepted by Ensemble and segment(), and failed in the first task."""
    from geoseg.methods import Threshold

    names = [c.name for c in unet.classes]
    single = Threshold((100.0, 150.0, 200.0), class_names=names)  # no feature: the only band
    with pytest.raises(BandMismatchError, match=r"Ensemble member 1 \(manual threshold\): No "
                                                r"feature was given.* has 3 bands"):
        Ensemble([unet, single])
    pair = Ensemble([single, Threshold((50.0, 60.0, 70.0), class_names=names)])  # of any bands
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", textured_image(40, 40)))
    for segmenter in (pair, TTA(pair, "flips")):
        with pytest.raises(BandMismatchError, match=r"Ensemble member 0 .* the raster has 3 bands"):
            geoseg.segment(raster, segmenter)
    banded = Ensemble([unet, Threshold((100.0, 150.0, 200.0), feature=2, class_names=names)])
    assert geoseg.segment(raster, banded).shape == (40, 40)


def test_geometry_is_max_halo_and_lcm_stride(members):
    ens = Ensemble(members)
    assert [m.stride for m in members] == [(4, 4), (2, 2), (2, 2)]
    assert ens.stride == (4, 4)
    assert ens.halo == tuple(max(m.halo[a] for m in members) for a in range(2))
    with pytest.raises(EnsembleError, match="spatial axes"):
        Ensemble([members[0], Fixed3D()])


class Fixed3D(Fixed):
    """A member fixed to volumes (a pointwise one would segment any number of axes)."""

    stride = (1, 1, 1)
    halo = (0, 0, 0)
    spatial_axes = 3

    def __init__(self) -> None:
        super().__init__((0.25,) * 4)


def test_ref_travels_as_member_refs_and_resolves(members, image):
    ens = Ensemble(members, weights=(1, 2, 3), combine="vote")
    ref = ens.ref()
    assert isinstance(ref, EnsembleRef)
    assert len(pickle.dumps(ref)) < 5_000  # references, not weights
    back = geoseg.models.resolve(pickle.loads(pickle.dumps(ref)))
    assert isinstance(back, Ensemble) and back.weights == ens.weights and back.combine == "vote"
    np.testing.assert_array_equal(back.predict_image(image[:, :40, :40]), ens.predict_image(image[:, :40, :40]))


@pytest.mark.parametrize("combine, chunks, tile", [("mean", (40, 33), 32), ("vote", (27, 61), 40),
                                                   ("max", (72, 61), 64)])
def test_chunked_ensemble_equals_whole_image(tmp_path, members, image, combine, chunks, tile):
    image = image[:, :72, :61]
    ens = Ensemble(members, weights=(1, 2, 1), combine=combine)
    reference = ens.predict_image(image)
    assert reference.std(axis=(1, 2)).max() > 1e-3
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, chunks=(40, 40)))
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(raster, ens, output="probabilities", chunks=chunks, tile=tile).values
        classes = geoseg.segment(raster, ens, chunks=chunks, tile=tile).values
    np.testing.assert_allclose(probs, reference, atol=1e-5, rtol=0)
    agree = np.mean(classes == reference.argmax(0))
    assert agree == 1.0 if combine != "mean" else agree > 0.9999


def test_nodata_reaches_every_member_as_in_whole_image(tmp_path, unet, image):
    image = image.copy()
    image[:, 10:20, 30:50] = 0
    other = random_unet(seed=0, depth=2, width=4)
    ens = Ensemble([unet, other])
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, nodata=0))
    with dask.config.set(scheduler="sync"):
        classes = geoseg.segment(raster, ens, chunks=(40, 40), tile=32).values
    expected = ((unet.predict_image(image, nodata=0) + other.predict_image(image, nodata=0)) / 2).argmax(0)
    expected[10:20, 30:50] = 255
    np.testing.assert_array_equal(classes, expected)


def test_bytes_read_do_not_grow_with_members(tmp_path, monkeypatch, unet, image):
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, chunks=(40, 40)))
    counts = {"bytes": 0, "reads": 0}
    original = ZarrSource.read

    def counting_read(self, window):
        data = original(self, window)
        counts["bytes"] += data.nbytes
        counts["reads"] += 1
        return data

    monkeypatch.setattr(ZarrSource, "read", counting_read)
    measured = []
    for n in (1, 5):
        counts.update(bytes=0, reads=0)
        ens = Ensemble([random_unet(seed=s, depth=1, width=4) for s in range(n)])
        with dask.config.set(scheduler="sync"):
            geoseg.segment(raster, ens, chunks=(50, 44), tile=32).compute()
        measured.append(dict(counts))
    assert measured[0] == measured[1]
    shape = image.shape[1:]
    plan = Plan.create(shape, Geometry.of(ens), InferenceSettings(tile=32),
                       Layout.create(shape, (50, 44)), min_pixels=MIN_TASK_PIXELS)
    sampled = len(sample_windows(shape, (40, 40)))  # segment()'s check of the values
    assert measured[0]["reads"] == plan.n_tasks + sampled  # one a task
