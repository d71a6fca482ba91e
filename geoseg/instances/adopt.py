"""A mask geoseg did not write, copied into a geoseg output so the instance stage can label it.

Any single-band integer raster geoseg reads (Zarr, GeoTIFF/COG, NIfTI, ...)
becomes the ``classes`` of a new output group, chunk by chunk, with its
georeference, each chunk recorded in the manifest like a job's; class ``k`` is
named ``"k"``.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from geoseg.core.urls import public_url
from geoseg.errors import InstanceError, OutputExistsError
from geoseg.instances.stage import InstanceReport, InstanceSettings, label_output, routes
from geoseg.io.integrity import damage
from geoseg.io.output import OutputTarget, chunk_checksum, chunk_key, create_output, output_exists
from geoseg.io.readers import open_source
from geoseg.io.sources import RasterSource
from geoseg.io.stages import stage_record
from geoseg.tiling.plan import regions

MAX_CLASSES = 65536


def adopt_mask(url: str, out: str, *, variable: str | None = None,
               storage_options: dict[str, Any] | None = None,
               overwrite: bool = False) -> OutputTarget:
    """Copy the mask at ``url`` into a new output group at ``out``; returns its target."""
    source = open_source(url, storage_options, variable=variable)
    _check(source, url)
    n_classes = _n_classes(source)
    chunks = tuple(min(c, n) for c, n in zip(source.chunks, source.shape[1:]))
    dtype = "uint8" if n_classes <= 256 else "uint16"
    target = create_output(
        out, shape=source.shape[1:], chunks=chunks, georef=source.georef,
        class_names=[str(k) for k in range(n_classes)], class_dtype=dtype,
        nodata_class=n_classes - 1 if n_classes == MAX_CLASSES else 0, overwrite=overwrite,
        attrs={"status": "running", "job_identity": f"mask:{url}", "model": f"mask {url}",
               "n_chunks": len(list(regions(source.shape[1:], chunks)))})
    copies = [dask.delayed(_copy)(source, target, window, chunks, dtype)
              for window in regions(source.shape[1:], chunks)]
    dask.compute(*copies)
    target.finalize({"status": "complete"})
    return target


def _check(source: RasterSource, url: str) -> None:
    if source.shape[0] != 1 or not np.issubdtype(np.dtype(source.dtype), np.integer):
        raise InstanceError(
            f"{url}: received {source.shape[0]} band(s) of {source.dtype}; instances need one band "
            "of integer class ids (or 0/1). Threshold a score raster first, or pick one array "
            "with --variable.")


def _extent(source: RasterSource, window: tuple[slice, ...]) -> tuple[int, int]:
    block = source.read(window)
    return (int(block.min()), int(block.max())) if block.size else (0, 0)


def _n_classes(source: RasterSource) -> int:
    """One more than the largest class id (a pass over the mask, chunk by chunk)."""
    found = dask.compute(*[dask.delayed(_extent)(source, w)
                           for w in regions(source.shape[1:], source.chunks)])
    low, high = min((f[0] for f in found), default=0), max((f[1] for f in found), default=0)
    if low < 0 or high >= MAX_CLASSES:
        raise InstanceError(f"mask values run from {low} to {high}; expected class ids from 0 "
                            f"to {MAX_CLASSES - 1}.")
    return max(high + 1, 2)


def _copy(source: RasterSource, target: OutputTarget, window: tuple[slice, ...],
          chunks: tuple[int, ...], dtype: str) -> None:
    block = source.read(window)[0].astype(dtype)
    target.write("classes", window, block)
    target.mark_done(chunk_key(window, chunks), chunk_checksum(block))


def _keep_other_instances(target: OutputTarget, settings: InstanceSettings, overwrite: bool) -> None:
    """Refuse to replace finished instances made with other settings unless ``overwrite``."""
    done = stage_record(target, "instances")
    before, now = done.get("settings") or {}, settings.record()
    if overwrite or done.get("status") != "complete" or before == now:
        return
    changed = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in now.items()
                        if before.get(k) != v)
    raise OutputExistsError(
        f"{public_url(target.url)} already holds {done.get('count')} instance(s) made with other "
        f"settings ({changed}); nothing was changed. Pass --overwrite (overwrite=True) to "
        "replace them, or rerun with the same settings.")


def label_mask(url: str, settings: InstanceSettings, *, out: str | None = None,
               variable: str | None = None, storage_options: dict[str, Any] | None = None,
               overwrite: bool = False) -> tuple[OutputTarget, InstanceReport]:
    """The instance stage on a geoseg output (in place), or on any mask copied to ``out`` first."""
    target = OutputTarget(url, dict(storage_options or {}))
    attrs = target.attrs() if output_exists(url, storage_options) else {}
    if "job_identity" in attrs:
        if attrs.get("status") != "complete":
            raise InstanceError(f"{url} is a geoseg output whose run has not finished (status "
                                f"{attrs.get('status')!r}); finish it with geoseg run first.")
        problem = damage(target, attrs, "no instances were labelled")
        if problem:
            raise InstanceError(problem)
        if out is not None:
            raise InstanceError(f"{url} is a geoseg output: its instances are written into it; "
                                "drop --out.")
        _keep_other_instances(target, settings, overwrite)
    elif out is None:
        raise InstanceError(f"{url} was not written by geoseg; give --out OUT.zarr, where its "
                            "classes and instances will be written.")
    else:
        target = adopt_mask(url, out, variable=variable, storage_options=storage_options,
                            overwrite=overwrite)
    georef = open_source(target.url, target.storage_options, variable="classes").georef
    routes(settings, target.attrs()["class_names"], target.attrs().get("nodata_class"),
           target.attrs().get("instances_decoding", ()))
    report = label_output(target, settings, georef=georef)
    target.finalize({})
    return target, report
