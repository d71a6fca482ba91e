"""The parameters of geoseg's own classical methods, checked by name before a method is built or
fitted, so that a job spec's ``model.params`` with a wrong type or value is refused by
``geoseg validate`` (and before a run starts) with the key, the value received and what is
expected, not met halfway through a fit.

A parameter name means the same in every built-in method that takes it (``classes`` is always a
number of classes, ``feature`` always what is segmented, ...), so one table describes them all.
Whether a method takes a name at all is checked against its signature elsewhere
(:func:`geoseg.jobs.checks.check_methods`, :func:`geoseg.methods.build.build_method`); what each
method checks beyond this (increasing thresholds, an odd ``block_size``) stays with the method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from geoseg.core.classes import repeated_names
from geoseg.core.text import as_whole, brief
from geoseg.errors import MethodParameterError


@dataclass(frozen=True)
class Kind:
    """What a parameter accepts: ``test`` says whether a value is one, ``expected`` in words."""

    expected: str
    test: Callable[[Any], bool]


def is_whole(value: Any) -> bool:
    return as_whole(value) is not None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return isinstance(value, Integral) or not math.isnan(value)  # an int may be beyond a float


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def whole(minimum: int, maximum: int | None = None) -> Kind:
    if maximum is None:
        return Kind(f"a whole number >= {minimum}", lambda v: is_whole(v) and v >= minimum)
    return Kind(f"a whole number from {minimum} to {maximum}",
                lambda v: is_whole(v) and minimum <= v <= maximum)


def bounded(minimum: int, maximum: int) -> Kind:
    """A whole number >= ``minimum``, at most ``maximum`` (a bound on work or memory)."""
    least = whole(minimum)
    return Kind(f"{least.expected}, at most {maximum}", lambda v: least.test(v) and v <= maximum)


MAX_HISTOGRAM_BINS = 1 << 20  # a histogram's bins: 8 MiB of counts per chunk task at most
MAX_STARTS = 1000  # k-means starts: each adds k x features work per pixel and iteration
MAX_SAMPLE_SIZE = 10**7  # pixels a k-means++ sample gathers in the fitting process


def number(minimum: float | None = None) -> Kind:
    if minimum is None:
        return Kind("a number", _is_number)
    return Kind(f"a number >= {minimum:g}", lambda v: _is_number(v) and v >= minimum)


def optional(kind: Kind) -> Kind:
    return Kind(f"{kind.expected}, or null", lambda v: v is None or kind.test(v))


def list_of(kind: Kind, what: str, *, size: int | None = None) -> Kind:
    count = "" if size is None else f"{size} "
    return Kind(f"a list of {count}{what}",
                lambda v: _is_list(v) and len(v) == (size or len(v)) and all(map(kind.test, v)))


def either(*kinds: Kind) -> Kind:
    return Kind(" or ".join(k.expected for k in kinds), lambda v: any(k.test(v) for k in kinds))


TEXT = Kind("a string", lambda v: isinstance(v, str))
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
BAND = whole(1)
BANDS = list_of(BAND, "band numbers (1-based)")
PAIR = list_of(BAND, "band numbers", size=2)
CENTROIDS = list_of(list_of(number(), "numbers"), "centroids (each a list of numbers)")
FEATURE = Kind("a band number (1-based), a pair [a, b] of band numbers for (a - b) / (a + b), "
               "'mean', or null (the raster's only band)",
               lambda v: v is None or (isinstance(v, str) and v.lower() == "mean") or BAND.test(v)
               or PAIR.test(v))
PARAMS: dict[str, Kind] = {
    "k": whole(1),
    "classes": whole(2),
    "n_init": optional(bounded(1, MAX_STARTS)),
    "max_iter": whole(1),
    "sample_size": bounded(1, MAX_SAMPLE_SIZE),
    "seed": whole(0),
    "split_every": whole(2),
    "nbins": whole(2, MAX_HISTOGRAM_BINS),
    "max_smoothing": whole(1),
    "block_size": whole(1),
    "context": optional(whole(0)),
    "tol": number(0),
    "sigma": number(0),
    "offset": number(),
    "param": optional(number(0)),
    "low_threshold": optional(number(0)),
    "high_threshold": optional(number(0)),
    "threshold": optional(number(0)),
    "nodata": optional(number()),
    "thresholds": either(number(), list_of(number(), "numbers")),
    "bands": optional(BANDS),
    "feature": FEATURE,
    "class_names": optional(list_of(TEXT, "names")),
    "init": either(Kind("'k-means++'", lambda v: v == "k-means++"), CENTROIDS),
    "method": TEXT,
    "mode": TEXT,
    "hysteresis": TEXT,
    "equal_to_upper": BOOLEAN,
    "cache": optional(BOOLEAN),
    "opening": whole(0),
    "closing": whole(0),
    "max_object_size": whole(0),
    "max_hole_size": whole(0),
    "connectivity": whole(1, 2),
}


def check_value(name: str, value: Any, key: str | None = None) -> None:
    """Refuse ``value`` for the parameter ``name`` when it is not what :data:`PARAMS` says
    (names not in it are left to the method); ``key`` names it in the message."""
    kind = PARAMS.get(name)
    if kind is None or kind.test(value):
        return
    hint = (" (this is text: write the number without quotes, and 1e-4 as 1.0e-4, which YAML "
            "reads as a number)"
            if isinstance(value, str) and _parses_as_number(value) else "")
    raise MethodParameterError(f"{key or name}: received {brief(value, 200)}; expected "
                               f"{kind.expected}"
                               f"{hint}.")


def check_class_names(class_names: Sequence[str] | None, classes: int, gives: str,
                      fix: str) -> None:
    """Refuse ``class_names`` (when given) of another count than the ``classes`` that ``gives``
    (the method, in words) makes; ``fix`` says how to change that count instead. One string is
    refused too: it would be taken as one name per letter."""
    if isinstance(class_names, str):
        raise MethodParameterError(
            f"class_names: received the string {class_names!r}; expected a list of {classes} "
            f"names, one per class, e.g. {[class_names] + ['...'] * (classes - 1)}.")
    if class_names is not None and len(class_names) != classes:
        raise MethodParameterError(
            f"class_names: received {len(class_names)} name(s) {list(class_names)}, but {gives} "
            f"gives {classes} classes; give one name per class, or {fix}.")
    check_unique_names(class_names)


def check_unique_names(class_names: Sequence[Any] | None) -> None:
    """Refuse ``class_names`` that name two classes alike (as text): a map's legend, an
    ensemble's classes and a report's table would not tell them apart."""
    names = [] if class_names is None else [str(n) for n in class_names]
    repeated = sorted(repeated_names(names))
    if repeated:
        raise MethodParameterError(
            f"class_names: received {names}, which names more than one class {repeated}; "
            "expected one distinct name per class: rename the repeats (e.g. 'water_2').")


def check_params(params: Mapping[str, Any], key: str) -> None:
    """Every parameter of ``params`` (a built-in method's), named ``key.<name>`` when refused."""
    for name, value in params.items():
        check_value(name, value, f"{key}.{name}")


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
