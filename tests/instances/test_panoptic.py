"""Panoptic quality and threshold matching (geoseg.instances.panoptic)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geoseg.instances.panoptic import (
    DEFAULT_THRESHOLDS,
    PanopticScore,
    match_scores,
    panoptic_quality,
)


def reference(truth, pred, truth_cls=None, pred_cls=None, threshold=0.5, ignore=None):
    """Loop over every pair of objects with whole-image masks: slow, plainly right."""
    valid = np.ones(truth.shape, bool) if ignore is None else ~ignore

    def objects(labels, classes):
        found = {}
        for i in np.unique(labels[labels > 0]):
            mask = labels == i
            found[int(i)] = (mask, 1 if classes is None else int(classes[mask][0]))
        return found

    truths, preds = objects(truth, truth_cls), objects(pred, pred_cls)
    scores = {}
    for cls in {c for _, c in truths.values()} | {c for _, c in preds.values()}:
        t_of = {i: m for i, (m, c) in truths.items() if c == cls and (m & valid).any()}
        p_of = {i: m for i, (m, c) in preds.items() if c == cls and (m & valid).any()}
        if not t_of and not p_of:
            continue
        tp, iou_sum, matched = 0, 0.0, set()
        for tm in t_of.values():
            for j, pm in p_of.items():
                iou = (tm & pm & valid).sum() / ((tm | pm) & valid).sum()
                if iou > threshold:
                    tp, iou_sum = tp + 1, iou_sum + iou
                    matched.add(j)
        fp = sum(1 for j, pm in p_of.items()
                 if j not in matched and 2 * (pm & ~valid).sum() <= pm.sum())
        scores[cls] = (tp, fp, len(t_of) - tp, iou_sum)
    return scores


def _assert_same(got: dict[int, PanopticScore], expected: dict) -> None:
    assert set(got) == set(expected)
    for cls, (tp, fp, fn, iou_sum) in expected.items():
        score = got[cls]
        assert (score.tp, score.fp, score.fn) == (tp, fp, fn), cls
        assert score.iou_sum == pytest.approx(iou_sum)


labels = hnp.arrays(np.uint16, st.tuples(st.integers(1, 9), st.integers(1, 9)),
                    elements=st.integers(0, 5))


@st.composite
def cases(draw):
    truth = draw(labels)
    pred = draw(hnp.arrays(np.uint16, truth.shape, elements=st.integers(0, 5)))
    ignore = draw(st.none() | hnp.arrays(np.bool_, truth.shape))
    classes = draw(st.booleans())
    truth_cls = pred_cls = None
    if classes:  # a class per object id, painted on its pixels
        table_t = np.array(draw(st.lists(st.integers(1, 2), min_size=6, max_size=6)))
        table_p = np.array(draw(st.lists(st.integers(1, 2), min_size=6, max_size=6)))
        truth_cls, pred_cls = table_t[truth], table_p[pred]
    threshold = draw(st.sampled_from(DEFAULT_THRESHOLDS))
    return truth, pred, truth_cls, pred_cls, threshold, ignore


@given(cases())
@settings(max_examples=300, deadline=None)
def test_matches_loop_over_objects(case) -> None:
    truth, pred, truth_cls, pred_cls, threshold, ignore = case
    got = panoptic_quality(truth, pred, truth_classes=truth_cls, pred_classes=pred_cls,
                           iou_threshold=threshold, ignore=ignore)
    _assert_same(got, reference(*case))


@given(cases())
@settings(max_examples=100, deadline=None)
def test_all_thresholds_at_once(case) -> None:
    truth, pred, truth_cls, pred_cls, _, ignore = case
    got = match_scores(truth, pred, truth_classes=truth_cls, pred_classes=pred_cls,
                       ignore=ignore)
    for threshold in DEFAULT_THRESHOLDS:
        expected = reference(truth, pred, truth_cls, pred_cls, threshold, ignore)
        _assert_same({c: by_t[threshold] for c, by_t in got.items()}, expected)


def _square(shape, top, left, size, value=1, out=None):
    out = np.zeros(shape, np.uint32) if out is None else out
    out[top:top + size, left:left + size] = value
    return out


def test_identical_is_perfect() -> None:
    truth = _square((20, 20), 2, 2, 5, 1)
    _square((20, 20), 10, 10, 4, 7, out=truth)
    (score,) = panoptic_quality(truth, truth).values()
    assert (score.pq, score.sq, score.rq, score.tp, score.fp, score.fn) == (1, 1, 1, 2, 0, 0)


def test_shifted_square_and_an_extra_prediction() -> None:
    truth = _square((20, 20), 0, 0, 4)  # 16 px
    pred = np.zeros_like(truth)
    pred[0:4, 1:5] = 3  # overlap 12, union 20: IoU 0.6
    pred[10:12, 10:12] = 4  # nothing there: a false positive
    score = panoptic_quality(truth, pred)[1]
    assert (score.tp, score.fp, score.fn) == (1, 1, 0)
    assert score.sq == pytest.approx(0.6)
    assert score.rq == pytest.approx(1 / 1.5)
    assert score.pq == pytest.approx(0.4)
    assert (score.precision, score.recall, score.f1) == (0.5, 1.0, score.rq)


def test_iou_of_exactly_half_does_not_match() -> None:
    truth = _square((4, 4), 0, 0, 4)
    pred = np.zeros_like(truth)
    pred[:2] = 1  # IoU 8/16
    score = panoptic_quality(truth, pred)[1]
    assert (score.tp, score.fp, score.fn, score.pq) == (0, 1, 1, 0.0)


def test_split_object_is_one_miss_and_two_false_positives() -> None:
    truth = _square((8, 8), 0, 0, 8)
    pred = np.ones_like(truth)
    pred[:, 4:] = 2
    score = panoptic_quality(truth, pred)[1]
    assert (score.tp, score.fp, score.fn) == (0, 2, 1)


def test_merged_touching_pair_keeps_one_match_at_most() -> None:
    truth = np.zeros((6, 12), np.uint32)
    truth[:, :8], truth[:, 8:] = 1, 2  # a big and a small house sharing a wall
    pred = (truth > 0).astype(np.uint32)  # components merge them: IoU 48/72 and 24/72
    score = panoptic_quality(truth, pred)[1]
    assert (score.tp, score.fp, score.fn) == (1, 0, 1)
    assert score.sq == pytest.approx(48 / 72)


def test_classes_must_agree_to_match() -> None:
    truth = _square((6, 6), 0, 0, 3)
    classes_t, classes_p = np.full(truth.shape, 4), np.full(truth.shape, 2)
    got = panoptic_quality(truth, truth, truth_classes=classes_t, pred_classes=classes_p)
    assert (got[4].tp, got[4].fn, got[4].fp) == (0, 1, 0)
    assert (got[2].tp, got[2].fn, got[2].fp) == (0, 0, 1)


def test_ignored_pixels() -> None:
    truth = _square((10, 10), 0, 0, 4)
    pred = truth.copy()
    pred[0:4, 4:6] = 1  # spills onto ignored pixels: the IoU does not see them
    pred[7:10, 7:10] = 2  # a prediction mostly on ignored pixels: no false positive
    ignore = np.zeros(truth.shape, bool)
    ignore[:, 4:6] = True
    ignore[7:10, 8:10] = True
    score = panoptic_quality(truth, pred, ignore=ignore)[1]
    assert (score.tp, score.fp, score.fn, score.sq) == (1, 0, 0, 1.0)
    ignore[7:10, 8:10] = False
    assert panoptic_quality(truth, pred, ignore=ignore)[1].fp == 1


def test_wholly_ignored_truth_is_not_counted() -> None:
    truth = _square((6, 6), 0, 0, 2)
    pred = np.zeros_like(truth)
    assert panoptic_quality(truth, pred, ignore=truth > 0) == {}


def test_empty_images_give_no_classes() -> None:
    empty = np.zeros((5, 5), np.uint32)
    assert panoptic_quality(empty, empty) == {}
    assert match_scores(empty, empty) == {}


def test_large_sparse_ids() -> None:
    truth = _square((8, 8), 0, 0, 3, 2**31 + 5)
    pred = _square((8, 8), 0, 0, 3, 2**32 - 1).astype(np.uint64)
    assert panoptic_quality(truth, pred)[1].pq == 1.0


def test_uint64_ids_from_2_63_on() -> None:
    rng = np.random.default_rng(3)
    ids = np.array([0, 1, 2**63 + 5, 2**64 - 1], np.uint64)
    truth, pred = ids[rng.integers(0, 4, (9, 9))], ids[rng.integers(0, 4, (9, 9))]
    truth[:5] = pred[:5]  # some matches
    _assert_same(panoptic_quality(truth, pred), reference(truth, pred))


def test_scores_add_up_over_images() -> None:
    a = PanopticScore(tp=2, fp=1, fn=0, iou_sum=1.5)
    b = PanopticScore(tp=1, fp=0, fn=2, iou_sum=0.9)
    total = a + b
    assert (total.tp, total.fp, total.fn, total.iou_sum) == (3, 1, 2, pytest.approx(2.4))
    assert total.sq == pytest.approx(0.8)
    with pytest.raises(ValueError, match="thresholds"):
        a + PanopticScore(1, 0, 0, 0.9, threshold=0.75)
    assert total.to_dict()["pq"] == pytest.approx(total.pq)


def test_match_scores_thresholds() -> None:
    truth = _square((10, 10), 0, 0, 4)
    pred = np.zeros_like(truth)
    pred[0:4, 0:3] = 1  # IoU 0.75
    by_t = match_scores(truth, pred)[1]
    assert list(by_t) == list(DEFAULT_THRESHOLDS)
    assert [by_t[t].tp for t in DEFAULT_THRESHOLDS] == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert match_scores(truth, pred, thresholds=(0.7,))[1][0.7].f1 == 1.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"iou_threshold": 0.3}, "threshold"),
    ({"iou_threshold": 1.0}, "threshold"),
    ({"truth_classes": np.ones((4, 4), int)}, "both"),
    ({"ignore": np.zeros((3, 4), bool)}, "shape"),
])
def test_bad_arguments(kwargs, match) -> None:
    truth = _square((4, 4), 0, 0, 2)
    with pytest.raises(ValueError, match=match):
        panoptic_quality(truth, truth, **kwargs)


def test_bad_labels() -> None:
    truth = _square((4, 4), 0, 0, 2)
    with pytest.raises(ValueError, match="shape"):
        panoptic_quality(truth, truth[:3])
    with pytest.raises(ValueError, match="integer"):
        panoptic_quality(truth.astype(float), truth)
    with pytest.raises(ValueError, match="negative"):
        panoptic_quality(truth, -truth.astype(np.int32))


def test_object_with_two_classes_is_refused() -> None:
    truth = _square((4, 4), 0, 0, 2, 9)
    classes = np.ones((4, 4), int)
    classes[0, 0] = 3
    with pytest.raises(ValueError, match=r"object 9 has pixels of classes \[1, 3\]"):
        panoptic_quality(truth, truth, truth_classes=classes, pred_classes=np.ones((4, 4), int))
