"""A job checked against its data and segmenter, before anything is written: what
:func:`geoseg.jobs.prepare` returns, and what the checks, the run record and the runner read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from geoseg.core.segmenter import Segmenter
from geoseg.io.sources import RasterSource
from geoseg.jobs.spec import JobSpec
from geoseg.models.header import ModelHeader
from geoseg.parallel.executor import ReferenceLabels
from geoseg.parallel.tasks import RegionWork
from geoseg.tiling import Layout
from geoseg.tiling.plan import n_regions


@dataclass(frozen=True)
class PreparedJob:
    """A job checked against its data and segmenter, before anything is written.

    ``model`` and ``work`` are ``None`` while a classical method still has to be
    fitted on the input (:func:`geoseg.jobs.runner.fit_methods` does that, on the active
    cluster).
    """

    spec: JobSpec
    source: RasterSource
    model: Segmenter | None
    work: RegionWork | None
    reference: ReferenceLabels | None = None  # the labels evaluate.reference names, checked

    @property
    def model_id(self) -> str:
        """The weights' sha256 for a model file; else a hash of the model spec and of every
        model file's weights inside it."""
        if isinstance(self.model, ModelHeader):
            return self.model.info.sha256
        what = {"model": self.spec.model.model_dump(mode="json", exclude={"storage_options"}),
                "weights": [m.info.sha256 for m in model_files(self.model)]}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def chunks(self) -> tuple[int, ...]:
        """What one task computes and writes: whole output chunks (or shards when sharding),
        as many as keep halos cheap (:meth:`~geoseg.tiling.Plan.create`); one
        chunk or shard while a classical method still has to be fitted."""
        return self.work.region if self.work is not None else self.layout.shards

    @property
    def inner_chunks(self) -> tuple[int, ...]:
        """The Zarr chunks of the output arrays, clipped to the raster."""
        return self.layout.chunks

    @property
    def layout(self) -> Layout:
        """The output's Zarr chunks and the shards (or chunks) tasks write whole."""
        return output_layout(self.spec, self.source)

    @property
    def n_tasks(self) -> int:
        return n_regions(self.source.shape[1:], self.chunks)


def model_files(segmenter: Any) -> list[ModelHeader]:
    """Every model file inside an ensemble or TTA wrapper, depth first."""
    if isinstance(segmenter, ModelHeader):
        return [segmenter]
    inner = list(getattr(segmenter, "members", ())) + [getattr(segmenter, "member", None)]
    return [m for part in inner if part is not None for m in model_files(part)]


def output_layout(spec: JobSpec, source: RasterSource) -> Layout:
    """The output's Zarr chunks and shards the spec asks for, clipped to the raster."""
    return Layout.create(source.shape[1:], spec.output.chunks, spec.output.shards)
