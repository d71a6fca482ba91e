"""The task payloads: small, picklable descriptions of a region's work.

A task carries a model *reference*, a raster *source* and arithmetic (the tiling
spec, a region); the model is resolved from the worker's per-process cache and
pixels are read from storage inside the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.models.base import class_ids
from geoseg.models.cache import resolve
from geoseg.parallel.region import Reader, RegionResult, segment_region
from geoseg.tiling.plan import TilingSpec

OUTPUTS = ("classes", "probabilities")


@dataclass(frozen=True)
class RegionWork:
    """What every region of one segmentation shares."""

    model: Any  # a ModelRef, or a small segmenter that travels as itself
    spec: TilingSpec
    nodata: float | None
    batch_size: int
    nodata_class: int
    class_dtype: str

    def run(self, read: Reader, region: tuple[slice, ...]) -> RegionResult:
        segmenter = resolve(self.model)
        return segment_region(segmenter, read, self.spec, region, nodata=self.nodata,
                              batch_size=self.batch_size)

    def classes(self, result: RegionResult) -> np.ndarray:
        return class_ids(result.scores, result.valid, self.nodata_class, np.dtype(self.class_dtype))

    def block(self, read: Reader, region: tuple[slice, ...], output: str) -> np.ndarray:
        """The ``output`` ("classes" or "probabilities") of one region."""
        result = self.run(read, region)
        if output == "classes":
            return self.classes(result)
        return probabilities(result)

    def block_from_array(self, data: np.ndarray, origin: tuple[int, ...], region: tuple[slice, ...],
                         output: str) -> np.ndarray:
        """Like :meth:`block`, with pixels already in memory starting at ``origin``."""
        return self.block(ArrayReader(data, origin), region, output)


def probabilities(result: RegionResult) -> np.ndarray:
    """Scores with NaN where the input had no data."""
    scores = result.scores.copy()
    scores[:, ~result.valid] = np.nan
    return scores


@dataclass(frozen=True)
class ArrayReader:
    """Reads windows of an in-memory block whose first pixel is at ``origin``."""

    data: np.ndarray
    origin: tuple[int, ...]

    def __call__(self, window: tuple[slice, ...]) -> np.ndarray:
        local = tuple(slice(w.start - o, w.stop - o) for w, o in zip(window, self.origin))
        return self.data[(slice(None),) + local]
