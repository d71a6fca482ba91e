"""Cloud-Optimized GeoTIFF export of a finished image output.

The class ids are first streamed chunk by chunk into a tiled GeoTIFF (one Zarr
chunk in memory at a time), which GDAL's COG driver then rewrites with internal
tiles and overviews. Overviews are built by mode or nearest resampling only, so
every overview pixel is a class id. Mode overviews are computed here, each level
from the full-resolution classes (the mode of each whole block, no-data left out),
because GDAL's ``MODE`` makes each level from the previous one (a mode of modes);
nearest ones are GDAL's. CRS, transform and the no-data class are
kept; class names and the background class (a class that is no object) go to the
metadata tags, class colours to the colour map.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geoseg.core import jsontext
from geoseg.core.text import whole_number
from geoseg.errors import ExportError, GeosegError
from geoseg.io import remote
from geoseg.io.exports.common import (
    FinishedOutput,
    open_finished,
    published,
    refuse_existing,
    shown,
)
from geoseg.io.exports.pyramid import coarse_window, parse_resampling
from geoseg.io.readers._geotiff import GeoTIFFSource, open_rasterio
from geoseg.tiling.plan import regions

LOSSLESS = ("deflate", "lzw", "zstd", "lzma", "packbits", "none")


MAX_BLOCKSIZE = 4096  # a tile of 4096^2 uint16 is 32 MiB; GDAL buffers whole tiles


@dataclass(frozen=True)
class CogSettings:
    """Tile size, compression and overview resampling of a COG of class ids."""

    blocksize: int = 512
    compress: str = "deflate"
    resampling: str = "mode"

    @classmethod
    def parse(
        cls, blocksize: int = 512, compress: str = "deflate", resampling: str = "mode"
    ) -> CogSettings:
        """Validated settings; lossy compression and averaging resampling are refused."""
        size = int(blocksize)
        if size < 16 or size % 16 or size > MAX_BLOCKSIZE:
            raise ExportError(
                f"COG blocksize {blocksize!r}: expected a multiple of 16 from 16 to "
                f"{MAX_BLOCKSIZE} (GeoTIFF tiles, each compressed whole in memory), such as 256 "
                "or 512 (the default)."
            )
        codec = str(compress).strip().lower()
        if codec not in LOSSLESS:
            raise ExportError(
                f"COG compression {compress!r}: expected a lossless one ({', '.join(LOSSLESS)}); "
                "lossy codecs (JPEG, WEBP) would change class ids."
            )
        return cls(size, codec, parse_resampling(resampling))

    def creation_options(self) -> dict[str, str]:
        """Options of GDAL's COG driver."""
        return {
            "BLOCKSIZE": str(self.blocksize),
            "COMPRESS": self.compress.upper(),
            "OVERVIEW_RESAMPLING": self.resampling.upper(),
            "BIGTIFF": "IF_SAFER",
        }


def export_cog(
    output_url: str,
    dest: str,
    *,
    storage_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    blocksize: int = 512,
    compress: str = "deflate",
    resampling: str = "mode",
) -> str:
    """Write the class ids of the finished image output at ``output_url`` as a COG at ``dest``.

    Parameters
    ----------
    output_url
        A Zarr group written by ``geoseg run`` whose status is ``complete``.
    dest
        Path or fsspec URL of the ``.tif`` to write; refused if it exists unless ``overwrite``.
    storage_options, dest_options
        fsspec options for reading the output and for writing ``dest``.
    blocksize, compress, resampling
        Internal tile size, lossless compression, and ``"mode"`` or ``"nearest"`` overviews.

    Returns ``dest``. Nothing is left at ``dest`` if the export fails.
    """
    settings, out = check_cog(output_url, dest, storage_options=storage_options,
                              dest_options=dest_options, overwrite=overwrite,
                              blocksize=blocksize, compress=compress, resampling=resampling)
    with published(dest, dest_options, overwrite) as staged, \
            _gdal_writing(dest, staged):
        tiled = staged.with_name("tiled-" + staged.name)
        write_tiled(out, tiled, settings.blocksize)
        options = settings.creation_options()
        if settings.resampling == "mode":
            source = with_mode_overviews(out, tiled, settings.blocksize)
            options = {**options, "OVERVIEWS": "FORCE_USE_EXISTING"}
            del options["OVERVIEW_RESAMPLING"]
        else:
            source = tiled
        rasterio.shutil.copy(str(source), str(staged), driver="COG", **options)
    return dest


