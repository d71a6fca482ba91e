"""Classical methods by name, so a job spec can ask for one: ``model: {method: otsu, params: {...}}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geoseg.errors import JobSpecError
from geoseg.methods.edges import Canny, EdgeMagnitude
from geoseg.methods.histogram import fit_histogram_modes
from geoseg.methods.kmeans import fit_kmeans
from geoseg.methods.threshold import METHODS, LocalThreshold, Threshold, fit_threshold
from geoseg.models.base import Segmenter

Builder = Callable[[Any, dict[str, Any]], Segmenter]

FITTED: dict[str, Builder] = {
    **{name: (lambda raster, p, _m=name: fit_threshold(raster, _m, **p)) for name in METHODS},
    "kmeans": lambda raster, p: fit_kmeans(raster, **p),
    "histogram": lambda raster, p: fit_histogram_modes(raster, **p),
}
DIRECT: dict[str, Builder] = {
    "threshold": lambda _, p: Threshold(**{**p, "thresholds": tuple(p.get("thresholds", ()))}),
    "local": lambda _, p: LocalThreshold(**p),
    "canny": lambda _, p: Canny(**p),
    **{op: (lambda _, p, _op=op: EdgeMagnitude(_op, **p)) for op in ("sobel", "scharr", "prewitt")},
}


def method_names() -> list[str]:
    return sorted({*FITTED, *DIRECT})


def needs_fit(name: str) -> bool:
    check_method(name)
    return name in FITTED


def check_method(name: str) -> None:
    if name not in FITTED and name not in DIRECT:
        raise JobSpecError(f"model.method: unknown method {name!r}; known methods: {', '.join(method_names())}.")


def build_method(name: str, params: dict[str, Any], raster: Any = None) -> Segmenter:
    """The segmenter for ``name``; fitted methods compute their statistics on ``raster`` (on the
    active Dask scheduler, chunk by chunk)."""
    check_method(name)
    builder = FITTED.get(name) or DIRECT[name]
    try:
        return builder(raster, dict(params))
    except TypeError as exc:
        raise JobSpecError(f"model.params: {name} does not accept {sorted(params)}: {exc}") from None
