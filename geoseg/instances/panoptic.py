"""Panoptic quality and IoU-threshold matching of instance label images (in memory).

The standard definition (Kirillov et al., "Panoptic Segmentation", CVPR 2019): a
predicted and a true segment of the same class match when their IoU exceeds the
threshold (0.5 by default; any threshold >= 0.5 makes matches unique), and

* SQ = mean IoU of the matches,
* RQ = TP / (TP + FP/2 + FN/2), which is the F1 score of the detection,
* PQ = SQ * RQ.

All overlaps come from one ``np.unique`` over the (truth id, predicted id) pairs
of the pixels where both are objects; nothing loops over objects on the image.
Ignored pixels (no data, unlabelled) count for neither side, and a prediction
lying mostly on them is no false positive, as in the paper's treatment of void.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geoseg.errors import EvaluationError

__all__ = ["DEFAULT_THRESHOLDS", "PanopticScore", "match_scores", "panoptic_quality"]

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
OBJECT = 1  # the class of every instance when no class images are given

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class PanopticScore:
    """Matching counts of one class at one IoU threshold, and the scores they give.

    Scores of several images add up exactly: ``a + b`` sums the counts (and the
    matched IoUs), which is how PQ over a data set is defined.
    """

    tp: int
    fp: int
    fn: int
    iou_sum: float
    threshold: float = 0.5

    @property
    def sq(self) -> float:
        """Segmentation quality: mean IoU of the matched pairs (0 without matches)."""
        return self.iou_sum / self.tp if self.tp else 0.0

    @property
    def rq(self) -> float:
        """Recognition quality ``TP / (TP + FP/2 + FN/2)`` (0 without any segment)."""
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return self.tp / denominator if denominator else 0.0

    @property
    def pq(self) -> float:
        """Panoptic quality ``SQ * RQ``."""
        return self.sq * self.rq

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)`` (0 without predictions)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """``TP / (TP + FN)`` (0 without true segments)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; equal to `rq`."""
        return self.rq

    def __add__(self, other: PanopticScore) -> PanopticScore:
        if not isinstance(other, PanopticScore):
            return NotImplemented
        if other.threshold != self.threshold:
            raise EvaluationError(f"cannot add scores at IoU thresholds {self.threshold} and "
                                  f"{other.threshold}; add scores of one threshold only.")
        return PanopticScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                             self.iou_sum + other.iou_sum, self.threshold)

    def to_dict(self) -> dict[str, float]:
        """Counts and scores as plain numbers (for JSON, logs, model metadata)."""
        return {"pq": self.pq, "sq": self.sq, "rq": self.rq, "tp": self.tp, "fp": self.fp,
                "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "threshold": self.threshold}


def panoptic_quality(
    truth_instances: np.ndarray,
    pred_instances: np.ndarray,
    *,
    truth_classes: np.ndarray | None = None,
    pred_classes: np.ndarray | None = None,
    iou_threshold: float = 0.5,
    ignore: np.ndarray | None = None,
) -> dict[int, PanopticScore]:
    """Panoptic quality per class of predicted instances against true ones.

    Parameters
    ----------
    truth_instances, pred_instances : numpy.ndarray
        Integer label images of one shape: ``0`` is no object, any other value
        one object (ids need not be contiguous).
    truth_classes, pred_classes : numpy.ndarray, optional
        Integer class images of the same shape, both or neither. An object's
        class is the class of its pixels, which must all agree. Without them
        every object is of class ``1``.
    iou_threshold : float, optional
        Segments match when their IoU is strictly above it; in ``[0.5, 1)``.
    ignore : numpy.ndarray, optional
        Boolean image of pixels that count for neither side (no data, void).

    Returns
    -------
    dict of int to PanopticScore
        One score per class present in the truth or the prediction, by class id.

    Raises
    ------
    ValueError
        If shapes differ, labels are not non-negative integers, only one class
        image is given, an object's pixels have several classes, or the
        threshold is out of range.
    """
    scores = match_scores(truth_instances, pred_instances, truth_classes=truth_classes,
                          pred_classes=pred_classes, thresholds=(iou_threshold,), ignore=ignore)
    return {cls: by_threshold[float(iou_threshold)] for cls, by_threshold in scores.items()}


def match_scores(
    truth_instances: np.ndarray,
    pred_instances: np.ndarray,
    *,
    truth_classes: np.ndarray | None = None,
    pred_classes: np.ndarray | None = None,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    ignore: np.ndarray | None = None,
) -> dict[int, dict[float, PanopticScore]]:
    """Matching counts per class at several IoU thresholds (default 0.5, 0.55, ... 0.95).

    Arguments as for :func:`panoptic_quality`; overlaps are computed once for
    all thresholds. Returns ``{class: {threshold: score}}``; each score has
    TP, FP, FN, precision, recall and F1, and PQ, SQ, RQ at that threshold.
    """
    thresholds = tuple(_check_threshold(t) for t in thresholds)
    overlaps = _Overlaps.compute(truth_instances, pred_instances, truth_classes, pred_classes,
                                 ignore)
    return {int(cls): {t: overlaps.score(int(cls), t) for t in thresholds}
            for cls in overlaps.classes()}


def _check_threshold(value: float) -> float:
    if not 0.5 <= value < 1.0:  # also refuses NaN
        raise EvaluationError(f"IoU threshold must be in [0.5, 1), got {value!r}; below 0.5 a segment "
                         "could match several others.")
    return float(value)


def _check_labels(name: str, array: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    array = np.asarray(array)
    if shape is not None and array.shape != shape:
        raise EvaluationError(f"{name} has shape {array.shape}, expected {shape} like truth_instances.")
    if array.dtype.kind not in "iub":
        raise EvaluationError(f"{name} must hold integer labels, got dtype {array.dtype}.")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise EvaluationError(f"{name} has negative labels (min {array.min()}); use 0 for no object.")
    return array.reshape(-1)


@dataclass(frozen=True)
class _Side:
    """The objects of one side: sorted ids, areas counted and ignored, classes."""

    ids: NDArray[np.integer]
    area: IntArray
    ignored: IntArray
    cls: IntArray

    @classmethod
    def compute(cls, name: str, labels: np.ndarray, classes: np.ndarray | None,
                valid: NDArray[np.bool_]) -> _Side:
        objects = labels > 0
        ids, index, total = np.unique(labels[objects], return_inverse=True, return_counts=True)
        area = np.bincount(index, weights=valid[objects].astype(np.float64),
                           minlength=ids.size).astype(np.int64)
        # ids keep the labels' dtype: uint64 ids from 2**63 on would wrap as int64, and
        # `lookup` searches the labels' own values among them
        return cls(ids, area, total - area, _object_classes(name, ids, index, classes, objects))

    def lookup(self, ids: np.ndarray) -> IntArray:
        """Positions of `ids` (all present) in `self.ids`."""
        return np.searchsorted(self.ids, ids)


def _object_classes(name: str, ids: np.ndarray, index: np.ndarray, classes: np.ndarray | None,
                    objects: NDArray[np.bool_]) -> IntArray:
    """The class of each object; every pixel of an object must have it."""
    if classes is None:
        return np.full(ids.size, OBJECT, dtype=np.int64)
    values = classes[objects].astype(np.int64)
    span = np.int64(values.max(initial=0) + 1)
    pairs = np.unique(index * span + values)
    obj, cls = pairs // span, pairs % span
    if obj.size != ids.size:
        first = obj[np.flatnonzero(np.diff(obj) == 0)[0]]
        raise EvaluationError(f"{name}: object {ids[first]} has pixels of classes "
                              f"{cls[obj == first].tolist()}; give each object a single class.")
    return cls


@dataclass(frozen=True)
class _Overlaps:
    """Both sides' objects and every overlapping (truth, prediction) pair with its IoU."""

    truth: _Side
    pred: _Side
    pair_truth: IntArray  # positions into truth.ids
    pair_pred: IntArray  # positions into pred.ids
    iou: NDArray[np.float64]

    @classmethod
    def compute(cls, truth: np.ndarray, pred: np.ndarray, truth_classes: np.ndarray | None,
                pred_classes: np.ndarray | None, ignore: np.ndarray | None) -> _Overlaps:
        shape = np.shape(truth)
        t = _check_labels("truth_instances", truth, None)
        p = _check_labels("pred_instances", pred, shape)
        if (truth_classes is None) != (pred_classes is None):
            raise EvaluationError("give both truth_classes and pred_classes, or neither.")
        tc = None if truth_classes is None else _check_labels("truth_classes", truth_classes, shape)
        pc = None if pred_classes is None else _check_labels("pred_classes", pred_classes, shape)
        valid = np.ones(t.size, dtype=bool)
        if ignore is not None:
            valid = ~_check_labels("ignore", ignore, shape).astype(bool)
        tside = _Side.compute("truth_instances", t, tc, valid)
        pside = _Side.compute("pred_instances", p, pc, valid)
        both = valid & (t > 0) & (p > 0)
        ti, pi, inter = _pair_counts(tside.lookup(t[both]), pside.lookup(p[both]), pside.ids.size)
        union = tside.area[ti] + pside.area[pi] - inter
        return cls(tside, pside, ti, pi, inter / union)

    def classes(self) -> IntArray:
        """Classes with an object on either side that is not wholly ignored."""
        return np.union1d(self.truth.cls[self.truth.area > 0], self.pred.cls[self.pred.area > 0])

    def score(self, cls: int, threshold: float) -> PanopticScore:
        same = self.truth.cls[self.pair_truth] == self.pred.cls[self.pair_pred]
        hit = same & (self.iou > threshold) & (self.truth.cls[self.pair_truth] == cls)
        tp = int(hit.sum())
        n_truth = int(((self.truth.cls == cls) & (self.truth.area > 0)).sum())
        matched = np.zeros(self.pred.ids.size, dtype=bool)
        matched[self.pair_pred[hit]] = True
        # a prediction mostly on ignored pixels is no false positive (the paper's void rule)
        counted = (self.pred.cls == cls) & (self.pred.ignored * 2 <= self.pred.area
                                            + self.pred.ignored) & (self.pred.area > 0)
        fp = int((counted & ~matched).sum())
        return PanopticScore(tp, fp, n_truth - tp, float(self.iou[hit].sum()), threshold)


def _pair_counts(t: IntArray, p: IntArray, n_pred: int) -> tuple[IntArray, IntArray, IntArray]:
    """Distinct (t, p) position pairs and how many pixels each has, with one ``np.unique``."""
    keys, counts = np.unique(t * np.int64(n_pred) + p, return_counts=True)
    return keys // n_pred, keys % n_pred, counts.astype(np.int64)