def check_cog(
    output_url: str,
    dest: str,
    *,
    storage_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    blocksize: int = 512,
    compress: str = "deflate",
    resampling: str = "mode",
) -> tuple[CogSettings, FinishedOutput]:
    """What :func:`export_cog` refuses before writing anything; returns its settings and the
    output."""
    settings = CogSettings.parse(blocksize, compress, resampling)
    out = open_finished(output_url, storage_options)
    out.require_ndim(
        2, "a GeoTIFF", "Export a volume with --nifti, or into an OME-Zarr image with --ome-zarr."
    )
    refuse_existing(
        dest, dest_options, overwrite, "COG", source=output_url, source_options=storage_options
    )
    if not dest.lower().endswith((".tif", ".tiff")):
        raise ExportError(f"COG destination {shown(dest)}: expected a name ending in .tif or "
                          ".tiff, as a GeoTIFF's, e.g. segmentation.tif. Nothing was written.")
    return settings, out


FULL = 1 << 20  # free bytes under which a disk a GDAL write failed on is taken as full


@contextlib.contextmanager
def _gdal_writing(dest: str, staged: Path) -> Iterator[None]:
    """GDAL writing ``dest`` through ``staged``: a full disk, which libtiff reports on stderr
    only (GDAL's own error then speaks of a directory it cannot read), raised as the disk-full
    error it is, told by the space left where ``staged`` is."""
    try:
        yield
    except GeosegError:  # reading the output: its own errors say so
        raise
    except Exception as exc:  # rasterio's errors, GDAL's (CPLE_*), the OS's
        left = _space_left(staged.parent)
        if left is None or left >= FULL:
            raise
        if remote.is_local(dest):
            raise remote.disk_full(dest, "Writing", left, exc) from None
        raise remote.disk_full(f"{staged.parent.parent}", f"Staging {shown(dest)} in", left,
                               exc) from None


def _space_left(folder: Path) -> int | None:
    """Bytes free on the disk holding ``folder`` (``None`` when that cannot be told)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def overview_factors(shape: tuple[int, ...], blocksize: int) -> list[int]:
    """GDAL's COG overview factors: 2, 4, ... until a level fits in one tile."""
    factors, size = [], max(shape)
    factor = 1
    while -(-size // factor) > blocksize:
        factor *= 2
        factors.append(factor)
    return factors


def with_mode_overviews(out: FinishedOutput, tiled: Path, blocksize: int) -> Path:
    """A VRT over ``tiled`` whose overviews are tiled GeoTIFFs next to it, each pixel the mode of
    its whole full-resolution block (no-data excluded; ties to the smallest id), for the COG
    driver to copy as they are.

    GDAL's ``MODE`` overviews take each level from the one before (a mode of modes), which is not
    the mode of the block: the levels are computed here from the full-resolution classes, a
    window of at most :data:`~geoseg.io.exports.pyramid.MODE_WINDOW` full-resolution pixels at a
    time (:func:`~geoseg.io.exports.pyramid.coarse_window`)."""
    vrt = tiled.with_name("source.vrt")
    rasterio.shutil.copy(str(tiled), str(vrt), driver="VRT")
    overviews = []
    for factor in overview_factors(out.shape, blocksize):
        level = tiled.with_name(f"overview-{factor}.tif")
        _write_mode_level(out, level, factor, blocksize)
        overviews.append(
            f"<Overview><SourceFilename relativeToVRT=\"1\">{level.name}</SourceFilename>"
            "<SourceBand>1</SourceBand></Overview>"
        )
    text = vrt.read_text()
    head, tail = text.rsplit("</VRTRasterBand>", 1)
    vrt.write_text(head + "".join(overviews) + "</VRTRasterBand>" + tail)
    return vrt


def _write_mode_level(out: FinishedOutput, path: Path, factor: int, blocksize: int) -> None:
    height, width = out.shape
    shape = (-(-height // factor), -(-width // factor))
    profile = {
        "driver": "GTiff", "width": shape[1], "height": shape[0], "count": 1,
        "dtype": out.dtype.name, "nodata": out.nodata_class, "tiled": True,
        "blockxsize": blocksize, "blockysize": blocksize, "compress": "deflate", "zlevel": 1,
        "bigtiff": "IF_SAFER",
    }
    with warnings.catch_warnings():  # a level needs no georeference: the COG takes level 0's
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(path, "w", **profile)
    with ds:
        for ys, xs in regions(shape, (blocksize, blocksize)):
            modes = coarse_window(out.read, out.shape, (ys, xs), (factor, factor), "mode",
                                  out.nodata_class, out.dtype)
            ds.write(modes, 1, window=Window(xs.start, ys.start, xs.stop - xs.start,
                                             ys.stop - ys.start))


def write_tiled(out: FinishedOutput, path: Path, blocksize: int) -> None:
    """A tiled GeoTIFF of ``out``'s classes, written one stored chunk at a time."""
    height, width = out.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": out.dtype.name,
        "nodata": out.nodata_class,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": "deflate",
        "zlevel": 1,
        "bigtiff": "IF_SAFER",
        **_georeference(out),
    }
    with rasterio.open(path, "w", **profile) as ds:
        for ys, xs in out.windows():
            window = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
            ds.write(out.read((ys, xs)), 1, window=window)
        ds.write_colormap(1, out.colormap())
        ds.set_band_description(1, "class")
        ds.update_tags(
            CLASS_NAMES=json.dumps(list(out.class_names)), NODATA_CLASS=str(out.nodata_class),
            **({} if out.background_class is None
               else {"BACKGROUND_CLASS": str(out.background_class)}),
        )
        ds.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(out.class_names)})


