"""A mask geoseg did not write, copied into a geoseg output so the instance stage can label it.

Any single-band integer raster geoseg reads (Zarr, GeoTIFF/COG, NIfTI, ...)
becomes the ``classes`` of a new output group, chunk by chunk, with its
georeference, each chunk recorded in the manifest like a job's. Classes keep the
names and the background class a GeoTIFF geoseg exported was tagged with (``CLASS_NAMES``,
``CLASS_<id>``, ``BACKGROUND_CLASS``), as the output it came from (nodata no class of them,
every class but the background an object class by default); otherwise class ``k`` is named
``"k"`` (the declared nodata, where it lies among the classes' ids, ``"nodata"``), and 0 is
background by default. Class ids are kept; a nodata above them (255, 65535) is no class, as
in a job's output. A mask that declares no nodata, or one that is no class id (-9999, whose
pixels are no data all the same), gets a nodata class no class has (255, or 65535 beyond 255
classes, as a job's output), so no class reads as no-data in its exports.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any

import dask
import fsspec
import numpy as np

from geoseg.core.classes import is_label_dtype
from geoseg.core.urls import public_url
from geoseg.errors import InstanceError, RasterNotFoundError
from geoseg.instances.stage import (
    InstanceReport,
    InstanceSettings,
    label_output,
    routes,
)
from geoseg.io import remote
from geoseg.io.allow import overlapping
from geoseg.io.integrity import damage
from geoseg.io.output import OutputTarget, chunk_checksum, chunk_key, create_output, output_exists
from geoseg.io.readers import open_source
from geoseg.io.sources import GeoTIFFSource, RasterSource, ZarrSource
from geoseg.tiling import default_chunks
from geoseg.tiling.plan import regions

MAX_CLASSES = 65536
log = logging.getLogger("geoseg.instances")


def adopt_mask(url: str, out: str, *, variable: str | None = None,
               storage_options: dict[str, Any] | None = None, overwrite: bool = False,
               settings: InstanceSettings | None = None) -> OutputTarget:
    """Copy the mask at ``url`` into a new output group at ``out``; returns its target.

    The mask's declared nodata (GeoTIFF nodata, a Zarr array's ``_FillValue``) becomes the
    output's nodata class; beside it, in a mask whose classes are not named, 0 stays a class
    (``--classes 0``) but is background, no object, by default. A mask whose tags name its
    classes (as ``geoseg export --cog`` writes them) has the default of a job's output: every
    class but nodata and one named ``background``. ``settings`` are checked against the
    mask's classes before anything is written."""
    source = open_source(url, storage_options, variable=variable)
    _check(source, url)
    declared = _declared_nodata(source)
    nodata = declared if declared is not None and 0 <= declared < MAX_CLASSES else None
    tagged, tagged_background = _tags(source)
    n_classes = _n_classes(source, url, declared, tagged or ())
    nodata_class = nodata if nodata is not None else _free_nodata(n_classes)
    background = _background(tagged, tagged_background, n_classes, nodata_class)
    class_names = _class_names(n_classes, nodata, tagged)
    if settings is not None:
        routes(settings, class_names, nodata_class, (), ndim=len(source.shape) - 1,
               background=background)
    chunks = output_chunks(source)
    dtype = "uint8" if max(n_classes - 1, nodata_class) <= 255 else "uint16"
    extra = {} if background is None else {"background_class": background}
    target = create_output(
        out, shape=source.shape[1:], chunks=chunks, georef=source.georef,
        class_names=class_names, class_dtype=dtype,
        nodata_class=nodata_class, overwrite=overwrite,
        attrs={"status": "running", "job_identity": f"mask:{url}", "model": f"mask {url}",
               "n_chunks": len(list(regions(source.shape[1:], chunks))), **extra})
    remap = None if declared in (None, nodata_class) else (declared, nodata_class)
    copies = [dask.delayed(_copy)(source, target, window, chunks, dtype, remap)
              for window in regions(source.shape[1:], chunks)]
    dask.compute(*copies)
    target.finalize({"status": "complete"})
    return target


