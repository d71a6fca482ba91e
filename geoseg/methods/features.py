"""What a classical method looks at: one band, a normalized difference, the band mean.

Also the base class the pixel methods share: inputs are prepared in float64 (so
integer rasters up to 2**53 and float64 rasters keep every value) and scores are
one-hot where a method has no natural probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.core.segmenter import Segmenter, valid_mask
from geoseg.core.text import as_whole
from geoseg.errors import BandMismatchError, MethodParameterError

KINDS = ("single", "band", "ndiff", "mean")
FeatureLike = Any  # None | int | (int, int) | "mean" | Feature


@dataclass(frozen=True)
class Feature:
    """A scalar per pixel computed from the bands of a window.

    Build one with :func:`as_feature` (``None``, ``3``, ``(4, 3)``, ``"mean"``) or
    the class methods. Band numbers are 1-based, as everywhere in geoseg.

    Attributes
    ----------
    kind
        ``"single"`` (the raster's only band), ``"band"``, ``"ndiff"``
        (``(a - b) / (a + b)``, undefined (NaN) where ``a + b == 0``, as at a black border:
        fits ignore those pixels and :func:`geoseg.segment` writes them as no data) or
        ``"mean"`` (mean of all bands).
    bands
        The 1-based band numbers used (``()`` for ``"single"`` and ``"mean"``).
    """

    kind: str = "single"
    bands: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        """Every way to build a feature comes here: the band numbers are checked (whole numbers,
        no float truncated, no bool read as 1) and kept as ``int``."""
        expected = {"single": 0, "band": 1, "ndiff": 2, "mean": 0}
        if self.kind not in expected:
            raise MethodParameterError(f"Feature kind {self.kind!r} is not one of {KINDS}.")
        bands = tuple(self.bands) if isinstance(self.bands, (tuple, list)) else None
        if bands is None or len(bands) != expected[self.kind]:
            raise MethodParameterError(
                f"Feature {self.kind!r} takes {expected[self.kind]} band number(s) >= 1 (1-based), "
                f"got {self.bands!r}."
            )
        numbers = tuple(as_whole(b) for b in bands)
        wrong = [b for b, n in zip(bands, numbers) if n is None or n < 1]
        if wrong:
            bad = wrong[0]
            raise MethodParameterError(
                f"feature: received band number {bad!r} ({type(bad).__name__}); expected a whole "
                f"number >= 1, a 1-based band number (e.g. 3 for band 3; a float is not truncated)."
            )
        if self.kind == "ndiff" and numbers[0] == numbers[1]:
            a = numbers[0]
            raise MethodParameterError(
                f"feature: received the pair ({a}, {a}), (b{a} - b{a}) / (b{a} + b{a}), 0 everywhere; "
                f"expected two different bands (a, b) for (a - b) / (a + b), e.g. ({a}, {a % 2 + 1}) "
                f"or ({a % 2 + 1}, {a}), or feature={a} for band {a} alone."
            )
        object.__setattr__(self, "bands", numbers)

    @classmethod
    def band(cls, number: int) -> Feature:
        return cls("band", (number,))

    @classmethod
    def ndiff(cls, a: int, b: int) -> Feature:
        return cls("ndiff", (a, b))

    @classmethod
    def mean(cls) -> Feature:
        return cls("mean")

    def describe(self) -> str:
        if self.kind == "band":
            return f"band {self.bands[0]}"
        if self.kind == "ndiff":
            a, b = self.bands
            return f"(b{a} - b{b}) / (b{a} + b{b})"
        return "the mean of the bands" if self.kind == "mean" else "the only band"

    def check(self, n_bands: int, where: str = "the input") -> None:
        """Raise :class:`BandMismatchError` when ``n_bands`` cannot feed this feature."""
        if self.kind == "single" and n_bands != 1:
            raise BandMismatchError(
                f"No feature was given, which means the raster's only band, but {where} has "
                f"{n_bands} bands. {_feature_advice(n_bands)}"
            )
        too_high = [b for b in self.bands if b > n_bands]
        if too_high:
            raise BandMismatchError(
                f"Feature {self.describe()} uses band(s) {too_high} but {where} has "
                f"{n_bands} band(s); "
                f"band numbers are 1-based, from 1 to {n_bands}."
            )

    def integer_exact(self, dtype: np.dtype) -> bool:
        """True when values are the raster's own integers (exact integer histograms)."""
        return np.issubdtype(np.dtype(dtype), np.integer) and self.kind in ("single", "band")

    def compute(self, x: np.ndarray, band_axis: int = -3, undefined: float = np.nan) -> np.ndarray:
        """The feature of ``x`` as float64, the band axis removed: ``band_axis=0`` for a block
        ``(band, ...)``, ``1`` for a batch ``(tile, band, ...)``; the default ``-3`` reads
        ``(..., band, y, x)``. A normalized difference is ``undefined`` (NaN by default) where
        ``a + b == 0``; filters over neighbourhoods pass 0, the value no-data pixels get."""
        x = np.moveaxis(x, band_axis, 0)
        self.check(x.shape[0])
        if self.kind in ("single", "band"):
            index = 0 if self.kind == "single" else self.bands[0] - 1
            return x[index].astype(np.float64, copy=False)
        if self.kind == "mean":
            return x.astype(np.float64).mean(axis=0)
        a = x[self.bands[0] - 1].astype(np.float64, copy=False)
        b = x[self.bands[1] - 1].astype(np.float64, copy=False)
        total = a + b
        safe = np.where(total == 0, 1.0, total)
        return np.where(total == 0, undefined, (a - b) / safe)

    def defined(self, x: np.ndarray, band_axis: int = -3) -> np.ndarray:
        """True where the feature of ``x`` is defined: everywhere but where a normalized
        difference divides by ``a + b == 0`` (0/0 at a black border holds no measurement)."""
        x = np.moveaxis(x, band_axis, 0)
        if self.kind != "ndiff":
            return np.ones(x.shape[1:], bool)
        self.check(x.shape[0])
        a = x[self.bands[0] - 1].astype(np.float64, copy=False)
        return a + x[self.bands[1] - 1].astype(np.float64, copy=False) != 0


def as_feature(spec: FeatureLike) -> Feature:
    """``None`` (the only band), ``n`` (band n, 1-based), ``(a, b)`` (normalized difference),
    ``"mean"``, or a :class:`Feature`."""
    if isinstance(spec, Feature):
        return spec
    if spec is None:
        return Feature()
    if isinstance(spec, str) and spec.lower() == "mean":
        return Feature.mean()
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return Feature.band(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 2:
        return Feature.ndiff(spec[0], spec[1])
    raise MethodParameterError(
        f"feature={spec!r} is not understood; use None (the raster's only band), an int (a 1-based "
        f"band number), a pair (a, b) for (a - b) / (a + b), or 'mean'."
    )


class PixelMethod(Segmenter):
    """Base of the classical methods: float64 inputs, no stride, no halo unless a method needs
    one, travels as itself."""

    stride: tuple[int, ...] = (1, 1)
    halo: tuple[int, ...] = (0, 0)

    @property
    def bands(self) -> tuple[str, ...] | None:  # type: ignore[override]
        """The bands of the raster it was fitted on (its ``band_names``), or ``None`` for any."""
        return getattr(self, "band_names", None)

    def prepare(
        self, raw: np.ndarray, nodata: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`Segmenter.prepare` but float64, so no input value is rounded; a pixel
        where the method's feature is undefined (:meth:`Feature.defined`) is no data too."""
        x = raw.astype(np.float64, copy=True)
        valid = valid_mask(raw, nodata)
        defined = self.defined(x)
        if defined is not None:
            valid &= defined
        x[:, ~valid] = 0.0
        return x, valid

    def defined(self, raw: np.ndarray) -> np.ndarray | None:
        """Where the method's feature is defined (:meth:`Feature.defined`)."""
        feature = getattr(self, "feature", None)
        return feature.defined(raw, band_axis=0) if isinstance(feature, Feature) else None

    def check_bands(self, band_names: Sequence[str], where: str) -> None:
        """Fail before any compute when the method's feature cannot use ``where``'s bands."""
        super().check_bands(band_names, where)
        feature = getattr(self, "feature", None)
        if isinstance(feature, Feature):
            feature.check(len(band_names), where)


def one_hot(ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores ``(N, n_classes, y, x)``: 1 for the class in ``ids`` (``(N, y, x)``), else 0."""
    scores = np.zeros((ids.shape[0], n_classes) + ids.shape[1:], np.float32)
    for c in range(n_classes):
        scores[:, c] = ids == c
    return scores


def class_infos(names: Sequence[str]) -> tuple[Any, ...]:
    """ClassInfo tuples with a grey ramp of colours, dark to bright."""
    from geoseg.core.classes import ClassInfo

    n = len(names)
    grey = [round(255 * i / max(1, n - 1)) for i in range(n)]
    return tuple(ClassInfo(str(name), (g, g, g)) for name, g in zip(names, grey))


def _feature_advice(n_bands: int) -> str:
    """Which features an input of ``n_bands`` (>= 2) bands can give, by its own band numbers."""
    pairs = "feature=(2, 1) for (b2 - b1) / (b2 + b1)"
    alpha = (" (a grey image with an alpha channel, as PNG and TIFF hold it, has its values in "
             "band 1)" if n_bands == 2 else "")
    return (f"Pass feature=N for band N (1-based, 1 to {n_bands}), e.g. feature=1{alpha}, "
            f"{pairs}, or feature='mean'.")
