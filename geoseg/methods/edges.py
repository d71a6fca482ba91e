"""Edges: Sobel, Scharr and Prewitt gradient magnitudes, and Canny, with the halos they need.

Magnitudes are in the raster's own units (scikit-image rescales integer images
to [0, 1] first; here ``sobel(x.astype(float))`` is the reference). Without a
threshold the segmenter has one "class", ``edge``, whose score is the magnitude:
ask :func:`geoseg.segment` for ``output="probabilities"``. With a threshold it
is a two-class mask, ``edge`` where the magnitude is above it.

Canny is exact at any chunking in two steps: the local steps (smoothing,
gradient, non-maximum suppression, the two thresholds) give each pixel a class,
none, weak or strong, from a window grown by :func:`canny_min_halo`
(:func:`canny_classes`, or ``Canny(..., hysteresis="deferred")`` in
:func:`geoseg.segment` and jobs); :func:`hysteresis` then keeps the weak edges
connected to a strong one over the whole raster, with global connected
components. :func:`canny_edges` does both and equals ``skimage.feature.canny``
on the whole image, pixel for pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import filters
from skimage.util import dtype_limits

from geoseg import budgets
from geoseg.core.classes import ClassInfo
from geoseg.errors import MethodParameterError
from geoseg.instances.components import label
from geoseg.methods.features import FeatureLike, PixelMethod, as_feature, class_infos, one_hot
from geoseg.methods.params import check_value

OPERATORS = {"sobel": filters.sobel, "scharr": filters.scharr, "prewitt": filters.prewitt}
GAUSSIAN_TRUNCATE = 4.0
HYSTERESIS = ("window", "deferred")
STRONG = 2  # Canny classes: 0 none, 1 weak edge, 2 strong edge

DEFERRED_CLASSES = ["background", "weak edge", "strong edge"]  # what hysteresis() takes


@dataclass(frozen=True)
class EdgeMagnitude(PixelMethod):
    """Gradient magnitude of one feature (``"sobel"``, ``"scharr"`` or ``"prewitt"``).

    Equal to ``skimage.filters.<operator>(feature.astype(np.float64))`` on the whole image or
    volume (``mode="reflect"``), with a halo of 1 pixel: magnitudes in the raster's own units.
    scikit-image rescales an integer image to 0..1 first, so on uint8
    ``skimage.filters.<operator>(feature)`` is these magnitudes divided by 255.

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
            raise MethodParameterError(f"operator={self.operator!r}; expected one of {sorted(OPERATORS)}.")
        object.__setattr__(self, "feature", as_feature(self.feature))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))
            if not self.threshold >= 0:  # a magnitude is >= 0: every pixel would be an edge
                raise MethodParameterError(
                    f"threshold: received {self.threshold}; expected a number >= 0 (edges are "
                    f"where the gradient magnitude, never negative, is above it), or none.")

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

    @property
    def spatial_axes(self) -> None:
        """Any: scikit-image's operators take the magnitude over every axis of an image or a
        volume."""
        return None

    def magnitude(self, batch: np.ndarray) -> np.ndarray:
        """Magnitudes ``(N, *spatial)`` (float64) of the feature of each window."""
        values = self.feature.compute(batch, band_axis=1, undefined=0.0)
        return np.stack([OPERATORS[self.operator](image, mode="reflect") for image in values])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        magnitude = self.magnitude(batch)
        if self.threshold is None:
            return magnitude[:, None].astype(np.float32)
        return one_hot((magnitude > self.threshold).astype(np.int64), 2)


def check_sigma(sigma: float) -> None:
    """Canny's gaussian ``sigma``: a finite number >= 0 (its radius sets the halo), whose kernel
    :func:`canny_min_halo` pixels in radius is within ``GEOSEG_MAX_KERNEL``."""
    if isinstance(sigma, bool) or not isinstance(sigma, Real):
        check_value("sigma", sigma)  # text or None, named as such
    if not 0 <= float(sigma) < math.inf:
        raise MethodParameterError(f"sigma must be >= 0 and finite, got {sigma}.")
    budgets.check_kernel(canny_min_halo(sigma), f"sigma={sigma:g}", "canny")