def output_chunks(source: RasterSource) -> tuple[int, ...]:
    """The chunks of the adopted classes: the source's own (one read each), unless they are
    single planes or rows on a longer axis (an uncompressed NIfTI's planes, a one-row-strip
    GeoTIFF), which would make every object span thousands of chunks: then the output default,
    128 per axis for volumes, 1024 for images, each read as a window."""
    shape = source.shape[1:]
    own = tuple(min(c, n) for c, n in zip(source.chunks, shape))
    if any(c == 1 < n for c, n in zip(own, shape)):
        return default_chunks(shape)
    return own


def _class_names(n_classes: int, nodata: int | None,
                 tagged: tuple[str, ...] | None = None) -> list[str]:
    """Class ``k`` named as the mask's tags name it, else ``"k"``; the declared nodata
    ``"nodata"`` (``--classes`` takes ids too)."""
    named = list(tagged or ())
    return ["nodata" if k == nodata else named[k] if k < len(named) else str(k)
            for k in range(n_classes)]


def _tags(source: RasterSource) -> tuple[tuple[str, ...] | None, int | None]:
    """The class names and background class a GeoTIFF's tags give (as ``geoseg export --cog``
    writes them from the output it came from)."""
    if not isinstance(source, GeoTIFFSource):
        return None, None
    from geoseg.io.exports.cog import read_background_class, read_class_names

    return read_class_names(source), read_background_class(source)


def _background(tagged: tuple[str, ...] | None, tagged_background: int | None, n_classes: int,
                nodata_class: int) -> int | None:
    """The class that is no object by default: the one a geoseg GeoTIFF's tags name (its
    output's), else, in a mask whose classes are not named, 0 (unless 0 is its nodata)."""
    if tagged:
        keep = tagged_background is not None and tagged_background < n_classes \
            and tagged_background != nodata_class
        return tagged_background if keep else None
    return 0 if nodata_class != 0 else None


def _free_nodata(n_classes: int) -> int:
    """A nodata class for a mask that declares none: the top of its class dtype (255, or 65535
    beyond 255 classes), which no pixel holds, as a job's default. A mask whose ids reach 65535
    has no free id: its top id is then taken as nodata (and a warning says so)."""
    top = 255 if n_classes <= 255 else MAX_CLASSES - 1
    if n_classes > top:
        log.warning("the mask declares no nodata and its class ids reach %d: class %d is taken "
                    "as the nodata class (declare a nodata value in the mask to choose another)",
                    top, top)
    return top


def _declared_nodata(source: RasterSource) -> int | None:
    """The mask's declared nodata, if it declares a whole number. One that is a class id (0 to
    65535) is the output's nodata class; another (-9999) is no data all the same: its pixels
    become the output's nodata class (:func:`_free_nodata`), as a job's no-data pixels do."""
    value = source.georef.nodata
    if value is None or not np.isfinite(value) or float(value) != int(value):
        return None
    return int(value)


def _check(source: RasterSource, url: str) -> None:
    if source.shape[0] != 1 or not is_label_dtype(source.dtype):
        raise InstanceError(
            f"{public_url(url)}: received {source.shape[0]} band(s) of {source.dtype}; instances "
            "need one band of integer class ids (or booleans). " + _advice(source))


def _advice(source: RasterSource) -> str:
    """How to make ``source`` one band of class ids: a Zarr read as several bands may be a
    volume whose axes are not named (read as band, y, x)."""
    if isinstance(source, ZarrSource) and source.shape[0] > 1 and len(source.shape) == 3:
        return ("A Zarr array whose dimensions are not named z, y, x is read as (band, y, x); "
                "if it is a volume, name them: Zarr v3 dimension_names [\"z\", \"y\", \"x\"] "
                "(zarr.create_array(..., dimension_names=[\"z\", \"y\", \"x\"]), or the "
                "\"dimension_names\" entry of its zarr.json), Zarr v2 the attribute "
                "_ARRAY_DIMENSIONS: [\"z\", \"y\", \"x\"] (as xarray writes it). Else pick one "
                "array with --variable.")
    return "Threshold a score raster first, or pick one array with --variable."


def _extent(source: RasterSource, window: tuple[slice, ...], nodata: int | None) -> tuple[int, int]:
    """The smallest and largest class id of the window, its ``nodata`` pixels left out."""
    block = source.read(window)
    if nodata is not None:
        block = block[block != nodata]
    return (int(block.min()), int(block.max())) if block.size else (0, 0)


