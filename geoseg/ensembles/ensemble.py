"""Ensembles: several segmenters on the same tiles, their scores combined per pixel.

An :class:`Ensemble` is itself a :class:`~geoseg.core.segmenter.Segmenter`, so
:func:`geoseg.segment` runs it like any model: each task reads its window once
and every member sees the same batch of tiles. Members travel to workers as
their references (:class:`EnsembleRef`), never as weights.

The same tiles: padded at the image's far end to a multiple of the least common multiple of
the members' strides, so a member of a smaller stride sees more padding there than alone, and
on an image of another size its scores near that end may differ from its own.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geoseg.core.classes import ClassInfo, repeated_names
from geoseg.core.segmenter import Segmenter, valid_mask
from geoseg.errors import BandMismatchError, EnsembleError
from geoseg.models.tensors import valid_mask_tensor

COMBINES = ("mean", "vote", "max")


class Ensemble(Segmenter):
    """Several segmenters combined per pixel.

    Parameters
    ----------
    members
        A list (or tuple) of segmenters: deep models of any architecture, classical
        methods, wrappers; model file references (a path, an fsspec URL or
        ``builtin:NAME``, as ``str`` or :class:`os.PathLike`), loaded with
        :func:`geoseg.load_model`; or task references that :func:`geoseg.models.resolve`
        turns into segmenters.
    weights
        Non-negative weight per member, not all zero; normalized to sum 1
        (default: equal weights).
    combine
        ``"mean"``: weighted mean of the member scores (probabilities).
        ``"max"``: per-class maximum of the member scores (weights are ignored).
        ``"vote"``: weighted majority of the members' arg-max classes. The scores
        are the vote shares (summing to 1). Tie-break: among classes tied for
        the most votes (within 1e-9), the class with the highest weighted mean
        score wins, then the lowest class id; the winner's score is raised by
        one float32 ulp so the arg-max of the returned scores is the winner.
    classes
        The ensemble's class order, as names or :class:`ClassInfo` (default: the
        first member's). Members may list the same names in any order; their
        score channels are reordered to this one.

    Notes
    -----
    :meth:`prepare` keeps the raw values (float32, float64 for wide types) with
    no-data pixels set to NaN; :meth:`predict` gives each member its own
    prepared input (``member.prepare`` per tile), so per-model normalization is
    respected and no-data pixels reach every member as it expects them.
    """

    def __init__(self, members: Sequence[Any], weights: Sequence[float] | None = None,
                 combine: str = "mean", *, classes: Sequence[str | ClassInfo] | None = None):
        self.members: tuple[Segmenter, ...] = tuple(
            _member(m, i) for i, m in enumerate(_member_list(members)))
        if not self.members:
            raise EnsembleError("an Ensemble needs at least one member; got none.")
        if combine not in COMBINES:
            raise EnsembleError(f"combine={combine!r}; expected one of {COMBINES}.")
        self.combine = combine
        self.weights = normalize_weights(weights, len(self.members))
        self.classes = _ensemble_classes(self.members, classes)
        origin = f"member 0, {self.members[0].name}" if classes is None else "as given"
        self._orders = tuple(channel_order(m, self.classes, i, origin) for i, m in enumerate(self.members))
        self.bands = _common_bands(self.members)
        if self.bands is not None:  # a classical member's feature names bands the others read
            self.check_bands(list(self.bands), "an input of its other members")
        self.stride, self.halo = _geometry(self.members)
        self.global_context = any(m.global_context for m in self.members)
        self.device = next((m.device for m in self.members if m.device.type != "cpu"), torch.device("cpu"))
        self.name = f"ensemble[{combine}]({', '.join(m.name for m in self.members)})"
        self._keeps: dict[tuple[int, str, tuple[int, ...]], bool] = {}

    def check_bands(self, band_names: Sequence[str], where: str) -> None:
        """Each member's own check (a classical member's feature too), before any compute."""
        for i, member in enumerate(self.members):
            try:
                member.check_bands(band_names, where)
            except BandMismatchError as exc:
                raise BandMismatchError(f"Ensemble member {i} ({member.name}): {exc}") from None

    @property
    def spatial_axes(self) -> int | None:
        """Any when every member segments any number of axes (thresholds, local thresholds, edge
        magnitudes), else as many as the members' halos list (they share it)."""
        if all(m.spatial_axes is None for m in self.members):
            return None
        return len(tuple(self.halo))

    def prepare(self, raw: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw values as floats and the validity mask; no-data pixels become NaN.

        A band of 64-bit integers that a member thresholds in its own type
        (:func:`keeps_integers`) stays integers, float64 would round its values beyond 2**53:
        int64 (a uint64's bits, which torch moves and pads everywhere), no-data pixels 0, and a
        last band saying where there is data and of which type (:data:`INT64_DATA`,
        :data:`UINT64_DATA`; 0 where none). From it each member gets the band's integers or, as
        before, float64 with NaN where no data (:meth:`member_input`)."""
        valid = self._valid(raw, nodata)
        if self._integer_input(raw):
            bits = raw.view(np.int64)
            marks = valid * (UINT64_DATA if raw.dtype.kind == "u" else INT64_DATA)
            return np.concatenate([np.where(valid, bits, 0), marks[None]]).astype(np.int64), valid
        x = raw.astype(_raw_float(raw.dtype), copy=True)
        x[:, ~valid] = np.nan
        return x, valid

    def _valid(self, raw: np.ndarray, nodata: float | None) -> np.ndarray:
        """:func:`valid_mask`, where every member's output is defined (:meth:`defined`) and,
        for float64 pixels, where every member takes them as data (its own :meth:`prepare`: a
        network refuses a 1e300 that normalises to no float32 number)."""
        valid = valid_mask(raw, nodata)
        defined = self.defined(raw)
        if defined is not None:
            valid &= defined
        if raw.dtype == np.float64:
            for member in self.members:
                valid &= np.asarray(member.prepare(raw, nodata)[1], bool)
        return valid

    def defined(self, raw: np.ndarray) -> np.ndarray | None:
        """Where every member's output is defined: a member's undefined pixels (a normalized
        difference's 0/0) are no data for the ensemble, as they are for the member alone."""
        found = [m.defined(raw) for m in self.members]
        found = [d for d in found if d is not None]
        return np.logical_and.reduce(found) if found else None

    def prepare_tensor(self, raw: torch.Tensor, nodata: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`prepare` on the device of ``raw``."""
        valid = valid_mask_tensor(raw, nodata)
        if any(type(m).defined is not Segmenter.defined for m in self.members):
            defined = self.defined(raw.numpy(force=True))  # host methods' features
            if defined is not None:
                valid &= torch.from_numpy(defined).to(raw.device)
        if raw.dtype == torch.float64:  # the members' own no data (see _valid)
            for member in self.members:
                valid &= member.prepare_tensor(raw.to(member.device), nodata)[1].to(raw.device)
        if self._integer_input(raw):
            bits = raw.view(torch.int64)
            marks = valid * (INT64_DATA if raw.dtype == torch.int64 else UINT64_DATA)
            return torch.cat([torch.where(valid, bits, 0), marks[None].to(torch.int64)]), valid
        exact32 = raw.dtype.itemsize <= (4 if raw.is_floating_point() else 2)
        x = raw.to(torch.float32 if exact32 else torch.float64)
        return x.masked_fill(~valid, float("nan")), valid

    def _integer_input(self, raw: np.ndarray | torch.Tensor) -> bool:
        """Whether ``raw`` is 64-bit integers that a member keeps as they are: then the
        ensemble's input is those integers and the mask (:meth:`prepare`)."""
        if not _wide_integers(raw.dtype) or not all(raw.shape):
            return False
        sample = _pixel(raw)
        return any(self.keeps_integers(i, sample) for i in range(len(self.members)))

    def keeps_integers(self, index: int, sample: np.ndarray) -> bool:
        """:func:`keeps_integers` for member ``index``, asked once per dtype and shape of
        ``sample`` (one pixel): every batch of a job has the same, and the answer runs a
        pixel through the member's :meth:`prepare`."""
        key = (index, sample.dtype.str, sample.shape)
        if key not in self._keeps:
            self._keeps[key] = keeps_integers(self.members[index], sample)
        return self._keeps[key]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`predict_tensor` for a host batch; one array comes back."""
        return self.predict_tensor(torch.from_numpy(np.ascontiguousarray(batch))).numpy(force=True)

    def predict_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Combined scores ``(N, classes, *spatial)`` for raw tiles ``(N, bands, *spatial)``.

        Member scores are moved to :attr:`device` (the first member's off the CPU, a GPU when a
        deep member runs on one; else the CPU) and combined there."""
        scores = [self.member_scores(i, batch) for i in range(len(self.members))]
        return combine_scores(scores, self.weights, self.combine)

    def predict_tensor_at(self, batch: torch.Tensor, windows: Sequence[tuple[slice, ...]],
                          shape: Sequence[int]) -> torch.Tensor:
        """:meth:`predict_tensor` for windows of an image of ``shape``: members are told where."""
        scores = [self.member_scores(i, batch, (windows, shape)) for i in range(len(self.members))]
        return combine_scores(scores, self.weights, self.combine)

    def member_scores(self, index: int, batch: Any,
                      where: tuple[Sequence[tuple[slice, ...]], Sequence[int]] | None = None
                      ) -> torch.Tensor:
        """Member ``index``'s scores for raw tiles on :attr:`device`, in the ensemble's class order.

        Each tile is prepared by the member itself on the member's device, so per-model
        normalization holds and no-data pixels (NaN here) reach it as it expects them.
        ``where`` (windows, image shape) tells the member where the tiles lie."""
        member = self.members[index]
        tiles = self.member_input(index, torch.as_tensor(batch).to(member.device))
        prepared = torch.stack([member.prepare_tensor(tile)[0] for tile in tiles])
        if where is None:
            scores = member.predict_tensor(prepared)
        else:
            scores = member.predict_tensor_at(prepared, *where)
        return scores.to(self.device, torch.float32)[:, list(self._orders[index])]

    def member_input(self, index: int, tiles: torch.Tensor) -> torch.Tensor:
        """Member ``index``'s raw tiles from the ensemble's prepared ones: floats as they are;
        64-bit integers with their marks as a last band (:meth:`prepare`) as those integers,
        in the band's type, for a member that keeps them (:meth:`keeps_integers`), else as
        float64 with NaN where no data, as the ensemble gives every member floats."""
        if tiles.dtype != torch.int64:
            return tiles
        values, marks = tiles[:, :-1], tiles[:, -1:]
        valid = marks != 0
        if bool((marks == UINT64_DATA).any()):
            values = values.view(torch.uint64)
        if all(values.shape) and self.keeps_integers(index, _pixel(values[0])):
            return values
        return values.to(torch.float64).masked_fill(~valid, float("nan"))

    def compile(self) -> Ensemble:
        for member in self.members:
            member.compile()
        return self

    def ref(self) -> EnsembleRef:
        return EnsembleRef(tuple(m.ref() for m in self.members), self.weights, self.combine,
                           self.classes)

    def __repr__(self) -> str:
        return f"Ensemble({self.name}, weights={[round(w, 4) for w in self.weights]})"


@dataclass(frozen=True)
class EnsembleRef:
    """What tasks carry for an :class:`Ensemble`: member references, weights, combine rule."""

    members: tuple[Any, ...]
    weights: tuple[float, ...]
    combine: str
    classes: tuple[ClassInfo, ...]

    def resolve(self) -> Ensemble:
        return Ensemble(self.members, self.weights, self.combine, classes=self.classes)


# the last band of an ensemble's 64-bit integer input (Ensemble.prepare): data of either type
INT64_DATA, UINT64_DATA = 1, 2


def _wide_integers(dtype: np.dtype | torch.dtype) -> bool:
    """Whether ``dtype`` (numpy or torch) is int64 or uint64, whose values float64 rounds."""
    if isinstance(dtype, torch.dtype):
        return dtype in (torch.int64, getattr(torch, "uint64", torch.int64))
    return np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize == 8


def _pixel(raw: np.ndarray | torch.Tensor) -> np.ndarray:
    """The first pixel of ``raw`` ``(bands, *spatial)``, as a host array of that shape."""
    first = raw[(slice(None),) + (slice(0, 1),) * (raw.ndim - 1)]
    return first.numpy(force=True) if isinstance(first, torch.Tensor) else np.asarray(first)


def keeps_integers(member: Segmenter, sample: np.ndarray) -> bool:
    """Whether ``member`` prepares raw 64-bit integers ``sample`` as integers of the same shape
    (a threshold on a band, alone or wrapped: it compares them exactly); a network, a
    pixel method or a nested ensemble wants floats."""
    x = np.asarray(member.prepare(sample)[0])
    return x.dtype.kind in "iu" and x.shape == sample.shape


def normalize_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    """Weights scaled to sum 1; equal when ``None``. Raises on negative, all-zero or wrong count.

    They are divided by the largest first, so huge weights (``[1e308, 1e308]``) do not
    overflow their sum: they equal ``[1, 1]``."""
    if weights is None:
        return (1.0 / n,) * n
    w = _weight_array(weights)
    if w.size != n:
        raise EnsembleError(f"got {w.size} weight(s) ({_short(weights)}) for {n} member(s); "
                            "give one weight per member.")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise EnsembleError(f"weights must be finite and non-negative; got {_short(weights)}.")
    if not np.any(w > 0):
        raise EnsembleError(f"weights are all zero ({_short(weights)}); give at least one positive weight.")
    scaled = w / w.max()
    return tuple(float(v) for v in scaled / scaled.sum())


def _weight_array(weights: Any) -> np.ndarray:
    """``weights`` as a 1-D float64 array; what is not a sequence of numbers is refused."""
    listed = isinstance(weights, (Sequence, np.ndarray)) and not isinstance(weights, (str, bytes))
    if not listed or not all(isinstance(v, numbers.Real) for v in weights):
        raise EnsembleError(
            f"weights: a list of numbers, one per member, was expected; got {type(weights).__name__} "
            f"{_short(weights)}. Give e.g. weights=[2, 1] for two members, or leave it out for "
            "equal weights."
        )
    return np.asarray(weights, dtype=np.float64)


def combine_scores(scores: Sequence[Any], weights: Sequence[float], combine: str) -> torch.Tensor:
    """Combine member scores ``(N, K, *S)`` each (tensors on one device, or arrays), by ``"mean"``,
    ``"max"`` or ``"vote"``; float32 on the scores' device."""
    scores = [torch.as_tensor(s) for s in scores]
    if combine == "max":
        return torch.stack(scores).amax(dim=0).float()
    mean = _weighted_mean(scores, weights)
    if combine == "mean":
        return mean.float()
    return _vote(scores, weights, mean)


def _weighted_mean(scores: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    total = torch.zeros(scores[0].shape, dtype=torch.float64, device=scores[0].device)
    for s, w in zip(scores, weights):
        if w:
            total += w * s.double()
    return total


def _vote(scores: Sequence[torch.Tensor], weights: Sequence[float], mean: torch.Tensor) -> torch.Tensor:
    """Vote shares with the documented tie-break (most votes, then highest mean score, then lowest id)."""
    n_classes = scores[0].shape[1]
    votes = torch.zeros(mean.shape, dtype=torch.float64, device=mean.device)
    classes = torch.arange(n_classes, device=mean.device).reshape((1, n_classes) + (1,) * (mean.ndim - 2))
    for s, w in zip(scores, weights):
        votes += w * (s.argmax(dim=1, keepdim=True) == classes)
    top = votes.amax(dim=1, keepdim=True)
    tied = votes >= top - 1e-9
    winner = torch.where(tied, mean, torch.tensor(-math.inf, dtype=mean.dtype, device=mean.device))
    winner = winner.argmax(dim=1, keepdim=True)  # the first of equal maxima: the lowest class id
    out = votes.float()
    bumped = torch.nextafter(out.amax(dim=1, keepdim=True), torch.tensor(math.inf, device=out.device))
    return out.scatter(1, winner, bumped)


def _member_list(members: Any) -> list[Any]:
    """``members`` as a list; a single segmenter or reference, or what is not iterable, is refused."""
    single = isinstance(members, (str, bytes, os.PathLike, Segmenter)) or hasattr(members, "classes")
    if not single and isinstance(members, Iterable):
        return list(members)
    raise EnsembleError(
        f"members: a list of segmenters (or model file references) was expected; got "
        f"{type(members).__name__} {_short(members)}. Pass the members in a list, e.g. "
        "Ensemble([model_a, model_b]), even for one member: Ensemble([model])."
    )


def _member(member: Any, index: int) -> Segmenter:
    return as_segmenter(member, f"member {index}")


def as_segmenter(member: Any, where: str) -> Segmenter:
    """``member`` (what ``where`` names) as a segmenter: a model file reference (``str``,
    ``os.PathLike``) is loaded with :func:`geoseg.load_model`, a task reference resolved; what
    has no classes is refused."""
    from geoseg.models.cache import resolve
    from geoseg.models.modelfile import load_model

    if isinstance(member, (str, os.PathLike)):
        return load_model(os.fspath(member))
    resolved = resolve(member)
    if not isinstance(resolved, Segmenter) and not hasattr(resolved, "classes"):
        raise EnsembleError(
            f"{where}: a segmenter was expected; got {type(resolved).__name__} "
            f"{_short(resolved)}. Pass segmenters (geoseg.load_model(...), a method from "
            "geoseg.methods, a wrapper) or model file references (a path, URL or 'builtin:NAME')."
        )
    return resolved


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw_float(dtype: np.dtype) -> type:
    """float32 when it holds every value of ``dtype`` exactly, else float64."""
    dtype = np.dtype(dtype)
    exact32 = dtype.kind in "biu" and dtype.itemsize <= 2 or dtype.kind == "f" and dtype.itemsize <= 4
    return np.float32 if exact32 else np.float64


def _names(classes: Sequence[ClassInfo]) -> list[str]:
    return [c.name for c in classes]


def _ensemble_classes(members: Sequence[Segmenter],
                      classes: Sequence[str | ClassInfo] | None) -> tuple[ClassInfo, ...]:
    if classes is None:
        return tuple(members[0].classes)
    given = [c.name if isinstance(c, ClassInfo) else str(c) for c in classes]
    if _duplicates(given):
        raise EnsembleError(
            f"classes={_short(list(classes))} names {_duplicates(given)} more than once; expected "
            "each class name once. classes=[...] sets the order of the members' classes: list "
            "every class name exactly once."
        )
    by_name = {c.name: c for m in members for c in m.classes}
    return tuple(c if isinstance(c, ClassInfo) else by_name.get(str(c), ClassInfo(str(c))) for c in classes)


def channel_order(member: Segmenter, classes: Sequence[ClassInfo], index: int,
                  origin: str = "") -> tuple[int, ...]:
    """Indexes into ``member``'s score channels giving ``classes``' order; clear error on mismatch.
    ``origin`` says where the ensemble's classes come from (``"member 0, NAME"``)."""
    names, expected = _names(member.classes), _names(classes)
    if _duplicates(names) or sorted(names) != sorted(expected):
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        whose = f" ({origin})" if origin else ""
        raise EnsembleError(
            f"member {index} ({member.name}) has {len(names)} classes {names} but the ensemble's "
            f"{len(expected)} classes{whose} are {expected} (missing: {missing}, extra: {extra}, "
            f"duplicated: {_duplicates(names)}). "
            "Ensemble members must predict the same class names (in any order); retrain or relabel the "
            "member, or wrap it to map its classes. (classes=[...] only sets their order: it names "
            "every class of every member, not a subset.)"
        )
    return tuple(names.index(n) for n in expected)


def _duplicates(names: Sequence[str]) -> list[str]:
    """The names that occur more than once in ``names``, each once, in order."""
    return list(repeated_names(list(names)))


def _common_bands(members: Sequence[Segmenter]) -> tuple[str, ...] | None:
    """The first member's band names with a count every member accepts; error otherwise."""
    bands = next((m.bands for m in members if m.bands is not None), None)
    for i, m in enumerate(members):
        if m.bands is not None and bands is not None and len(m.bands) != len(bands):
            raise BandMismatchError(
                f"member {i} ({m.name}) expects {len(m.bands)} band(s) ({', '.join(m.bands)}) but the "
                f"ensemble's first member with band names expects {len(bands)} ({', '.join(bands)}). "
                "All members must read the same bands; ensemble models trained on the same inputs, or "
                "wrap a member to select its bands."
            )
    return None if bands is None else tuple(bands)


def _geometry(members: Sequence[Segmenter]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-axis lcm of the strides and max of the halos. Members fixed to a number of spatial
    axes (``spatial_axes`` not ``None``) must share it; a member that segments any number (a
    threshold, a local threshold) has its stride and halo, one value on every axis, repeated
    on as many axes."""
    ndim = _common_ndim(members)
    strides = [_per_axis(m, "stride", ndim) for m in members]
    halos = [_per_axis(m, "halo", ndim) for m in members]
    stride = tuple(math.lcm(*(s[a] for s in strides)) for a in range(ndim))
    halo = tuple(max(h[a] for h in halos) for a in range(ndim))
    return stride, halo


def _common_ndim(members: Sequence[Segmenter]) -> int:
    """The number of spatial axes of the members fixed to one (all members' when none is)."""
    fixed = [m for m in members if m.spatial_axes is not None]
    ndims = {len(tuple(getattr(m, k))) for m in (fixed or members) for k in ("stride", "halo")}
    if len(ndims) != 1 and fixed:
        described = ", ".join(f"{m.name}: stride {tuple(m.stride)}, halo {tuple(m.halo)}" for m in fixed)
        raise EnsembleError(
            f"ensemble members work on different numbers of spatial axes ({described}). Combine only "
            "2D members or only 3D members (wrap 2D models with SliceWise for volumes); members that "
            "segment any number of axes (thresholds, local thresholds) go with either."
        )
    return max(ndims)


def _per_axis(member: Segmenter, key: str, ndim: int) -> tuple[int, ...]:
    """``member``'s stride or halo (``key``) on ``ndim`` axes; one value on every axis of a
    member that segments any number of axes is repeated."""
    values = tuple(int(v) for v in getattr(member, key))
    if len(values) == ndim:
        return values
    if member.spatial_axes is None and len(set(values)) == 1:
        return (values[0],) * ndim
    raise EnsembleError(
        f"ensemble member {member.name} has {key} {values} on {len(values)} spatial axes, but the "
        f"other members work on {ndim}; expected one value per axis, or the same value on every "
        "axis for a member that segments any number of axes. Combine members made for the same "
        "number of spatial axes."
    )
