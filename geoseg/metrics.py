"""Segmentation metrics: confusion matrix, per-class IoU, mean IoU; in memory or chunk by chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import EvaluationError

if TYPE_CHECKING:  # the geometry layer loads no dask: chunked arrays bring their own methods
    import dask.array as da


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``C[i, j]`` = pixels of true class ``i`` predicted as ``j``; ids >= ``n_classes`` are ignored."""
    keep = (truth < n_classes) & (pred < n_classes)
    index = truth[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix_dask(truth: da.Array, pred: da.Array, n_classes: int) -> np.ndarray:
    """:func:`confusion_matrix` over two chunked arrays of any number of dimensions (2D images,
    3D volumes), one small matrix per chunk pair, summed."""
    if truth.shape != pred.shape:
        raise EvaluationError(f"confusion_matrix_dask: truth has shape {truth.shape} but pred has "
                         f"{pred.shape}; expected one shape.")
    pred = pred.rechunk(truth.chunks)
    lead = truth.ndim  # one matrix per block: a block of ones on these axes, then (K, K)
    blocks = truth.map_blocks(_block_confusion, pred, n_classes=n_classes,
                              new_axis=[lead, lead + 1],
                              chunks=(1,) * lead + (n_classes, n_classes), dtype=np.int64)
    return blocks.sum(axis=tuple(range(lead))).compute()


def _block_confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """The confusion matrix of one chunk pair, with a length-1 axis per array dimension first."""
    matrix = confusion_matrix(np.asarray(truth).ravel(), np.asarray(pred).ravel(), n_classes)
    return matrix.reshape((1,) * np.ndim(truth) + matrix.shape)


def iou_per_class(confusion: np.ndarray, exclude: Sequence[int] = ()) -> np.ndarray:
    """IoU per class; NaN for a class absent from both truth and prediction, and for the classes
    ``exclude`` names (ignored labels: no class to score; their predictions still count as
    wrong on the other classes' pixels)."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    gone = [int(c) for c in exclude if 0 <= int(c) < len(iou)]
    iou[gone] = np.nan
    return iou


def mean_iou(confusion: np.ndarray, exclude: Sequence[int] = ()) -> float:
    """Mean IoU over the classes present in truth or prediction, less ``exclude``."""
    return float(np.nanmean(iou_per_class(confusion, exclude)))


def dice_per_class(confusion: np.ndarray) -> np.ndarray:
    """Dice ``2 |A and B| / (|A| + |B|)`` per class; NaN for a class absent from both."""
    tp = np.diag(confusion).astype(np.float64)
    sizes = confusion.sum(0) + confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2 * tp / sizes, np.nan)