def canny_min_halo(sigma: float) -> int:
    """The least halo for which Canny's local steps are exact: gaussian radius + 2.

    ``int(4 * sigma + 0.5)`` for the smoothing, 1 for the Sobel gradient, 1 for
    non-maximum suppression. At this halo the per-pixel classes of
    :func:`canny_classes` (none, weak, strong) equal the whole image's; hysteresis
    is not local (a weak edge can be followed arbitrarily far), which is why
    :func:`hysteresis` finishes it with global connected components.
    """
    return int(GAUSSIAN_TRUNCATE * float(sigma) + 0.5) + 2


# -- Canny's local steps: one window in, classes none / weak / strong out -------------------


def canny_thresholds(dtype: np.dtype, low: float | None, high: float | None) -> tuple[float, float]:
    """Hysteresis thresholds in the raster's units, ``None`` meaning skimage's default.

    ``skimage.feature.canny`` defaults to 10% and 20% of the dtype's maximum
    (1 for floats, 255 for ``uint8``); here the same fractions are turned into
    raster units, so ``None`` on a ``uint8`` raster means 25.5 and 51.
    """
    top = float(dtype_limits(np.zeros((), dtype), clip_negative=False)[1])
    default = "" if low is not None and high is not None else (
        f" (a threshold left out is skimage's default for {np.dtype(dtype)}: 10% (low) or 20% "
        f"(high) of {top:g})")
    low = 0.1 * top if low is None else float(low)
    high = 0.2 * top if high is None else float(high)
    if not 0 <= low <= high:
        raise MethodParameterError(
            f"Canny needs 0 <= low_threshold <= high_threshold, got {low:g} and {high:g}{default}; "
            "give both thresholds, low below high.")
    return low, high


def check_given_thresholds(low: Any, high: Any) -> None:
    """Canny's thresholds as a built segmenter holds them: numbers >= 0 in the raster's units
    (skimage's defaults depend on the raster's dtype, unknown here)."""
    for name, value in (("low_threshold", low), ("high_threshold", high)):
        check_value(name, value)
        if value is None:
            raise MethodParameterError(
                f"Canny: received {name}=None; expected a number >= 0 in the raster's units "
                "(skimage's default depends on the raster's dtype). Give both thresholds, or "
                "fill skimage's defaults with geoseg.methods.edges.canny_params(params, dtype) "
                "(what a job spec does when they are left out).")


def threshold_dtype(feature: FeatureLike, dtype: Any) -> np.dtype:
    """The dtype whose maximum scales Canny's default thresholds: the raster's, a float for a
    normalized difference (values in -1..1)."""
    return np.dtype(np.float64) if as_feature(feature).kind == "ndiff" else np.dtype(dtype)