def read_class_names(source: GeoTIFFSource) -> tuple[str, ...] | None:
    """The class names :func:`write_tiled` tagged a GeoTIFF with: its ``CLASS_NAMES`` tag, else
    its band's ``CLASS_<id>`` tags (ids 0, 1, ... without a gap); ``None`` without them."""
    with open_rasterio(source.url, source.storage_options) as ds:
        listed, band = ds.tags().get("CLASS_NAMES"), ds.tags(source.band_indexes[0])
    try:
        names = jsontext.loads(listed) if listed else None
    except ValueError:  # not written by geoseg: the band's tags may still name the classes
        names = None
    if isinstance(names, list) and names:
        return tuple(str(n) for n in names)
    return _band_class_names(band)


def read_background_class(source: GeoTIFFSource) -> int | None:
    """The background class :func:`write_tiled` tagged a GeoTIFF with (``BACKGROUND_CLASS``, the
    output's ``background_class``: a class that is no object); ``None`` without one."""
    with open_rasterio(source.url, source.storage_options) as ds:
        return whole_number(ds.tags().get("BACKGROUND_CLASS", ""))


def _band_class_names(tags: dict[str, str]) -> tuple[str, ...] | None:
    ids = sorted(i for k in tags if k.startswith("CLASS_") and (i := whole_number(k[6:])) is not None)
    return tuple(tags[f"CLASS_{i}"] for i in ids) if ids and ids[-1] == len(ids) - 1 else None


def _georeference(out: FinishedOutput) -> dict[str, Any]:
    """The output's CRS and transform as rasterio profile keys. A CRS without a transform is
    left out, with a warning: GDAL would write it over its default transform (pixel indices as
    map units), and a GIS would draw the classes at the CRS's origin, one map unit a pixel,
    rather than say the COG is not georeferenced."""
    georef, found = out.georef, {}
    if georef.transform:
        found["transform"] = georef.affine
    if georef.crs_wkt and georef.transform:
        found["crs"] = CRS.from_wkt(georef.crs_wkt)
    elif georef.crs_wkt:
        warnings.warn(
            f"{shown(out.url)} has a CRS ({_crs_name(georef.crs_wkt)}) but no transform, which "
            "places its pixels in that CRS; expected both, as a georeferenced output has. The COG "
            "is written without a CRS (not georeferenced) rather than with one over pixel "
            "indices. To place it, georeference the COG (gdal_edit.py -a_srs CRS -a_ullr ULX "
            "ULY LRX LRY), or segment an input whose transform or evenly spaced x/y coordinates "
            "place it.", UserWarning, stacklevel=3)
    return found


def _crs_name(wkt: str) -> str:
    """A CRS's short name for a message: ``EPSG:32633``, else the start of its WKT."""
    crs = CRS.from_wkt(wkt)
    return crs.to_string() if crs.to_epsg() else wkt[:60] + "..."
