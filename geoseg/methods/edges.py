"""Edges: Sobel, Scharr and Prewitt gradient magnitudes, and Canny, with the halos they need.

Magnitudes are in the raster's own units (scikit-image rescales integer images
to [0, 1] first; here ``sobel(x.astype(float))`` is the reference). Without a
threshold the segmenter has one "class", ``edge``, whose score is the magnitude:
ask :func:`geoseg.segment` for ``output="probabilities"``. With a threshold it
is a two-class mask, ``edge`` where the magnitude is above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage import feature as skfeature
from skimage import filters

from geoseg.methods.features import PixelMethod, as_feature, class_infos, one_hot
from geoseg.models.base import ClassInfo

OPERATORS = {"sobel": filters.sobel, "scharr": filters.scharr, "prewitt": filters.prewitt}
GAUSSIAN_TRUNCATE = 4.0


@dataclass(frozen=True)
class EdgeMagnitude(PixelMethod):
    """Gradient magnitude of one feature (``"sobel"``, ``"scharr"`` or ``"prewitt"``).

    Identical to ``skimage.filters.<operator>(feature)`` on the whole image
    (``mode="reflect"``), with a halo of 1 pixel.

    Parameters
    ----------
    operator
        ``"sobel"``, ``"scharr"`` or ``"prewitt"``.
    feature
        See :func:`geoseg.methods.as_feature` (default: the raster's only band).
    threshold
        ``None``: one class scored by the magnitude. A number: two classes,
        ``background`` and ``edge`` (magnitude ``> threshold``).
    """

    operator: str = "sobel"
    feature: Any = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ValueError(f"operator={self.operator!r}; expected one of {sorted(OPERATORS)}.")
        object.__setattr__(self, "feature", as_feature(self.feature))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def name(self) -> str:
        return f"{self.operator} edges"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        if self.threshold is None:
            return (ClassInfo("edge", (255, 255, 255)),)
        return class_infos(("background", "edge"))

    @property
    def halo(self) -> tuple[int, int]:
        return (1, 1)

    def magnitude(self, batch: np.ndarray) -> np.ndarray:
        """Magnitudes ``(N, y, x)`` (float64) of the feature of each window."""
        values = self.feature.compute(batch, band_axis=1)
        return np.stack([OPERATORS[self.operator](image, mode="reflect") for image in values])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        magnitude = self.magnitude(batch)
        if self.threshold is None:
            return magnitude[:, None].astype(np.float32)
        return one_hot((magnitude > self.threshold).astype(np.int64), 2)


def canny_min_halo(sigma: float) -> int:
    """The least halo for which Canny's local steps are exact: gaussian radius + 2.

    ``int(4 * sigma + 0.5)`` for the smoothing, 1 for the Sobel gradient, 1 for
    non-maximum suppression. Hysteresis follows weak edges arbitrarily far, so
    even at this halo a few pixels (weak edges whose strong seed is outside the
    window) can differ from the whole-image result; a larger halo makes that rarer.
    """
    return int(GAUSSIAN_TRUNCATE * float(sigma) + 0.5) + 2


@dataclass(frozen=True)
class Canny(PixelMethod):
    """Canny edges (gaussian smoothing, non-maximum suppression, hysteresis) as a two-class mask.

    Same parameters as ``skimage.feature.canny`` with thresholds in the
    raster's units (the gradient magnitude of the smoothed feature).

    Parameters
    ----------
    low_threshold, high_threshold
        Hysteresis thresholds on the gradient magnitude (raster units).
    sigma
        Gaussian smoothing.
    feature
        See :func:`geoseg.methods.as_feature`.
    context
        Halo in pixels (default ``2 * canny_min_halo(sigma)``); must be at least
        :func:`canny_min_halo`.
    """

    low_threshold: float
    high_threshold: float
    sigma: float = 1.0
    feature: Any = None
    context: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.low_threshold <= self.high_threshold:
            raise ValueError(
                f"Canny needs 0 <= low_threshold <= high_threshold, got "
                f"{self.low_threshold} and {self.high_threshold}."
            )
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}.")
        minimum = canny_min_halo(self.sigma)
        if self.context is not None and self.context < minimum:
            raise ValueError(
                f"context={self.context} is below the minimum halo {minimum} for sigma="
                f"{self.sigma} (gaussian radius + 2); use at least {minimum}."
            )
        object.__setattr__(self, "feature", as_feature(self.feature))

    @property
    def name(self) -> str:
        return f"canny edges (sigma={self.sigma:g})"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        return class_infos(("background", "edge"))

    @property
    def halo(self) -> tuple[int, int]:
        h = 2 * canny_min_halo(self.sigma) if self.context is None else int(self.context)
        return (h, h)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        values = self.feature.compute(batch, band_axis=1)
        edges = np.stack(
            [
                skfeature.canny(image, self.sigma, self.low_threshold, self.high_threshold)
                for image in values
            ]
        )
        return one_hot(edges.astype(np.int64), 2)
