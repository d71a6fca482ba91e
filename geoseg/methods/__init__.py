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

from geoseg._lazy import lazy_exports

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "METHODS": "geoseg.methods.threshold",
    "Canny": "geoseg.methods.edges",
    "Cleaned": "geoseg.methods.morphology",
    "Cleanup": "geoseg.methods.morphology",
    "EdgeMagnitude": "geoseg.methods.edges",
    "Feature": "geoseg.methods.features",
    "Histogram": "geoseg.methods.stats",
    "HistogramModes": "geoseg.methods.histogram",
    "KMeans": "geoseg.methods.kmeans",
    "LocalThreshold": "geoseg.methods.threshold",
    "Threshold": "geoseg.methods.threshold",
    "as_feature": "geoseg.methods.features",
    "canny_classes": "geoseg.methods.edges",
    "canny_edges": "geoseg.methods.edges",
    "canny_min_halo": "geoseg.methods.edges",
    "clean": "geoseg.methods.morphology",
    "find_modes": "geoseg.methods.histogram",
    "fit_histogram_modes": "geoseg.methods.histogram",
    "fit_kmeans": "geoseg.methods.kmeans",
    "fit_threshold": "geoseg.methods.threshold",
    "global_histogram": "geoseg.methods.stats",
    "hysteresis": "geoseg.methods.edges",
    "kmeans_plusplus": "geoseg.methods.kmeans",
    "raster_data": "geoseg.methods.stats",
    "thresholds_from_histogram": "geoseg.methods.threshold",
    "with_position": "geoseg.methods.kmeans",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
