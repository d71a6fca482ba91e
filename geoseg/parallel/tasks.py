"""The task payloads: small, picklable descriptions of a region's work.

A task carries a model *reference*, a raster *source* and arithmetic (the
:class:`~geoseg.tiling.plan.Tiling`, a region); the model is resolved from the worker's per-process cache and
pixels are read from storage inside the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.tiling.plan import Tiling

if TYPE_CHECKING:
    from geoseg.parallel.region import Reader, RegionResult

OUTPUTS = ("classes", "probabilities")


@dataclass(frozen=True)
class RegionWork:
    """What every region of one segmentation shares.

    ``region`` is what one task computes and writes (whole output chunks); ``compile`` runs
    deep networks through ``torch.compile`` on the workers."""

    model: Any  # a ModelRef, or a small segmenter that travels as itself
    tiling: Tiling
    nodata: float | None
    batch_size: int
    nodata_class: int
    class_dtype: str
    region: tuple[int, ...] = ()
    compile: bool = False

    @property
    def windows_reach_past_regions(self) -> bool:
        """Halos or blended windows: neighbouring regions read some of the same input chunks
        (worth a read cache)."""
        return self.tiling.blend != "crop" or any(self.tiling.halo)

    def segmenter(self) -> Any:
        # imported here, on the worker that runs the task: a scheduler unpickling it loads no torch
        from geoseg.models.cache import resolve
        from geoseg.models.header import model_refs
        from geoseg.parallel import malloc

        if any(model_refs(self.model)):  # a network's activations: see geoseg.parallel.malloc
            malloc.for_networks()
        segmenter = resolve(self.model)
        return segmenter.compile() if self.compile else segmenter

    def run(self, read: Reader, region: tuple[slice, ...],
            probabilities: str | None = None) -> RegionResult:
        """Class ids of ``region`` (and probabilities of dtype ``probabilities``, if given)."""
        from geoseg.parallel.region import RegionOutput, segment_region

        output = RegionOutput(self.nodata_class, self.class_dtype, probabilities)
        return segment_region(self.segmenter(), read, self.tiling, region, output=output,
                              nodata=self.nodata, batch_size=self.batch_size,
                              full_batches=self.compile)

    def block(self, read: Reader, region: tuple[slice, ...], output: str) -> np.ndarray:
        """The ``output`` ("classes" or "probabilities", float32) of one region."""
        if output == "classes":
            return self.run(read, region).classes
        return self.run(read, region, probabilities="float32").probabilities

    def block_from_array(self, data: np.ndarray, origin: tuple[int, ...], region: tuple[slice, ...],
                         output: str) -> np.ndarray:
        """Like :meth:`block`, with pixels already in memory starting at ``origin``."""
        return self.block(ArrayReader(data, origin), region, output)


@dataclass(frozen=True)
class ArrayReader:
    """Reads windows of an in-memory block whose first pixel is at ``origin``."""

    data: np.ndarray
    origin: tuple[int, ...]

    def __call__(self, window: tuple[slice, ...]) -> np.ndarray:
        local = tuple(slice(w.start - o, w.stop - o) for w, o in zip(window, self.origin))
        return self.data[(slice(None),) + local]