def canny_params(params: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """A job's :class:`Canny` parameters for an input of ``dtype``: thresholds left out or null
    become skimage's defaults in the raster's units (:func:`canny_thresholds`), as
    :func:`canny_edges` takes them."""
    scale = threshold_dtype(params.get("feature"), dtype)
    low, high = canny_thresholds(scale, params.get("low_threshold"), params.get("high_threshold"))
    return {**params, "low_threshold": low, "high_threshold": high}


def canny_smoothed(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing as ``skimage.feature.canny`` does it (float64, ``mode="constant"``).

    Zeros beyond the edge would darken the border, so the result is divided by
    the smoothing of an all-ones image (plus ``eps``): the border is an average
    of the pixels inside only.
    """
    image = np.asarray(image, dtype=np.float64)
    kwargs: dict[str, Any] = {"sigma": sigma, "mode": "constant", "cval": 0.0}
    bleed_over = filters.gaussian(np.ones_like(image), **kwargs) + np.finfo(np.float64).eps
    smoothed = filters.gaussian(image, **kwargs)
    smoothed /= bleed_over
    return smoothed


def canny_gradients(smoothed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sobel gradients along rows and columns and their magnitude, as skimage computes them."""
    jsobel = ndi.sobel(smoothed, axis=1)
    isobel = ndi.sobel(smoothed, axis=0)
    magnitude = isobel * isobel
    magnitude += jsobel * jsobel
    np.sqrt(magnitude, out=magnitude)
    return isobel, jsobel, magnitude


def nms_threshold(low: float) -> float:
    """skimage's non-maximum suppression compares to the low threshold as a C ``float``.

    So ``low`` is rounded to float32, and 0 becomes ``1e-14`` (in float32) so
    that flat pixels (magnitude 0) never survive.
    """
    threshold = np.float32(low)
    if threshold == 0:
        threshold = np.float32(1e-14)
    return float(threshold)


# Interpolation neighbours (row, column offsets) of non-maximum suppression, per case of the
# gradient direction: (first, second) on the "plus" side, then (first, second) on the "minus" side.
NMS_NEIGHBOURS = (
    ((1, 0), (1, 1), (-1, 0), (-1, -1)),  # gradient signs agree, |di| > |dj|
    ((0, 1), (1, 1), (0, -1), (-1, -1)),  # gradient signs agree, |di| <= |dj|
    ((0, 1), (-1, 1), (0, -1), (1, -1)),  # signs differ, |di| < |dj|
    ((-1, 0), (-1, 1), (1, 0), (1, -1)),  # signs differ, |di| >= |dj|
)


def nms_survivors(
    isobel: np.ndarray, jsobel: np.ndarray, magnitude: np.ndarray, low: float
) -> np.ndarray:
    """Pixels that are local maxima across the edge and at least ``low``: the weak edges.

    A vectorized copy of skimage's bilinear non-maximum suppression
    (``_nonmaximum_suppression_bilinear``), same arithmetic in the same order,
    so the result is bit-identical. The outer ring of pixels is never an edge
    (skimage's eroded border mask). Only pixels at least ``low`` are examined.
    """
    rows, cols = magnitude.shape
    out = np.zeros(rows * cols, dtype=bool)
    if min(rows, cols) < 3:
        return out.reshape(rows, cols)
    inner = np.zeros((rows, cols), dtype=bool)
    inner[1:-1, 1:-1] = True
    at = np.flatnonzero(inner & (magnitude >= nms_threshold(low)))
    di, dj, m = isobel.ravel()[at], jsobel.ravel()[at], magnitude.ravel()[at]
    ai, aj = np.abs(di), np.abs(dj)
    agree = (di > 0) == (dj > 0)
    cases = np.select([agree & (ai > aj), agree, ai < aj], [0, 1, 2], 3)
    swap = (cases == 0) | (cases == 3)  # these divide |dj| by |di|, the others |di| by |dj|
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(swap, aj / ai, ai / aj)
    offsets = np.array([[r * cols + c for r, c in case] for case in NMS_NEIGHBOURS])[cases]
    flat = magnitude.ravel()
    keep = np.ones(at.shape, dtype=bool)
    for side in (0, 2):
        first, second = flat[at + offsets[:, side]], flat[at + offsets[:, side + 1]]
        keep &= (second * w + first * (1.0 - w)) <= m
    out[at[keep]] = True
    return out.reshape(rows, cols)


def canny_local(image: np.ndarray, sigma: float, low: float, high: float) -> np.ndarray:
    """Canny's local steps on one 2D window: ``uint8`` classes 0 none, 1 weak, 2 strong.

    Weak pixels survive non-maximum suppression with a magnitude at least
    ``low`` (as float32); strong ones are weak pixels with a magnitude at least
    ``high``. On the whole image, the edges of ``skimage.feature.canny(image,
    sigma, low, high)`` are the 8-connected components of ``classes > 0`` that
    hold a strong pixel. On a window, pixels at least :func:`canny_min_halo`
    from every window edge that is not an image edge get the whole image's class.
    """
    isobel, jsobel, magnitude = canny_gradients(canny_smoothed(image, sigma))
    weak = nms_survivors(isobel, jsobel, magnitude, low)
    return (weak.astype(np.uint8) + (weak & (magnitude >= high))).astype(np.uint8)


@dataclass(frozen=True)
class Canny(PixelMethod):
    """Canny edges (gaussian smoothing, non-maximum suppression, hysteresis) per window.

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
        Halo in pixels; must be at least :func:`canny_min_halo`, the default
        with ``hysteresis="deferred"`` and twice it with ``"window"``.
    hysteresis
        ``"window"``: two classes, ``background`` and ``edge``, with hysteresis
        inside each window, so an edge whose strong seed lies outside the window
        can be missed: close to the whole-image result, and never more. Within
        :func:`canny_min_halo` of a window side that is not the image's, the
        smoothing sees a border the image does not have, so those pixels take no
        part in the window's hysteresis (:func:`window_edges`); otherwise one could
        seed an edge the whole image lacks. :func:`geoseg.segment` tells Canny where
        its windows lie; called without positions (:meth:`predict`, inside an
        ensemble or test-time augmentation), each window is taken as a whole image.
        ``"deferred"``: three classes,
        ``background``, ``weak edge`` and ``strong edge`` (ids 0, 1, 2), exact
        for every pixel; :func:`hysteresis` on the class raster then gives
        exactly ``skimage.feature.canny`` of the whole image.
    """

    low_threshold: float
    high_threshold: float
    sigma: float = 1.0
    feature: Any = None
    context: int | None = None
    hysteresis: str = "window"

    def __post_init__(self) -> None:
        check_given_thresholds(self.low_threshold, self.high_threshold)
        canny_thresholds(np.dtype(np.float64), self.low_threshold, self.high_threshold)
        check_sigma(self.sigma)
        if self.hysteresis not in HYSTERESIS:
            raise MethodParameterError(
                f"hysteresis={self.hysteresis!r}; expected one of {HYSTERESIS} ('deferred' "
                "emits weak and strong edges for geoseg.methods.hysteresis to finish exactly)."
            )
        minimum = canny_min_halo(self.sigma)
        check_value("context", self.context)
        if self.context is not None:
            budgets.check_kernel(self.context, f"context={self.context}", "canny")
        if self.context is not None and self.context < minimum:
            raise MethodParameterError(
                f"context={self.context} is below the minimum halo {minimum} for sigma="
                f"{self.sigma} (gaussian radius + 2); use at least {minimum}."
            )
        object.__setattr__(self, "feature", as_feature(self.feature))

    @property
    def name(self) -> str:
        return f"canny edges (sigma={self.sigma:g})"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        if self.hysteresis == "deferred":
            return class_infos(DEFERRED_CLASSES)
        return class_infos(("background", "edge"))

    @property
    def spatial_axes(self) -> int:
        """2: Canny segments images (y, x); wrap it in :class:`geoseg.models.SliceWise` for a
        volume."""
        return 2

    @property
    def halo(self) -> tuple[int, int]:
        minimum = canny_min_halo(self.sigma)
        default = minimum if self.hysteresis == "deferred" else 2 * minimum
        h = default if self.context is None else int(self.context)
        return (h, h)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Scores of windows taken each as a whole image (see :meth:`predict_at`)."""
        return self.predict_at(batch, None, None)

    def predict_at(
        self,
        batch: np.ndarray,
        windows: Sequence[tuple[slice, ...]] | None,
        shape: Sequence[int] | None,
    ) -> np.ndarray:
        """Scores of windows ``windows`` (image coordinates) of an image of ``shape``; with
        ``"window"`` hysteresis, the pixels near a window side inside the image are distrusted."""
        values = self.feature.compute(batch, band_axis=1, undefined=0.0)
        low, high = float(self.low_threshold), float(self.high_threshold)
        found = [canny_local(image, self.sigma, low, high) for image in values]
        if self.hysteresis == "deferred":
            return one_hot(np.stack(found).astype(np.int64), 3)
        margin = canny_min_halo(self.sigma)
        edges = [
            window_edges(classes, inner_sides(None if windows is None else windows[i], shape),
                         margin)
            for i, classes in enumerate(found)
        ]
        return one_hot(np.stack(edges).astype(np.int64), 2)

    def predict_tensor_at(
        self, batch: torch.Tensor, windows: Sequence[tuple[slice, ...]], shape: Sequence[int]
    ) -> torch.Tensor:
        """:meth:`predict_at` for the tiled runner, which says where each window lies."""
        scores = self.predict_at(batch.numpy(force=True), windows, shape)
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).to(batch.device)


def inner_sides(
    window: tuple[slice, ...] | None, shape: Sequence[int] | None
) -> tuple[tuple[bool, bool], ...]:
    """Per axis, whether the window's start and stop sides lie inside the image (not on its
    border). No window: a whole image, no inner side."""
    if window is None or shape is None:
        return ((False, False), (False, False))
    return tuple((w.start > 0, w.stop < n) for w, n in zip(window, shape))


def window_edges(
    classes: np.ndarray, inner: Sequence[tuple[bool, bool]], margin: int
) -> np.ndarray:
    """Canny's edges from one window's classes, with hysteresis inside the window.

    Pixels closer than ``margin`` (:func:`canny_min_halo`) to an ``inner`` side are
    set to "none" first: their classes may differ from the whole image's (a spurious
    strong pixel there could seed an edge the whole image lacks). The rest hold the
    whole image's classes, so every edge found here is an edge of the whole image.
    """
    trusted = classes.copy()
    for axis, (start, stop) in enumerate(inner):
        index = [slice(None)] * trusted.ndim
        if start:
            index[axis] = slice(0, margin)
            trusted[tuple(index)] = 0
        if stop:
            index[axis] = slice(max(trusted.shape[axis] - margin, 0), None)
            trusted[tuple(index)] = 0
    labels, count = ndi.label(trusted > 0, np.ones((3,) * trusted.ndim, bool))
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.unique(labels[trusted == STRONG])] = True
    keep[0] = False
    return keep[labels]


# -- chunked: the local steps with a halo, then hysteresis as global connected components ---


def canny_classes(
    image: da.Array,
    sigma: float = 1.0,
    low_threshold: float | None = None,
    high_threshold: float | None = None,
    *,
    feature: FeatureLike = None,
) -> da.Array:
    """Lazy Canny classes of a chunked raster: ``uint8`` 0 none, 1 weak edge, 2 strong edge.

    Each chunk is computed from a window grown by :func:`canny_min_halo` and
    cropped at the image's edges, which reproduces the whole-image border
    treatment, so every pixel equals :func:`canny_local` on the whole image.
    Parameters as in :func:`canny_edges`; chunked like the image's spatial axes.
    """
    values, dtype = _feature_of(image, feature)
    low, high = canny_thresholds(dtype, low_threshold, high_threshold)
    check_sigma(sigma)
    depth = {axis: canny_min_halo(sigma) for axis in range(2)}
    short = {axis: -1 for axis, n in enumerate(values.shape) if n <= depth[axis]}
    depth.update({axis: 0 for axis in short})  # an axis within the halo is one whole window
    classes = values.rechunk(short).map_overlap(
        canny_local,
        depth=depth,
        boundary="none",
        dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
        sigma=float(sigma),
        low=low,
        high=high,
    )
    return classes.rechunk(values.chunks)


def _feature_of(image: da.Array, feature: FeatureLike) -> tuple[da.Array, np.dtype]:
    """The 2D float64 feature of a ``(y, x)`` or ``(band, y, x)`` raster, and the dtype whose
    maximum scales the default thresholds (the raster's, a float for a normalized difference)."""
    if not isinstance(image, da.Array):
        image = da.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise MethodParameterError(
            f"Canny needs a 2D image (y, x) or a raster (band, y, x); got shape {image.shape}."
        )
    chosen = as_feature(feature)
    chosen.check(image.shape[0])
    image = image.rechunk({0: -1})
    values = image.map_blocks(
        chosen.compute, band_axis=0, undefined=0.0, drop_axis=0, dtype=np.float64,
        meta=np.empty((0, 0)),
    )
    return values, threshold_dtype(chosen, image.dtype)


def hysteresis(classes: da.Array) -> da.Array:
    """Canny's edges from its classes (0 none, 1 weak, 2 strong): the exact hysteresis.

    Edges are the 8-connected components of ``classes > 0`` that hold a strong
    pixel, found over the whole raster with
    :func:`geoseg.instances.components.label`, so the result does not depend on
    the chunking, however far an edge runs.

    Parameters
    ----------
    classes
        Integer raster ``(y, x)`` (or ``(1, y, x)``) of Canny classes, lazy or
        stored, e.g. from :func:`canny_classes` or a ``Canny(...,
        hysteresis="deferred")`` segmentation.

    Returns
    -------
    edges
        Lazy boolean edges, shaped and chunked like ``classes``.

    Notes
    -----
    The connected components' border pass and the collection of the ids that
    touch a strong pixel run now; each chunk's edges are computed when the
    result is (reading ``classes`` a third time).
    """
    classes = _checked_classes(classes)
    labels, count = label(classes > 0, connectivity=classes.ndim)
    if count == 0:
        return da.zeros_like(classes, dtype=bool)
    keep = np.zeros(count + 1, dtype=bool)
    keep[strong_ids(labels, classes)] = True
    lookup = dask.delayed(keep, pure=True)  # one graph node, not a copy per task
    return labels.map_blocks(_lookup, lookup, dtype=bool, meta=np.empty((0,) * labels.ndim, bool))


def strong_ids(labels: da.Array, classes: da.Array) -> np.ndarray:
    """The component ids (sorted, unique) that hold at least one strong pixel (class 2)."""
    per_block = da.map_blocks(
        _strong_in_block,
        labels,
        classes,
        dtype=object,
        chunks=tuple((1,) * len(c) for c in labels.chunks),
        meta=np.empty((0,) * labels.ndim, object),
    ).compute()
    return np.unique(np.concatenate([np.zeros(0, labels.dtype), *per_block.ravel()]))


def _strong_in_block(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """A block's strong ids, as a one-element object array (so blocks of any count concatenate)."""
    found = np.empty((1,) * labels.ndim, dtype=object)
    found.flat[0] = np.unique(labels[classes == STRONG])
    return found


def _lookup(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return keep[labels]


def _checked_classes(classes: Any) -> da.Array:
    names = getattr(classes, "attrs", {}).get("class_names")  # a segment() result says its classes
    if names is not None and list(names) != DEFERRED_CLASSES:
        raise MethodParameterError(
            f"hysteresis needs a deferred Canny's classes {DEFERRED_CLASSES}; received a raster "
            f"whose classes are {list(names)}. A Canny with hysteresis='window' has made its edges "
            "already: use them as they are, or segment with Canny(..., hysteresis='deferred') and "
            "pass that result here.")
    if not isinstance(classes, da.Array):
        classes = da.asarray(classes)
    if classes.ndim not in (2, 3) or (classes.ndim == 3 and classes.shape[0] != 1):
        raise MethodParameterError(
            f"hysteresis needs Canny classes of shape (y, x) or (1, y, x); got {classes.shape}."
        )
    if not np.issubdtype(classes.dtype, np.integer):
        raise MethodParameterError(
            f"hysteresis needs integer Canny classes (0 none, 1 weak, 2 strong); got dtype "
            f"{classes.dtype}. Pass the class ids of a Canny(hysteresis='deferred') output."
        )
    return classes


def canny_edges(
    image: da.Array,
    sigma: float = 1.0,
    low_threshold: float | None = None,
    high_threshold: float | None = None,
    *,
    feature: FeatureLike = None,
) -> da.Array:
    """Canny edges of a chunked raster, equal to scikit-image's on the whole image.

    Exactly ``skimage.feature.canny(x, sigma, low, high)`` with ``x`` the feature
    as float64 (``image.astype(np.float64)`` for one band) and ``low``, ``high``
    the thresholds in raster units (a threshold left ``None`` is resolved from the
    raster's dtype first, see below), at any chunking: the local steps run per
    chunk with a halo (:func:`canny_classes`), hysteresis over the whole raster
    (:func:`hysteresis`). With both ``None`` on one band of an integer raster this
    is ``skimage.feature.canny(image, sigma)`` on the integer image itself, not
    ``skimage.feature.canny(x, sigma)`` on the float64 one (whose defaults are 0.1
    and 0.2).

    Parameters
    ----------
    image
        ``(y, x)`` or ``(band, y, x)`` Dask array.
    sigma
        Gaussian smoothing (``>= 0``).
    low_threshold, high_threshold
        Hysteresis thresholds on the gradient magnitude of the smoothed
        feature, in the raster's units. ``None``: 10% (low) and 20% (high) of
        the raster dtype's maximum (1 for floats and for a normalized difference,
        255 for ``uint8``: 25.5 and 51), as skimage's defaults for that dtype.
    feature
        See :func:`geoseg.methods.as_feature` (default: the only band).

    Returns
    -------
    edges
        Lazy boolean edges ``(y, x)``, chunked like the image's spatial axes.
        The hysteresis passes (see :func:`hysteresis`) run now.
    """
    return hysteresis(canny_classes(image, sigma, low_threshold, high_threshold, feature=feature))
