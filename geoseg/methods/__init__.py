"""Classical segmentation at raster scale: global statistics, per-chunk work.

Fitting computes global statistics (value ranges, histograms, k-means
centroids) as dask tree reductions over the raster's chunks, never holding more
than one chunk per task; the result is a small frozen segmenter that
:func:`geoseg.segment` applies chunk by chunk with the halo the method needs::

    import geoseg
    from geoseg.methods import fit_threshold

    raster = geoseg.open_raster("scene.zarr")
    otsu = fit_threshold(raster, "otsu", feature=(4, 3))     # NDVI-like (b4 - b3) / (b4 + b3)
    mask = geoseg.segment(raster, otsu)                       # lazy class ids

Methods: :class:`Threshold` (manual) and :func:`fit_threshold` (Otsu, multi-Otsu,
Li, Yen, triangle, isodata, minimum, mean), :class:`LocalThreshold`,
:func:`fit_histogram_modes`, :func:`fit_kmeans` (+ :func:`with_position`),
:class:`EdgeMagnitude` (Sobel, Scharr, Prewitt), :class:`Canny` (exact at any chunking
with :func:`canny_edges`, or :func:`hysteresis` after ``hysteresis="deferred"``), and the
morphological clean-up :class:`Cleaned` / :func:`clean` (and :func:`geoseg.parallel.cleanup.clean_mask` for lazy maps).
"""

from geoseg.methods.edges import (
    Canny,
    EdgeMagnitude,
    canny_classes,
    canny_edges,
    canny_min_halo,
    hysteresis,
)
from geoseg.methods.features import Feature, as_feature
from geoseg.methods.histogram import HistogramModes, find_modes, fit_histogram_modes
from geoseg.methods.kmeans import KMeans, fit_kmeans, kmeans_plusplus, with_position
from geoseg.methods.morphology import Cleaned, Cleanup, clean
from geoseg.methods.stats import Histogram, global_histogram, raster_data
from geoseg.methods.threshold import (
    METHODS,
    LocalThreshold,
    Threshold,
    fit_threshold,
    thresholds_from_histogram,
)

__all__ = [
    "METHODS",
    "Canny",
    "Cleaned",
    "Cleanup",
    "EdgeMagnitude",
    "Feature",
    "Histogram",
    "HistogramModes",
    "KMeans",
    "LocalThreshold",
    "Threshold",
    "as_feature",
    "canny_classes",
    "canny_edges",
    "canny_min_halo",
    "clean",
    "find_modes",
    "fit_histogram_modes",
    "fit_kmeans",
    "fit_threshold",
    "global_histogram",
    "hysteresis",
    "kmeans_plusplus",
    "raster_data",
    "thresholds_from_histogram",
    "with_position",
]
