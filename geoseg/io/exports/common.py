"""What every export needs: a finished output opened for reading, and a destination that is
written in full, or not at all."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from fsspec.implementations.local import LocalFileSystem

from geoseg.core.classes import default_color
from geoseg.core.interrupts import deferred
from geoseg.core.urls import public_url
from geoseg.errors import (
    CorruptOutputError,
    ExportError,
    OutputExistsError,
    RasterNotFoundError,
)
from geoseg.io import files
from geoseg.io.allow import overlapping
from geoseg.io.georef import GeoRef
from geoseg.io.integrity import damage
from geoseg.io.output import (
    OutputTarget,
    being_removed,
    geoseg_attrs,
    half_deleted,
    output_exists,
)
from geoseg.io.readers import open_source
from geoseg.io.remote import check_writable
from geoseg.io.sources import ZarrSource


def shown(url: str) -> str:
    """``url`` as it may appear in messages: without user info, query or fragment."""

    return public_url(url)


@dataclass(frozen=True)
class FinishedOutput:
    """The ``classes`` array of a complete geoseg output, with its classes and georeference."""

    url: str
    source: ZarrSource
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int, int], ...]
    nodata_class: int
    background_class: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape: ``(y, x)`` or ``(z, y, x)``."""
        return tuple(self.source.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def georef(self) -> GeoRef:
        return self.source.georef

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.source.chunks)

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        """Class ids of a spatial window."""
        return self.source.read(window)[0]

    def array(self) -> zarr.Array:
        return self.source.open_array()

    def windows(self) -> Iterator[tuple[slice, ...]]:
        """One window per stored chunk, in C order."""
        return chunk_windows(self.shape, self.chunks)

    def require_ndim(self, ndim: int, fmt: str, advice: str) -> None:
        """Refuse an output of another dimensionality than ``fmt`` takes."""
        if len(self.shape) != ndim:
            dims = {2: "(y, x)", 3: "(z, y, x)"}
            raise ExportError(
                f"{shown(self.url)} holds {dims.get(len(self.shape), self.shape)} classes of shape "
                f"{self.shape}; {fmt} takes {dims[ndim]} ones. {advice}"
            )

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """Class id to RGBA; the no-data class is transparent."""
        colors = dict(enumerate(self.class_colors))
        colors[self.nodata_class] = (0, 0, 0, 0)
        return colors


def chunk_windows(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    """The windows of a regular chunk grid over ``shape``, in C order."""
    ranges = [range(0, n, c) for n, c in zip(shape, chunks)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, shape))


def open_finished(url: str, storage_options: dict[str, Any] | None = None) -> FinishedOutput:
    """Open a geoseg output whose job finished; refuse anything else with what to do."""
    so = dict(storage_options or {})
    if not output_exists(url, so):
        raise RasterNotFoundError(
            f"No output at {shown(url)}: nothing exists at that path. Give the "
            "output URL a job wrote (output.url in its spec)."
        )
    attrs = _geoseg_attrs(url, so)
    status = attrs.get("status")
    if being_removed(attrs):
        raise ExportError(half_deleted(url, "nothing was exported"))
    if status != "complete":
        raise ExportError(
            f"{shown(url)} is not finished (status {status!r}, expected 'complete'); nothing was "
            "exported. Run its job again to finish it (finished chunks are kept), then export; "
            f"`geoseg status {shown(url)}` shows how far it got."
        )
    problem = damage(OutputTarget(url, so), attrs, "nothing was exported")
    if problem:
        raise ExportError(problem)
    source = open_source(url, so, variable="classes")
    names = tuple(str(n) for n in attrs.get("class_names", []))
    colors = attrs.get("class_colors") or [default_color(i) for i in range(len(names))]
    return FinishedOutput(
        url=url,
        source=source,
        class_names=names,
        class_colors=tuple(_rgba(c) for c in colors),
        nodata_class=int(attrs.get("nodata_class", np.iinfo(source.dtype).max)),
        background_class=attrs.get("background_class"),
    )


def _geoseg_attrs(url: str, so: dict[str, Any]) -> dict[str, Any]:
    try:
        group = OutputTarget(url, dict(so)).open_group(mode="r")
        found, has_classes = group.attrs.get("geoseg"), "classes" in group
    except CorruptOutputError:
        raise
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.NodeTypeValidationError):
        found, has_classes = None, False
    attrs = geoseg_attrs(found, url)
    if not attrs or not has_classes:
        raise ExportError(
            f"{shown(url)} is not a geoseg output (no `geoseg` attributes or no "
            "`classes` array); export takes the Zarr group `geoseg run` wrote."
        )
    return attrs


