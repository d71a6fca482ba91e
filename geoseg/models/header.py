"""A model file as its header describes it, without torch: what the client plans with and
what a task carries.

:class:`ModelInfo` is the file's metadata, :class:`ModelRef` the small reference a task
carries instead of weights, :class:`ModelHeader` the segmenter a job plans and checks with.
None of them imports torch, so a Dask scheduler unpickling a graph of references does not
load it either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.core.classes import ClassInfo, describe_repeats, repeated_names
from geoseg.core.segmenter import Segmenter, normalization_fits
from geoseg.core.text import brief, json_kind
from geoseg.errors import ModelConfigError, ModelFileError

IN_MEMORY = "in-memory:"  # the URL prefix of a model built in memory, not read from a file


@dataclass(frozen=True)
class ModelInfo:
    """Everything a model file says about its network besides the weights."""

    name: str
    architecture: str
    config: dict[str, Any]
    classes: tuple[ClassInfo, ...]
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", _as_bands(self.bands))
        n = len(self.bands)
        if len(self.mean) != n or len(self.std) != n:
            raise ModelConfigError(
                f"normalization has {len(self.mean)} means and {len(self.std)} stds "
                f"for {n} bands {self.bands}; give one of each per band."
            )
        _check_normalization(self.mean, self.std)
        object.__setattr__(self, "classes", _as_classes(self.classes))
        _check_class_names([c.name for c in self.classes])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "config": self.config,
            "classes": [c.to_dict() for c in self.classes],
            "bands": list(self.bands),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "sha256": self.sha256,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        norm = data["normalization"]
        return cls(
            name=str(data["name"]),
            architecture=str(data["architecture"]),
            config=dict(data["config"]),
            classes=tuple(ClassInfo.from_dict(c) for c in data["classes"]),
            bands=_as_bands(data["bands"]),
            mean=tuple(float(m) for m in norm["mean"]),
            std=tuple(float(s) for s in norm["std"]),
            sha256=str(data.get("sha256", "")),
            extra=dict(data.get("extra", {})),
        )


def _check_normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Refuse a mean or std that is not a finite float32 number, or a std that is not positive
    in float32 (:func:`~geoseg.core.segmenter.normalization_fits`): a NaN (which ``std <= 0``
    lets through) or an infinity turns every input into the same value, and the network then
    gives one class everywhere without a word."""
    if normalization_fits(mean, std):
        return
    raise ModelConfigError(
        f"normalization: received mean {list(mean)} and std {list(std)}; expected a finite mean "
        "and a finite std > 0 per band, each within float32's range (std >= 1.2e-38, both "
        "<= 3.4e38), the statistics of the data the network was trained on. Give those values "
        "(data.normalization in a training spec measures them).")


def _as_classes(classes: Any) -> tuple[ClassInfo, ...]:
    """``classes`` as a tuple of :class:`ClassInfo`: a name alone is a class of that name (and
    the default colour); anything else is refused, as is a single string (one class per
    letter)."""
    items = None if isinstance(classes, (str, bytes, dict)) else _items(classes)
    bad = None if items is None else next(
        (c for c in items if not isinstance(c, (ClassInfo, str))), None)
    if items is None or bad is not None:
        shown = classes if items is None else bad
        raise ModelConfigError(
            f"classes: received {type(shown).__name__} {brief(shown, 60)}"
            f"{'' if items is None else ' among them'}; expected a list of ClassInfo, one per "
            "output channel, e.g. (ClassInfo('water', (31, 120, 180)), ClassInfo('land')), or "
            "of class names.")
    return tuple(c if isinstance(c, ClassInfo) else ClassInfo(c) for c in items)


def _as_bands(bands: Any) -> tuple[str, ...]:
    """``bands`` as a tuple of band names: a list of names (numbers named as text); a single
    string is refused, not read as one band per letter ("rgb" as r, g, b)."""
    items = None if isinstance(bands, (str, bytes, dict)) else _items(bands)
    if items is None or not all(isinstance(b, str | int) and not isinstance(b, bool)
                                for b in items):
        raise ModelConfigError(
            f"bands: received {json_kind(bands)} {brief(bands, 60)}; expected a list of band "
            "names, one per input channel, e.g. [\"red\", \"green\", \"blue\"].")
    return tuple(str(b) for b in items)


def _items(value: Any) -> list[Any] | None:
    try:
        return list(value)
    except TypeError:
        return None


def _check_class_names(names: list[str]) -> None:
    """Refuse a class name given twice: outputs, legends and metrics name classes by it."""
    repeats = repeated_names(names)
    if repeats:
        raise ModelConfigError(
            f"classes: received {len(names)} classes in which {describe_repeats(repeats)}; "
            "expected each class name once (outputs, legends and metrics name classes by it). "
            "Rename or remove the duplicate.")


@dataclass(frozen=True)
class ModelRef:
    """What a task carries instead of a model: where it lives and its weights' hash.

    Workers turn it into a loaded model once per process
    (:func:`geoseg.models.cache.resolve`), on ``device`` where the model was placed on one
    on purpose (``load_model(..., device="cpu")``), else on the worker's ``GEOSEG_DEVICE``.
    Storage options are neither compared nor printed. ``held`` is the model itself where the
    reference was made from one (:meth:`~geoseg.models.model.SegmentationModel.ref`): a graph
    computed in the process that built it (the threaded or synchronous scheduler) keeps it
    alive and uses it; it is neither compared, tokenized nor pickled.
    """

    url: str
    sha256: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    device: str | None = None
    held: Any = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "held": None}  # another process loads the file, or refuses

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __dask_tokenize__(self) -> tuple[str, ...]:
        return ("ModelRef", self.url, self.sha256, str(self.device))


class ModelHeader(Segmenter):
    """A model file as the job's client sees it: metadata and tiling geometry, no network.

    Classes, bands, stride, receptive field and the weights' hash come from the file's
    header (:func:`geoseg.models.modelfile.read_header`); the workers load the weights
    (:class:`geoseg.parallel.plugins.ModelPlugin`). It plans and checks, it never predicts.
    """

    def __init__(self, info: ModelInfo, source: ModelRef, *, stride: tuple[int, ...],
                 halo: tuple[int, ...], global_context: bool, parameters: int = 0):
        self.info, self.source, self.parameters = info, source, parameters
        self.name, self.classes, self.bands = info.name, info.classes, info.bands
        self.stride, self.halo, self.global_context = stride, halo, global_context

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise ModelFileError(f"{self.name} was read for its header only; load its weights with "
                             f"geoseg.load_model({self.source.url!r}) to predict.")

    def ref(self) -> ModelRef:
        return self.source

    def __repr__(self) -> str:
        return (f"ModelHeader(name={self.name!r}, architecture={self.info.architecture!r}, "
                f"stride={self.stride}, halo={self.halo}, sha256={self.info.sha256[:12]})")


def model_refs(ref: Any) -> Iterator[ModelRef]:
    """Every model file reference inside a task's segmenter reference (ensembles, wrappers)."""
    if isinstance(ref, ModelRef):
        yield ref
    elif isinstance(ref, (tuple, list)):
        for item in ref:
            yield from model_refs(item)
    elif dataclasses.is_dataclass(ref) and not isinstance(ref, type):
        for item in dataclasses.fields(ref):
            yield from model_refs(getattr(ref, item.name))
