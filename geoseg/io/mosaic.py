"""Mosaics: many georeferenced scenes on one pixel grid, read as one raster.

Scenes must share CRS, pixel size, band count and dtype, and sit on the same
grid (offsets of whole pixels). The mosaic covers their union; a window reads
only the scenes it overlaps. Where scenes overlap, the first one listed that has
data wins (data as the run counts it: not every band the nodata value, every band
finite); pixels no scene covers are nodata. Integer scenes that declare no nodata
value hold data in every pixel, 0 included: where they leave gaps, the mosaic is read
in a wider type whose nodata lies below theirs (uint8 as int16, nodata -1).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine

from geoseg.core.segmenter import valid_mask
from geoseg.core.urls import public_url
from geoseg.errors import UnsupportedFormatError
from geoseg.io.georef import GeoRef
from geoseg.io.readers.base import RasterSource, widened

log = logging.getLogger("geoseg.io")

GLOB_CHARS = "*?["
GRID_TOLERANCE = 1e-6  # of a pixel
MAX_COVER_CELLS = 10_000_000  # cells between scene edges checked for gaps at once (a band of rows)
MAX_COVER_WORK = 2_000_000_000  # cells checked in all; more: not checked, taken to leave gaps


@dataclass(frozen=True)
class Placed:
    """A scene and the mosaic pixel of its first pixel."""

    source: RasterSource
    row: int
    col: int

    def overlap(self, window: tuple[slice, slice]) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
        """(slices in the window, slices in the scene) of their intersection, or ``None``."""
        _, height, width = self.source.shape
        ys, xs = window
        y0, y1 = max(ys.start, self.row), min(ys.stop, self.row + height)
        x0, x1 = max(xs.start, self.col), min(xs.stop, self.col + width)
        if y0 >= y1 or x0 >= x1:
            return None
        local = (slice(y0 - ys.start, y1 - ys.start), slice(x0 - xs.start, x1 - xs.start))
        scene = (slice(y0 - self.row, y1 - self.row), slice(x0 - self.col, x1 - self.col))
        return local, scene


@dataclass(frozen=True)
class MosaicSource(RasterSource):
    """Scenes placed on one grid; ``georef.nodata`` marks pixels without data."""

    scenes: tuple[Placed, ...] = ()

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        ys, xs = window
        out = np.full((self.shape[0], ys.stop - ys.start, xs.stop - xs.start), self._fill, self.dtype)
        empty = np.ones(out.shape[1:], bool)
        for placed in self.scenes:
            hit = placed.overlap((ys, xs))
            if hit is None:
                continue
            local, scene = hit
            data = placed.source.read(scene)
            take = empty[local] & valid_mask(data, placed.source.georef.nodata)
            out[(slice(None), *local)][:, take] = data[:, take]
            empty[local] &= ~take
        return out

    def for_run(self) -> MosaicSource:
        """The mosaic whose scenes read under one run's name (:meth:`RasterSource.for_run`)."""
        scenes = tuple(Placed(p.source.for_run(), p.row, p.col) for p in self.scenes)
        return dataclasses.replace(super().for_run(), scenes=scenes)  # type: ignore[return-value]

    def with_read_cache(self) -> MosaicSource:
        """The mosaic whose scenes read through the per-process cache of decoded blocks."""
        scenes = tuple(Placed(p.source.with_read_cache(), p.row, p.col) for p in self.scenes)
        return dataclasses.replace(super().with_read_cache(), scenes=scenes)  # type: ignore[return-value]

    @property
    def _fill(self) -> float:
        return self.georef.nodata if self.georef.nodata is not None else 0

    @property
    def format(self) -> str:
        return "mosaic"


_LITERAL: set[str] = set()  # URLs a listing found: files whose names hold glob characters


def is_glob(url: str) -> bool:
    """Whether ``url`` is a glob pattern. In an ``http(s)://`` URL a ``?`` starts the query
    string (where a signed URL keeps its signature), so only the part before it counts. A URL
    that names one file, though its name holds ``*``, ``?`` or ``[`` (``scene*.tif``,
    ``br[1].tif``), is that file: a local path that exists, or one :func:`take_literally` was
    given."""
    path = url
    if url.partition("://")[0].lower() in ("http", "https"):
        path = url.split("#", 1)[0].split("?", 1)[0]
    return any(c in path for c in GLOB_CHARS) and not _names_one_file(url)


def take_literally(urls: Sequence[str]) -> None:
    """Open each of ``urls`` (files a listing found, as a batch's ``inputs.glob`` finds them) as
    the one file it names from now on, not as a pattern, though its name holds ``*``, ``?`` or
    ``[``: a remote one too, whose existence :func:`is_glob` cannot ask its store."""
    _LITERAL.update(u for u in urls if any(c in u for c in GLOB_CHARS))


def _names_one_file(url: str) -> bool:
    if url in _LITERAL:
        return True
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() != "file":
        return False
    return os.path.lexists(rest if sep else url)


