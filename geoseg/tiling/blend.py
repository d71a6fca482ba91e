"""Weights for blending overlapping tiles: pure numpy, one map per window shape.

Used when a model's receptive field exceeds any practical halo (image-level
pooling, very large dilations): tiles then overlap and each output pixel is the
weighted mean of every window covering it. The Gaussian map is the usual one
(centre at ``(L - 1) / 2``, sigma ``0.125 * L`` per axis, as MONAI's sliding-window
inference uses); every map (its maximum near 1) is floored at 1e-3 so that pixels seen
by a single window at the image edge keep that window's value exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geoseg.errors import PlanError
from geoseg.tiling.plan import BLEND_MODES

FLOOR = 1e-3


def blend_weights(mode: str, shape: Sequence[int], ramp: Sequence[int] | None = None) -> np.ndarray:
    """A separable weight map of ``shape`` for ``mode`` (not ``"crop"``).

    ``ramp`` is the ramp width per axis for ``"linear"`` and ``"cosine"``
    (typically the overlap between neighbouring windows).
    """
    ramps = ramp if ramp is not None else [max(1, n // 4) for n in shape]
    axes = [_axis_weights(mode, n, r) for n, r in zip(shape, ramps)]
    weights = axes[0]
    for axis in axes[1:]:
        weights = np.multiply.outer(weights, axis)
    weights = weights.astype(np.float32)
    return np.maximum(weights, max(float(weights.min()), FLOOR))


def _axis_weights(mode: str, n: int, ramp: int) -> np.ndarray:
    if mode == "constant":
        return np.ones(n, dtype=np.float64)
    if mode == "gaussian":
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        return np.exp(-(x**2) / (2.0 * (0.125 * n) ** 2))
    if mode in ("linear", "cosine"):
        i = np.arange(n, dtype=np.float64)
        t = np.clip(np.minimum(i + 0.5, n - i - 0.5) / max(1, ramp), 0.0, 1.0)
        return t if mode == "linear" else 0.5 - 0.5 * np.cos(np.pi * t)
    raise PlanError(f"blend mode {mode!r} has no weight map; expected one of {BLEND_MODES[1:]}.")