def _n_classes(source: RasterSource, url: str, nodata: int | None = None,
               named: tuple[str, ...] = ()) -> int:
    """One more than the largest class id but the declared ``nodata`` (a pass over the mask,
    chunk by chunk): class ``k`` keeps id ``k``, and a nodata above every class (255, 65535)
    is no class, as in a job's output, not the last of thousands of empty ones. A mask whose
    tags name its classes has those too (and any id beyond them)."""
    found = dask.compute(*[dask.delayed(_extent)(source, w, nodata)
                           for w in regions(source.shape[1:], source.chunks)])
    low, high = min((f[0] for f in found), default=0), max((f[1] for f in found), default=0)
    if low < 0 or high >= MAX_CLASSES:
        declared = "no nodata" if nodata is None else f"nodata {nodata}, left out"
        raise InstanceError(
            f"{public_url(url)}: received mask values from {low} to {high} (it declares "
            f"{declared}); expected class ids from 0 to {MAX_CLASSES - 1}. Remap the classes "
            "into that range first, or declare the value that marks no data as the mask's "
            "nodata (e.g. gdal_edit.py -a_nodata -9999 mask.tif), then rerun.")
    return max(high + 1, len(named), 2)


def _copy(source: RasterSource, target: OutputTarget, window: tuple[slice, ...],
          chunks: tuple[int, ...], dtype: str, remap: tuple[int, int] | None = None) -> None:
    """One window of the mask into the output's classes; ``remap``: (declared nodata, nodata
    class) where the declared nodata is no class id."""
    block = source.read(window)[0]
    if remap is not None:
        block = np.where(block == remap[0], remap[1], block)
    block = block.astype(dtype)
    target.write("classes", window, block)
    target.mark_done(chunk_key(window, chunks), chunk_checksum(block))


def destination(url: str, out: str | None, storage_options: dict[str, Any] | None = None) -> str:
    """Where the instances of the mask at ``url`` are written: into it when geoseg wrote it
    (then ``out`` is refused), else into ``out``, which a mask of another origin needs."""
    with remote.storage_errors(url, storage_options, "Reading"):
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        found = remote.exists(fs, path.rstrip("/"))
    if not found:
        raise RasterNotFoundError(f"No mask at {public_url(url)}: nothing is there. Check the "
                                  "path (and storage options for a remote store).")
    written = output_exists(url, storage_options) and "job_identity" in OutputTarget(
        url, dict(storage_options or {})).attrs()
    if written and out is not None:
        raise InstanceError(f"{url} is a geoseg output: its instances are written into it; "
                            "drop --out.")
    if not written and out is None:
        raise InstanceError(f"{url} was not written by geoseg; give --out OUT.zarr, where its "
                            "classes and instances will be written.")
    if not written and overlapping(str(out), storage_options, url, storage_options):
        raise InstanceError(
            f"--out {public_url(str(out))} is the mask {public_url(url)} it would read, or lies "
            "inside it (or holds it); expected a new output group apart from the mask, where its "
            "classes and instances are written. Nothing was written: give another --out, such "
            f"as {posixpath.splitext(public_url(url).rstrip('/'))[0]}-instances.zarr.")
    return url if written else str(out)


def label_mask(url: str, settings: InstanceSettings, *, out: str | None = None,
               variable: str | None = None, storage_options: dict[str, Any] | None = None,
               overwrite: bool = False) -> tuple[OutputTarget, InstanceReport]:
    """The instance stage on a geoseg output (in place), or on any mask copied to ``out`` first."""
    target = OutputTarget(url, dict(storage_options or {}))
    if destination(url, out, storage_options) == url:
        attrs = target.attrs()
        if attrs.get("status") != "complete":
            raise InstanceError(f"{url} is a geoseg output whose run has not finished (status "
                                f"{attrs.get('status')!r}); finish it with geoseg run first.")
        problem = damage(target, attrs, "no instances were labelled")
        if problem:
            raise InstanceError(problem)
    else:
        target = adopt_mask(url, out, variable=variable, storage_options=storage_options,
                            overwrite=overwrite, settings=settings)
    georef = open_source(target.url, target.storage_options, variable="classes").georef
    report = label_output(target, settings, georef=georef, overwrite=overwrite)
    target.finalize({})
    return target, report
