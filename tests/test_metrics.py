"""Metrics against scikit-learn-free hand counts and between the numpy and dask paths."""

from __future__ import annotations

import dask.array as da
import numpy as np

from geoseg.metrics import confusion_matrix, confusion_matrix_dask, iou_per_class, mean_iou


def test_hand_computed_iou():
    truth = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    np.testing.assert_allclose(iou_per_class(cm), [1 / 2, 2 / 4, 0.0])
    assert mean_iou(cm) == (0.5 + 0.5 + 0.0) / 3


def test_dask_matches_numpy():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (97, 61))
    pred = rng.integers(0, 6, (97, 61))
    expected = confusion_matrix(truth, pred, 5)
    got = confusion_matrix_dask(da.from_array(truth, chunks=20), da.from_array(pred, chunks=33), 5)
    np.testing.assert_array_equal(got, expected)


def test_dice_by_hand():
    from geoseg.metrics import dice_per_class

    cm = confusion_matrix(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), 2)
    np.testing.assert_allclose(dice_per_class(cm), [2 * 1 / (2 + 2), 2 * 2 / (3 + 3)])


def test_dask_confusion_of_a_volume_equals_sklearn_at_uneven_chunks():
    """3D (and 1D) arrays: one matrix per block, whatever the number of dimensions."""
    from sklearn.metrics import confusion_matrix as sklearn_confusion

    rng = np.random.default_rng(4)
    truth = rng.integers(0, 4, (24, 48, 64))
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
    expected = sklearn_confusion(truth.ravel(), pred.ravel(), labels=range(4))
    got = confusion_matrix_dask(da.from_array(truth, chunks=(7, 20, 33)),
                                da.from_array(pred, chunks=(24, 13, 50)), 4)
    np.testing.assert_array_equal(got, expected)
    flat = confusion_matrix_dask(da.from_array(truth.ravel(), chunks=1000),
                                 da.from_array(pred.ravel(), chunks=777), 4)
    np.testing.assert_array_equal(flat, expected)
