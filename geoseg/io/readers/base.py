"""The reader contract: a :class:`Reader` recognises a format and describes a URL of it as a
:class:`RasterSource`, a small picklable description of where pixels live and how to read a window.

A task carries a source and a window and reads its own pixels straight from storage on
whichever worker runs it; the client only ever reads metadata. Storage options travel with
the source (workers need them) but are excluded from ``repr`` and comparisons so they never
reach logs or errors.

A new format is one module with a ``Reader`` subclass (and its ``RasterSource`` subclass),
registered under the entry-point group ``geoseg.readers`` (see ``docs/examples/reader_npy.py``).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from geoseg import budgets
from geoseg.core.urls import public_url
from geoseg.errors import BandMismatchError, UnsupportedFormatError
from geoseg.io import faults, remote
from geoseg.io.georef import GeoRef

BAND, DROP, SPACE = "band", "drop", "space"  # what an axis of a stored array is to geoseg


@dataclass(frozen=True)
class RasterSource:
    """Common fields. ``shape`` is ``(band, y, x)`` for images and ``(band, z, y, x)`` for
    volumes, after band selection; ``chunks`` is the storage chunking of the spatial axes."""

    url: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    georef: GeoRef
    band_names: tuple[str, ...]
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    read_cache: str | None = field(default=None, compare=False, repr=False)
    # one stored chunk's shape, every array axis it spans (a band axis too), which any read
    # touching it decodes whole; () when unknown. Budgeted by GEOSEG_MAX_CHUNK_BYTES.
    stored_chunk: tuple[int, ...] = field(default=(), compare=False, repr=False)
    # one run's name (:meth:`for_run`), under which a process keeps what it opened for the run
    run: str | None = field(default=None, compare=False, repr=False)

    def for_run(self) -> RasterSource:
        """This source under a name of its own for one run's reads: what a process keeps open
        for the run (a Zarr array's metadata, read once rather than by every task) is kept
        under it, so no run sees what another opened (the input may have changed since)."""
        return dataclasses.replace(self, run=uuid.uuid4().hex)

    def with_read_cache(self) -> RasterSource:
        """This source reading through the per-process cache of decoded chunks
        (:mod:`geoseg.io.blockcache`) under a new name: one run's reads share chunks, and no
        run sees blocks an earlier run cached (the data may have changed since)."""
        return dataclasses.replace(self, read_cache=uuid.uuid4().hex)

    def __repr__(self) -> str:
        """The fields, the URL in its public form: a signed URL's query is a credential, and a
        source's repr may reach a log (a worker's report of a failed task shows its arguments)."""
        shown = (f"{f.name}={public_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
                 for f in dataclasses.fields(self) if f.repr)
        return f"{type(self).__name__}({', '.join(shown)})"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's ``read`` retries transient storage errors (:mod:`geoseg.io.remote`),
        and its repr is this one (set before ``@dataclass``, which then keeps it)."""
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = RasterSource.__repr__  # type: ignore[method-assign]
        read = cls.__dict__.get("read")
        if read is not None and not getattr(read, "__geoseg_retrying__", False):
            cls.read = faults.reading_windows(remote.retrying("Reading")(read), probe=_uncached(read))

    def read_as(self) -> str:
        """How the pixels are read where that is not as they are stored, else "" (a mosaic's
        refusal of scenes whose dtypes differ names it)."""
        return ""

    def read(self, window: tuple[slice, ...]) -> np.ndarray:  # pragma: no cover - abstract
        """Pixels ``(band, *window_shape)`` of a window that lies inside the raster."""
        raise NotImplementedError

    def chunk_name(self, index: tuple[int, ...]) -> str:
        """How an error names the chunk at spatial grid ``index``."""
        return f"block ({faults.grid_text(index)})"

    @property
    def format(self) -> str:
        return type(self).__name__.removesuffix("Source").lower()

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        return ("y", "x") if len(self.shape) == 3 else ("z", "y", "x")


