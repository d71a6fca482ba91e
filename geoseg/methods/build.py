"""Classical methods by name, so a job spec can ask for one: ``model: {method: otsu, params: {...}}``.

Other packages add methods through the ``geoseg.methods`` entry-point group. An entry point
names a :class:`~geoseg.core.segmenter.Segmenter` class, built as ``cls(**params)``; a class
that learns from the raster (as Otsu or k-means do) has a classmethod
``fit(raster, **params)`` that returns the fitted segmenter. docs/examples/method_ndvi.py is
one, in one file::

    [project.entry-points."geoseg.methods"]
    ndvi = "method_ndvi:NdviThreshold"
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import metadata
from typing import Any

from geoseg.core.segmenter import Segmenter
from geoseg.errors import JobSpecError, MethodParameterError
from geoseg.methods.edges import Canny, EdgeMagnitude, canny_params
from geoseg.methods.histogram import fit_histogram_modes, unfitted_modes
from geoseg.methods.kmeans import fit_kmeans, unfitted_kmeans
from geoseg.methods.params import check_params
from geoseg.methods.threshold import (
    METHODS,
    LocalThreshold,
    Threshold,
    fit_threshold,
    unfitted_threshold,
)

ENTRY_POINT_GROUP = "geoseg.methods"
Builder = Callable[[Any, dict[str, Any]], Segmenter]

FITTED: dict[str, Builder] = {
    **{name: (lambda raster, p, _m=name: fit_threshold(raster, _m, **p)) for name in METHODS},
    "kmeans": lambda raster, p: fit_kmeans(raster, **p),
    "histogram": lambda raster, p: fit_histogram_modes(raster, **p),
}
# what each fitted method gives, known from its parameters and the raster's band names alone
UNFITTED: dict[str, Callable[[Any, dict[str, Any]], Segmenter]] = {
    **{name: (lambda bands, p, _m=name: unfitted_threshold(bands, _m, **p)) for name in METHODS},
    "kmeans": lambda bands, p: unfitted_kmeans(bands, **p),
    "histogram": lambda bands, p: unfitted_modes(bands, **p),
}
DIRECT: dict[str, Builder] = {
    "threshold": lambda _, p: Threshold(**{**p, "thresholds": p.get("thresholds", ())}),
    "local": lambda _, p: LocalThreshold(**p),
    "canny": lambda _, p: Canny(**p),
    **{op: (lambda _, p, _op=op: EdgeMagnitude(_op, **p)) for op in ("sobel", "scharr", "prewitt")},
}


@functools.cache
def plugins() -> dict[str, tuple[Builder, bool]]:
    """The methods other packages register: name -> (builder, whether it fits). Read once."""
    found: dict[str, tuple[Builder, bool]] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        cls = _load(entry)
        fit = getattr(cls, "fit", None)
        if callable(fit):
            found[entry.name] = (lambda raster, p, _fit=fit: _fit(raster, **p), True)
        else:
            found[entry.name] = (lambda _, p, _cls=cls: _cls(**p), False)
    return found


def _load(entry: metadata.EntryPoint) -> type[Segmenter]:
    try:
        cls = entry.load()
    except Exception as exc:  # a third-party import error must say whose it is
        raise MethodParameterError(f"geoseg.methods plugin {entry.name!r} ({entry.value}) failed to "
                                   f"load: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Segmenter)):
        raise MethodParameterError(f"geoseg.methods plugin {entry.name!r} names {entry.value}, which "
                                   "is not a Segmenter class; point the entry point at one.")
    return cls


def method_names() -> list[str]:
    return sorted({*FITTED, *DIRECT, *plugins()})


def needs_fit(name: str) -> bool:
    check_method(name)
    return name in FITTED or plugins().get(name, (None, False))[1]


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of geoseg's own methods (their parameters are checked by name)."""
    return name in FITTED or name in DIRECT


def check_method(name: str) -> None:
    if name not in FITTED and name not in DIRECT and name not in plugins():
        raise JobSpecError(f"model.method: unknown method {name!r}; known methods: {', '.join(method_names())}.")


def build_method(name: str, params: dict[str, Any], raster: Any = None) -> Segmenter:
    """The segmenter for ``name``; fitted methods compute their statistics on ``raster`` (on the
    active Dask scheduler, chunk by chunk)."""
    check_method(name)
    if is_builtin(name):
        check_params(params, "model.params")
    return _built(name, FITTED.get(name) or DIRECT.get(name) or plugins()[name][0], raster, params)


def _built(name: str, builder: Callable[[Any, dict[str, Any]], Segmenter], first: Any,
           params: dict[str, Any]) -> Segmenter:
    """``builder(first, params)``, a parameter it does not take (or lacks) named as the spec's."""
    try:
        return builder(first, dict(params))
    except TypeError as exc:
        given = f"received {sorted(params)}" if params else "received no parameters"
        raise JobSpecError(f"model.params: {name}: {given}; {_plain(exc)}. Give the method's "
                           "parameters under model.params (README, Classical methods).") from None


def params_for_input(name: str, params: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """``params`` with what the input's ``dtype`` decides filled in: Canny's thresholds left
    out or null become skimage's defaults in the raster's units (10% and 20% of the dtype's
    maximum). Other methods' parameters come back as given."""
    if name != "canny":
        return params
    check_params(params, "model.params")  # a threshold of another type is named as such first
    return canny_params(params, dtype)


def stand_in(name: str, params: dict[str, Any], band_names: Any) -> Segmenter | None:
    """For a method fitted on a raster of ``band_names``: a segmenter with the classes, bands and
    geometry the fit will give (its statistics placeholders), built without reading a pixel, so
    what a fit would refuse of its parameters, and an ensemble of its classes, is refused before
    it; a method built without fitting itself; ``None`` for a plugin's fitted method (what it
    gives is known only once fitted)."""
    if name in UNFITTED:
        check_params(params, "model.params")
        return _built(name, UNFITTED[name], tuple(band_names), params)
    return None if needs_fit(name) else build_method(name, params)


def _plain(exc: TypeError) -> str:
    """A constructor's complaint without its Python name: ``missing 2 required positional
    arguments: 'low_threshold' and 'high_threshold'``."""
    text = str(exc)
    return text.split(") ", 1)[1] if text.split("(", 1)[0].endswith("__init__") else text
