"""Raster-scale scores equal scikit-learn's on the whole array, for any chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score, precision_score, recall_score

from geoseg.errors import EvaluationError
from geoseg.instances.panoptic import match_scores
from geoseg.report.eval import ClassMap, Labels, evaluate, instance_scores, region_slices

K = 4
IGNORE = 9  # a reference label that is not scored
REF_NODATA = 7
PRED_NODATA = 255


@st.composite
def scenes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int],
                                    list[int], int]:
    rows, cols = draw(st.integers(3, 40)), draw(st.integers(3, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ref = rng.choice([0, 1, 2, 3, IGNORE, REF_NODATA], p=[.3, .25, .2, .15, .05, .05],
                     size=(rows, cols)).astype(np.uint8)
    pred = rng.choice([0, 1, 2, 3, PRED_NODATA], p=[.25, .25, .2, .2, .1],
                      size=(rows, cols)).astype(np.uint8)
    agree = rng.random((rows, cols)) < 0.5
    pred[agree & (ref < K)] = ref[agree & (ref < K)]
    # odd chunkings, different on each side, at most ~36 chunks (dask's overhead per chunk)
    chunks_ref = (draw(st.integers(-(-rows // 6), rows)), draw(st.integers(-(-cols // 6), cols)))
    chunks_pred = (draw(st.integers(-(-rows // 6), rows)), draw(st.integers(-(-cols // 6), cols)))
    # an ignored label outside the classes, and sometimes a class itself (background, say)
    ignore = draw(st.sampled_from([[IGNORE], [IGNORE, 0], [IGNORE, 3]]))
    nodata = draw(st.sampled_from([REF_NODATA, 1]))  # the reference's nodata: maybe a class id
    return ref, pred, chunks_ref, chunks_pred, ignore, nodata


def _labels(array: np.ndarray, chunks: tuple[int, int], nodata: int) -> Labels:
    return Labels(da.from_array(array, chunks=chunks), tuple(f"c{i}" for i in range(K)), nodata)


@settings(max_examples=25, deadline=None)
@given(scenes())
def test_scores_equal_sklearn_on_the_whole_array(scene):
    ref, pred, chunks_ref, chunks_pred, ignore, nodata = scene
    try:
        got = evaluate(_labels(pred, chunks_pred, PRED_NODATA), _labels(ref, chunks_ref, nodata),
                       ignore=ignore)
    except EvaluationError as exc:
        assert "nothing to score" in str(exc)
        got = None
    keep = ~np.isin(ref, [*ignore, REF_NODATA, nodata]) & (pred != PRED_NODATA)
    t, p = ref[keep], pred[keep]
    if not keep.any():
        assert got is None  # refused: nothing to score
        return
    # ignored labels and the reference's no-data are no classes: neither listed nor in the mIoU
    labels = [i for i in range(K) if i not in ignore and i != nodata]
    assert got["classes"] == [f"c{i}" for i in labels]
    np.testing.assert_array_equal(got["confusion"], confusion_matrix(t, p, labels=labels))
    assert got["pixels_scored"] == keep.sum()
    kw = {"labels": labels, "average": None, "zero_division": 0}
    present = np.isin(labels, np.union1d(t, p))
    defined = {"iou": present, "f1": present, "precision": np.isin(labels, p),
               "recall": np.isin(labels, t)}  # where a ratio has a denominator; None elsewhere
    for name, expected in (("iou", jaccard_score(t, p, **kw)), ("f1", f1_score(t, p, **kw)),
                           ("precision", precision_score(t, p, **kw)),
                           ("recall", recall_score(t, p, **kw))):
        values = [got["per_class"][f"c{i}"][name] for i in labels]
        assert [v is not None for v in values] == defined[name].tolist(), name
        np.testing.assert_allclose([v for v in values if v is not None], expected[defined[name]],
                                   atol=1e-6, err_msg=name)
    iou = jaccard_score(t, p, **kw)
    assert got["miou"] == pytest.approx(np.mean(iou[present]), abs=1e-6)
    assert got["overall_accuracy"] == pytest.approx(np.mean(t == p), abs=1e-6)
    freq = np.bincount(t, minlength=K)[labels] / t.size
    assert got["fwiou"] == pytest.approx(np.nansum(freq * np.where(present, iou, 0)), abs=1e-6)


def test_a_prediction_outside_the_classes_counts_as_wrong():
    ref = np.array([[0, 1, 1, 2]], np.uint8)
    pred = np.array([[0, 1, 6, 2]], np.uint8)  # 6: not a class of the reference
    got = evaluate(Labels(da.from_array(pred, chunks=3), ("a", "b", "c")),
                   Labels(da.from_array(ref, chunks=2), ("a", "b", "c")))
    assert got["predicted_other"] == 1
    assert got["per_class"]["b"]["recall"] == 0.5
    assert got["per_class"]["b"]["precision"] == 1.0
    assert got["pixels_scored"] == 4


def test_class_mapping_by_name_and_by_id():
    ref = np.array([[0, 1, 2, 3]], np.uint8)
    pred = np.array([[1, 0, 1, 1]], np.uint8)
    by_name = evaluate(Labels(da.from_array(pred, chunks=2), ("water", "land")),
                       Labels(da.from_array(ref, chunks=3), ("land", "water", "road", "forest")))
    assert by_name["classes"] == ["water", "land", "road", "forest"]
    # land: 1 pixel right, predicted on 3, true on 1 -> IoU 1/3; road and forest never predicted
    assert by_name["per_class"]["land"]["iou"] == pytest.approx(1 / 3, abs=1e-6)
    assert by_name["per_class"]["road"]["iou"] == 0.0
    assert by_name["per_class"]["water"]["iou"] == 1.0
    merged = evaluate(Labels(da.from_array(pred, chunks=2), ("other", "built")),
                      Labels(da.from_array(ref, chunks=3)), mapping={0: 0, 1: 0, 2: 1, 3: 1})
    assert merged["confusion"] == [[1, 1], [0, 2]]  # ref 0,1 -> other; 2,3 -> built


def test_region_by_window_and_by_bbox():
    ref = np.zeros((10, 12), np.uint8)
    pred = np.ones((10, 12), np.uint8)
    pred[2:5, 3:9] = 0
    transform = (10.0, 0.0, 1000.0, 0.0, -10.0, 5000.0)
    labels = [Labels(da.from_array(a, chunks=4), ("a", "b"), transform=transform) for a in (pred, ref)]
    window = evaluate(*labels, window=(2, 5, 3, 9))
    assert window["pixels_scored"] == 18 and window["overall_accuracy"] == 1.0
    bbox = evaluate(*labels, bbox=(1030.0, 4950.0, 1090.0, 4980.0))
    assert bbox["region"] == [[2, 5], [3, 9]] and bbox["overall_accuracy"] == 1.0
    with pytest.raises(EvaluationError, match="outside the raster"):
        region_slices((10, 12), window=(0, 11, 0, 3))
    with pytest.raises(EvaluationError, match="no transform"):
        region_slices((10, 12), bbox=(0, 0, 1, 1))


def test_class_map_unknown_ids_are_dropped_from_the_reference():
    cmap = ClassMap.build(None, None, 3)
    assert cmap.names == ("0", "1", "2") and cmap.other == 3 and cmap.dropped == 4


@st.composite
def instance_scenes(draw: st.DrawFn):
    rows, cols = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    truth = _rectangles(rng, rows, cols, draw(st.integers(0, 8)))
    pred = truth.copy()
    pred[rng.random((rows, cols)) < 0.15] = 0  # eroded objects
    shift = draw(st.integers(0, 2))
    pred = np.roll(pred, shift, axis=1)
    extra = _rectangles(rng, rows, cols, draw(st.integers(0, 3))) * 100
    pred = np.where(pred == 0, extra, pred)
    chunks = (draw(st.integers(-(-rows // 5), rows)), draw(st.integers(-(-cols // 5), cols)))
    ignore = rng.random((rows, cols)) < 0.05
    offset = draw(st.sampled_from([0, 2**54, 2**63]))  # uint64 ids float64 cannot hold apart
    if offset:
        truth, pred = (np.where(a > 0, a.astype(np.uint64) + np.uint64(offset), np.uint64(0))
                       for a in (truth, pred))
    return truth, pred, chunks, ignore


def _rectangles(rng: np.random.Generator, rows: int, cols: int, n: int) -> np.ndarray:
    out = np.zeros((rows, cols), np.int64)
    for i in range(1, n + 1):
        r, c = rng.integers(0, rows - 2), rng.integers(0, cols - 2)
        out[r:r + rng.integers(2, 8), c:c + rng.integers(2, 8)] = i
    return out


@settings(max_examples=20, deadline=None)
@given(instance_scenes())
def test_instance_scores_equal_the_whole_array_matching(scene):
    truth, pred, chunks, ignore = scene
    classes_t = np.where(truth % 2 == 0, 1, 2) * (truth > 0).astype(np.int64)
    classes_p = np.where(pred % 2 == 0, 1, 2) * (pred > 0).astype(np.int64)
    expected = match_scores(truth, pred, truth_classes=classes_t, pred_classes=classes_p,
                            ignore=ignore)
    chunked = [da.from_array(a, chunks=chunks) for a in (truth, pred, classes_t, classes_p)]
    got = instance_scores(chunked[0], chunked[1], ref_classes=chunked[2], pred_classes=chunked[3],
                          valid=da.from_array(~ignore, chunks=chunks))
    assert got.keys() == expected.keys()
    for cls, by_threshold in expected.items():
        for t, score in by_threshold.items():
            mine = got[cls][t]
            assert (mine.tp, mine.fp, mine.fn) == (score.tp, score.fp, score.fn)
            assert mine.iou_sum == pytest.approx(score.iou_sum)


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
def test_class_ids_past_float64_s_integers_are_scored_as_sklearn_scores_them(dtype):
    """uint64 labels went through float64: ids past 2**53 merged, ids from 2**63 on all became
    one negative id, and three quarters of a wrong prediction vanished from its scores."""
    top = 2**64 - 1 if dtype == "uint64" else 2**63 - 1
    ids = np.array([1, 2**53 + 1, 2**53 + 2, top], dtype=dtype)
    rng = np.random.default_rng(0)
    ref = ids[rng.integers(0, 4, (40, 40))]
    pred = np.where(rng.random((40, 40)) < 0.3, ids[rng.integers(0, 4, (40, 40))], ref)
    got = evaluate(Labels(da.from_array(pred, chunks=(16, 24))),
                   Labels(da.from_array(ref, chunks=(24, 16))))
    assert got["classes"] == [str(i) for i in ids.tolist()]
    assert got["pixels_scored"] == ref.size
    assert np.array_equal(got["confusion"], confusion_matrix(ref.ravel(), pred.ravel(), labels=ids))
    assert got["miou"] == pytest.approx(jaccard_score(ref.ravel(), pred.ravel(), average="macro"),
                                        abs=1e-6)


def test_one_id_per_pixel_is_refused_holding_few_values_per_chunk(monkeypatch):
    """Every chunk's values were gathered before the class count was checked: about 400 bytes
    a pixel, so a large raster of ids could not even be refused."""
    from geoseg.report import eval as evaluation

    held = []
    union = evaluation._union
    monkeypatch.setattr(evaluation, "_union", lambda a, b: held.append(len(a) + len(b)) or union(a, b))
    ids = np.arange(128 * 128, dtype=np.int64).reshape(128, 128)
    labels = Labels(da.from_array(ids, chunks=(64, 64)))
    with pytest.raises(EvaluationError, match="received labels of at least 2,048 classes"):
        evaluate(labels, labels)
    assert held and max(held) <= 2 * evaluation.MAX_CLASSES  # each side cut at MAX_CLASSES


def test_class_names_given_twice_are_refused():
    """Scores are keyed by name: the second 'water' hid the first's row (IoU 0) from the table
    while the mIoU still counted it."""
    labels = Labels(da.zeros((8, 8), dtype=np.uint8, chunks=4), ("water", "water", "road"),
                    url="ref.zarr")
    with pytest.raises(EvaluationError, match=r"ref.zarr: received class names \['water', "
                                              r"'water', 'road'\] with 'water' more than once"):
        evaluate(Labels(labels.data, ("water", "land", "road")), labels)