def mosaic_source(sources: Sequence[RasterSource], url: str) -> MosaicSource:
    """Place ``sources`` on their common grid (checked) as one :class:`MosaicSource`."""
    first = sources[0]
    for other in sources[1:]:
        _check_compatible(first, other)
    transform = Affine(*first.georef.transform)
    corners = [_offset(transform, Affine(*s.georef.transform), s.url) for s in sources]
    top, left = min(r for r, _ in corners), min(c for _, c in corners)
    bottom = max(r + s.shape[1] for (r, _), s in zip(corners, sources))
    right = max(c + s.shape[2] for (_, c), s in zip(corners, sources))
    origin = transform @ Affine.translation(left, top)
    placed = tuple(Placed(s, r - top, c - left) for s, (r, c) in zip(sources, corners))
    dtype, nodata = _gap_encoding(first, placed, (bottom - top, right - left), url)
    georef = GeoRef(first.georef.crs_wkt, tuple(origin)[:6], nodata)
    return MosaicSource(url=url, shape=(first.shape[0], bottom - top, right - left), dtype=dtype,
                        chunks=first.chunks, georef=georef, band_names=first.band_names,
                        storage_options=first.storage_options, scenes=placed)


def _gap_encoding(first: RasterSource, placed: Sequence[Placed], shape: tuple[int, int],
                  url: str) -> tuple[str, float | None]:
    """The mosaic's dtype and nodata: the scenes' own when they declare a nodata value, NaN in
    the gaps between float scenes, none when the scenes leave no gap, else a wider integer
    type and a nodata value below the scenes' range (their pixels all hold data, 0 included)."""
    dtype, nodata = first.dtype, first.georef.nodata
    if nodata is not None:
        return dtype, nodata
    if np.dtype(dtype).kind == "f":
        return dtype, float("nan")
    covered = _covered(placed, shape)
    if covered:
        return dtype, None
    encoding = widened(dtype)
    if encoding is None:
        leave = "leave gaps" if covered is False else "may leave gaps (too many scene edges to check)"
        raise UnsupportedFormatError(
            f"The scenes of {public_url(url)} {leave} in the mosaic, and their {dtype} pixels "
            "declare no nodata value to mark them with; geoseg takes none from a range this wide. "
            "Declare the scenes' nodata value (a value no valid pixel holds), e.g. "
            "gdal_edit.py -a_nodata VALUE scene.tif, or with rasterio: ds.nodata = VALUE in r+ mode.")
    log.info("%s: its %s scenes declare no nodata value; the gaps between them read as nodata "
             "%g (pixels read as %s).", public_url(url), dtype, encoding[1], encoding[0])
    return encoding


def _covered(placed: Sequence[Placed], shape: tuple[int, int]) -> bool | None:
    """Whether the scenes cover every pixel of a mosaic of ``shape``, checked on the cells
    between their edges, a band of rows at a time (at most :data:`MAX_COVER_CELLS` cells in
    memory); ``None`` when there are more than :data:`MAX_COVER_WORK` cells to check."""
    rows = [(p.row, p.row + p.source.shape[1]) for p in placed]
    cols = [(p.col, p.col + p.source.shape[2]) for p in placed]
    edges = [np.unique([0, n, *itertools.chain(*spans)]) for spans, n in zip((rows, cols), shape)]
    n_rows, n_cols = len(edges[0]) - 1, len(edges[1]) - 1
    if n_rows * n_cols > MAX_COVER_WORK:
        return None
    cells = list(zip(np.searchsorted(edges[0], rows), np.searchsorted(edges[1], cols)))
    band = max(1, MAX_COVER_CELLS // n_cols)
    for top in range(0, n_rows, band):
        bottom = min(top + band, n_rows)
        covered = np.zeros((bottom - top, n_cols), bool)
        for (r0, r1), (c0, c1) in cells:
            if r0 < bottom and r1 > top:
                covered[max(r0, top) - top:min(r1, bottom) - top, c0:c1] = True
        if not covered.all():
            return False
    return True


def _check_compatible(first: RasterSource, other: RasterSource) -> None:
    what = {"CRS": (first.georef.crs_wkt, other.georef.crs_wkt), "band count": (first.shape[0], other.shape[0]),
            "dtype": (first.dtype, other.dtype), "nodata": (first.georef.nodata, other.georef.nodata)}
    if first.georef.transform is None or other.georef.transform is None:
        raise UnsupportedFormatError(f"Cannot mosaic {other.url} with {first.url}: both need a geotransform.")
    a, b = Affine(*first.georef.transform), Affine(*other.georef.transform)
    what["pixel size and rotation"] = ((a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e))
    for name, (x, y) in what.items():
        if x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
            notes = "".join(f"; {n}" for n in (other.read_as(), first.read_as()) if n)
            raise UnsupportedFormatError(
                f"Cannot mosaic {other.url} with {first.url}: their {name} differ ({y!r} vs {x!r}"
                f"{notes}). Scenes of one mosaic share CRS, pixel grid, bands, dtype and nodata; "
                "reproject or convert them first (an internal mask: in all scenes, or as a nodata "
                "value, gdalwarp -dstnodata VALUE), or run them as separate jobs (geoseg batch).")


def _offset(grid: Affine, scene: Affine, url: str) -> tuple[int, int]:
    """The (row, col) of a scene's first pixel on ``grid``; whole pixels only."""
    col, row = ~grid @ (scene.c, scene.f)
    if abs(col - round(col)) > GRID_TOLERANCE or abs(row - round(row)) > GRID_TOLERANCE:
        raise UnsupportedFormatError(
            f"Cannot mosaic {url}: it is offset by a fraction of a pixel ({row:.4f}, {col:.4f}) from the "
            "first scene's grid. Resample it onto that grid first.")
    return round(row), round(col)
