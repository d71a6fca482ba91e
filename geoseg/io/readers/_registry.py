"""The installed readers: those registered under the entry-point group ``geoseg.readers``, plus
geoseg's own (listed here too, so a checkout that was not reinstalled still reads every format).

The group is read once per process (:func:`installed`; ``installed.cache_clear()`` reads it
again). A registered name replaces a built-in reader of that name; a reader that fails to
import is logged and left out, so one broken plugin never stops the others.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, GeosegError, UnsupportedFormatError
from geoseg.io import allow, remote
from geoseg.io.readers import probe
from geoseg.io.readers.base import Reader

GROUP = "geoseg.readers"
BUILT_IN = {  # the same as pyproject.toml's [project.entry-points."geoseg.readers"]
    "geotiff": "geoseg.io.readers._geotiff:GeoTIFFReader",
    "tiff-stack": "geoseg.io.readers._tiffstack:TiffStackReader",
    "nifti": "geoseg.io.readers._nifti:NiftiReader",
    "image": "geoseg.io.readers._image:ImageReader",
    "zarr": "geoseg.io.readers._zarr:ZarrReader",
    "ome-zarr": "geoseg.io.readers._omezarr:OmeZarrReader",
}
log = logging.getLogger("geoseg.io")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
# tifffile warns on stderr about files it cannot parse (a truncated TIFF's "invalid offset to
# first page"); geoseg reports such files itself, in one line, so its warnings are left out
# (unless an application configured that logger's level itself)
_TIFFFILE = logging.getLogger("tifffile")
if _TIFFFILE.level == logging.NOTSET:
    _TIFFFILE.setLevel(logging.ERROR)


@functools.cache
def installed() -> dict[str, Reader]:
    """Every reader by name, in the order they are asked (highest ``priority`` first)."""
    found = {name: EntryPoint(name, value, GROUP) for name, value in BUILT_IN.items()}
    found.update(_registered())
    loaded = [(name, _load(point)) for name, point in found.items()]
    ordered = sorted(((n, r) for n, r in loaded if r is not None), key=lambda nr: (-nr[1].priority, nr[0]))
    return dict(ordered)


def installed_readers() -> dict[str, Reader]:
    """The installed readers by name, in the order they are asked: geoseg's own and those other
    packages register under the entry-point group ``geoseg.readers``."""
    return dict(installed())


def _registered() -> dict[str, EntryPoint]:
    """Other packages' entry points by name (geoseg's own are :data:`BUILT_IN`, which they
    replace); of several distinct ones of a name, the first by value."""
    others = {p for p in entry_points(group=GROUP) if BUILT_IN.get(p.name) != p.value}
    points = sorted(others, key=lambda p: (p.name, p.value))
    chosen = {}
    for name, same in itertools.groupby(points, key=lambda p: p.name):
        same = list(same)
        if len(same) > 1:
            log.warning("%d readers are registered as %r (%s); using %s.", len(same), name,
                        ", ".join(p.value for p in same), same[0].value)
        chosen[name] = same[0]
    return chosen


def _load(point: EntryPoint) -> Reader | None:
    try:
        found = point.load()
        return found() if isinstance(found, type) else found
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the other readers
        log.warning("The reader %r (%s) could not be loaded and is left out: %s: %s",
                    point.name, point.value, type(exc).__name__, exc)
        return None


def named(name: str) -> Reader:
    """The reader called ``name``."""
    readers = installed()
    if name not in readers:
        raise UnsupportedFormatError(
            f"No reader is called {name!r}; the installed readers are: {listing()}. Give one of "
            f"those names, leave the reader out to let geoseg guess it from the URL, or install "
            f"the package that provides {name!r} (it registers it under the entry-point group "
            f"{GROUP!r}).")
    return readers[name]


def refuse_special_file(url: str, storage_options: dict[str, Any]) -> None:
    """Refuse a local FIFO, socket or device before any reader opens it (opening a FIFO blocks
    until something writes to it)."""
    kind = probe.local_kind(url, storage_options)
    if kind not in (None, "a folder"):
        fix = ("Point the link at the raster file itself" if "link" in kind else
               "Give the path of the file itself (copy what the pipe carries to a file first)")
        raise UnsupportedFormatError(
            f"Cannot read {public_url(url)}: it is {kind}, not a file; expected a raster file "
            "(GeoTIFF, NIfTI, ...) or a Zarr store (a folder holding zarr.json, .zarray or "
            f".zgroup). {fix}.")


def _folder_error(url: str, storage_options: dict[str, Any]) -> GeosegError | None:
    """The error for a local folder no reader claims: it is no Zarr store, and no file."""
    if probe.local_kind(url, storage_options) != "a folder":
        return None
    return UnsupportedFormatError(
        f"Cannot read {public_url(url)}: it is a folder, not a file, and no Zarr store (it holds "
        "no zarr.json, .zarray or .zgroup); expected a raster file (GeoTIFF, NIfTI, ...) or a "
        "Zarr store. Give the path of the raster file inside it, or of the store.")


def claim(url: str, storage_options: dict[str, Any]) -> tuple[str, Reader]:
    """The first reader (and its name) whose guess claims ``url``; raises when none does, or
    when ``url`` is missing. Run it inside :func:`probe.sharing` to share what the guesses read."""
    for name, reader in installed().items():
        if reader.guess_can_open(url, storage_options):
            return name, reader
    raise _unclaimed(url, storage_options)


def not_its_format(name: str, reader: Reader, url: str, storage_options: dict[str, Any]) -> GeosegError:
    """The error for a reader named by the user that finds nothing of its format at ``url``:
    not found when nothing is there, else which installed readers would claim it, and what the
    file looks like (the first of them, the one geoseg would pick)."""
    fs, path = probe.location(url, storage_options)
    if not probe.is_file(url, storage_options) and not remote.exists(fs, path):
        return remote.not_found(url, storage_options)
    claiming = _claiming(url, storage_options)
    if not claiming and (folder := _folder_error(url, storage_options)) is not None:
        return folder
    if not claiming:
        return UnsupportedFormatError(
            f"The reader {name!r} ({reader.description}) cannot read {public_url(url)}: something "
            "is there, but not in its format (no installed reader claims it). Name another reader, "
            "or leave the reader out to let geoseg pick one.")
    first = claiming[0]
    return UnsupportedFormatError(
        f"The reader {name!r} ({reader.description}) cannot read {public_url(url)}: something is "
        f"there, but not in its format (the installed readers that claim it: {', '.join(claiming)}); "
        f"it looks like {installed()[first].description}. Use reader: {first}, or leave the reader "
        "out to let geoseg pick one.")


def another_format(reader: Reader, url: str, storage_options: dict[str, Any]) -> bool:
    """Whether the file at ``url``, on which ``reader`` (named by the user) failed, is another
    installed reader's format: ``reader`` does not claim it, another does. ``False`` when that
    cannot be told (the reader's own error then stands)."""
    try:
        return not reader.guess_can_open(url, storage_options) and bool(
            _claiming(url, storage_options))
    except Exception:  # noqa: BLE001 - the file cannot even be looked at: the first error stands
        return False


def _claiming(url: str, storage_options: dict[str, Any]) -> list[str]:
    """The installed readers whose guess claims ``url``, in asking order."""
    return [n for n, r in installed().items() if r.guess_can_open(url, storage_options)]


def _unclaimed(url: str, storage_options: dict[str, Any]) -> GeosegError:
    fs, path = probe.location(url, storage_options)
    if not probe.is_file(url, storage_options) and not remote.exists(fs, path):
        return remote.not_found(url, storage_options)
    if (folder := _folder_error(url, storage_options)) is not None:
        return folder
    head = probe.head(url, storage_options)
    allow.refuse_gdal_format(url, head)  # a VRT named .tif: say so
    if probe.is_file(url, storage_options) and not head:
        return CorruptInputError(
            f"Cannot read {public_url(url)}: the file is empty (0 bytes); expected a raster (it may not have "
            "been written in full). Re-download or re-write it, or check the URL.")
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").lower()
    if name.endswith(TIFF_SUFFIXES) and allow.gdal_driver(head) is None:
        return CorruptInputError(
            f"Cannot read {public_url(url)}: its name says TIFF, but it is not a TIFF (its first "
            f"bytes are {head[:8]!r}, a TIFF starts with b'II*\\x00' or b'MM\\x00*'); it is "
            "corrupt or another kind of file. Re-download or re-write it, or check the URL.")
    return UnsupportedFormatError(
        f"Cannot read {public_url(url)}: it is not a format geoseg reads (no installed reader "
        f"claims it). The installed readers are: {listing()}. Convert other formats to GeoTIFF "
        f"or Zarr first, or install a package with a reader for it (entry-point group {GROUP!r}).")


def listing() -> str:
    """``"geotiff (a GeoTIFF or COG), zarr (...)"``: the installed readers, in asking order."""
    return "; ".join(f"{name} ({reader.description})" for name, reader in installed().items())


def refuse_options(reader: Reader, name: str, url: str, options: dict[str, Any]) -> None:
    """Refuse an option (``level``, ``pages`` ...) that ``reader``, which reads ``url``, does not take."""
    for key, value in options.items():
        if not takes(reader, key):
            takers = {n: r for n, r in installed().items() if takes(r, key)}
            which = (" or ".join(r.description for r in takers.values()) if 0 < len(takers) <= 2
                     else f"a format that takes {key} ({', '.join(takers) or 'none installed'})")
            raise UnsupportedFormatError(
                f"{key}={value!r} was given for {public_url(url)}, which is {reader.description}, "
                f"not {which}: the {name!r} reader takes no {key}; drop {key}.")


def takes(reader: Reader, option: str) -> bool:
    """Whether ``reader.open`` takes the keyword ``option`` (any, when it takes ``**options``)."""
    parameters = inspect.signature(reader.open).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return True
    return option in parameters and parameters[option].kind is inspect.Parameter.KEYWORD_ONLY