def _rgba(color: Any) -> tuple[int, int, int, int]:
    values = [int(v) for v in color][:4]
    return tuple(values + [255] * (4 - len(values)))  # type: ignore[return-value]


def refuse_existing(
    dest: str,
    options: dict[str, Any] | None,
    overwrite: bool,
    what: str,
    *,
    source: str | None = None,
    source_options: dict[str, Any] | None = None,
    suffix: str = ".tif",
) -> None:
    """Refuse to replace ``dest`` unless ``overwrite``, a ``dest`` outside the allowed places,
    a ``dest`` inside (or holding) the output ``source`` it is exported from, a folder at
    ``dest`` whatever ``overwrite`` says, and a local ``dest`` whose folder cannot be written."""
    check_writable(dest)  # not http(s); no '..', allowed schemes and buckets (geoseg.io.allow)
    if source is not None:
        refuse_inside_output(dest, options, source, source_options, what, suffix)
    fs, path = fsspec.core.url_to_fs(dest, **(options or {}))
    if fs.isdir(path):
        raise ExportError(
            f"{what} destination {shown(dest)} is a folder; expected the name of a file to write, "
            f"such as {shown(dest.rstrip('/') + '/segmentation' + suffix)}. Nothing was written: "
            "give a file name (--overwrite replaces files, never folders).")
    if not overwrite and (output_exists(dest, options) or _dangling_link(dest, fs, path)):
        raise OutputExistsError(
            f"{what} {shown(dest)} already exists; nothing was written. Choose "
            "another path, or pass --overwrite (overwrite=True) to replace it."
        )
    files.probe_local_folder(dest)


def _dangling_link(dest: str, fs: Any, path: str) -> bool:
    """Whether a local ``dest`` is a symbolic link to nothing: it exists as a name, which the
    export would not replace, though no file is there."""
    return isinstance(fs, LocalFileSystem) and os.path.islink(path)


def refuse_inside_output(
    dest: str,
    options: dict[str, Any] | None,
    source: str,
    source_options: dict[str, Any] | None,
    what: str,
    suffix: str = ".tif",
) -> None:
    """Refuse a destination that is the output store ``source``, lies inside it or holds it:
    writing there would change (or replace) the store the export reads."""
    if not overlapping(dest, options, source, source_options):
        return
    raise ExportError(
        f"{what} destination {shown(dest)} is inside the output store {shown(source)} it is "
        f"exported from, or holds it; expected a place outside the store, such as "
        f"{shown(beside(source, dest, suffix))} beside it. Nothing was written: writing there "
        "would change the output it reads.")


def beside(store: str, dest: str, suffix: str) -> str:
    """A file name next to ``store``: ``dest``'s own name when it has ``suffix``, else the
    store's name with ``suffix`` (``mask.zarr`` -> ``mask.tif``)."""
    trimmed = store.rstrip("/")
    parent, _, store_name = trimmed.rpartition("/")
    own = dest.rstrip("/").rpartition("/")[2]
    stem = store_name.removesuffix(".zarr")
    name = own if own.endswith(suffix) and own != store_name else stem + suffix
    return f"{parent}/{name}" if parent or trimmed.startswith("/") else name


@contextlib.contextmanager
def held_until_written(dest: str) -> Iterator[None]:
    """SIGINT and SIGTERM held while the block puts ``dest`` in place
    (:func:`~geoseg.core.interrupts.deferred`), so that a stop never leaves it halfway; one taken
    meanwhile is raised when the block ends, marked ``written`` (``dest``) when the block
    succeeded: ``dest`` is whole, so the command says so (a rerun would refuse it as existing,
    not finish it)."""
    done = False
    try:
        with deferred():
            yield
            done = True
    except KeyboardInterrupt as exc:
        if done:
            exc.written = dest  # type: ignore[attr-defined]
        raise


@contextlib.contextmanager
def published(dest: str, options: dict[str, Any] | None, overwrite: bool) -> Iterator[Path]:
    """:func:`~geoseg.io.files.staged_file`, whose last step (the move into place and the
    scratch folder's removal) runs with signals held (:func:`held_until_written`)."""
    with contextlib.ExitStack() as hold, files.staged_file(dest, options, overwrite) as staged:
        yield staged
        hold.enter_context(held_until_written(dest))