class Reader:
    """One raster format. Subclasses set ``name`` and ``description`` and implement
    :meth:`guess_can_open` and :meth:`open`; ``open``'s keyword parameters (``bands``,
    ``level``, ``variable``, ``pages``) say which options the format takes: an option a
    reader does not take is refused before it is called.

    Readers are asked in order of ``priority``, highest first (then by name), so a more
    specific format goes before the general one it refines: OME-Zarr (20) before Zarr (10),
    a TIFF stack (60) before GeoTIFF (50). A reader from another package that sets none is
    asked first (100)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # a noun phrase: "a GeoTIFF or COG (.tif, .tiff)"
    priority: ClassVar[int] = 100

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        """Whether ``url`` looks like this format, cheaply: its suffix, or a few bytes of its
        header or one metadata key (:mod:`geoseg.io.readers.probe` shares those between readers).
        Never raises for a URL of another format; a missing URL is simply not claimed."""
        raise NotImplementedError

    def open(self, url: str, storage_options: dict[str, Any], **options: Any) -> RasterSource:
        """Describe ``url`` from its metadata, reading no pixels."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.description}>"


def band_indexes(bands: Any, n_bands: int, url: str) -> list[int]:
    """0-based indexes of the 1-based ``bands`` (all when ``None``), checked against ``n_bands``,
    which is first checked against ``GEOSEG_MAX_BANDS``: the header declared it, and everything
    per band (these indexes, the band names) is built from it."""
    budgets.check_bands(n_bands, f"input {public_url(url)}")
    if bands is None:
        return list(range(n_bands))
    bad = [b for b in bands if not 1 <= int(b) <= n_bands]
    if bad:
        raise BandMismatchError(
            f"Band numbers {bad} are out of range for {public_url(url)}, which has {n_bands} "
            f"band(s); bands are numbered from 1 to {n_bands}."
        )
    return [int(b) - 1 for b in bands]


def select_bands(source: Any, bands: Any) -> Any:
    """``source`` (a source with a 0-based ``band_indexes`` field) reduced to ``bands`` (1-based)."""
    if bands is None:
        return source
    indexes = band_indexes(bands, source.shape[0], source.url)
    return dataclasses.replace(source, shape=(len(indexes), *source.shape[1:]),
                               band_indexes=tuple(indexes),
                               band_names=tuple(source.band_names[i] for i in indexes))


# integers read with a nodata value below their range: the wider type that holds it (exactly,
# as float32 too: valid pixels are compared with it on the device)
_WIDER = {1: "int16", 2: "int32"}


def widened(dtype: str) -> tuple[str, float] | None:
    """The dtype and nodata that mark pixels without data in an integer raster declaring no
    nodata value, without taking a value a pixel may hold: a wider integer type and one below
    ``dtype``'s range. ``None`` for integers of 4 bytes or more, whose wider types float32
    does not hold exactly."""
    wider = _WIDER.get(np.dtype(dtype).itemsize)
    return None if wider is None else (wider, float(np.iinfo(dtype).min - 1))


def refuse_level(url: str, level: int | None, what: str) -> None:
    """Refuse a resolution level above 0 for a format of one resolution, ``what``."""
    if level:
        raise UnsupportedFormatError(f"level={level} was asked of {public_url(url)}, but {what} has "
                                     "one resolution only; drop level (or use 0).")


def _uncached(read: Any) -> Any:
    """``read`` of a source without its read cache: a probe for the chunks that fail on their
    own must read each chunk alone, where the cache reads groups of blocks (a GeoTIFF's, of at
    least 256 pixels) and would blame the intact blocks beside a corrupt one."""

    def probe(source: Any, window: tuple[slice, ...]) -> Any:
        if getattr(source, "read_cache", None) is not None:
            source = dataclasses.replace(source, read_cache=None)
        return read(source, window)

    return probe
