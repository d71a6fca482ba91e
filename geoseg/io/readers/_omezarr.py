"""OME-Zarr (NGFF 0.4 and 0.5) images: a Zarr group whose ``multiscales`` metadata names its
resolution levels, axes, scale and translation (read by :mod:`geoseg.io.omezarr`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zarr
import zarr.errors

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError
from geoseg.io import omezarr
from geoseg.io.metaguard import open_store
from geoseg.io.readers import probe
from geoseg.io.readers._zarr import (
    ZarrReader,
    ZarrSource,
    declared_nodata,
    own_metadata,
    zarr_array_source,
)
from geoseg.io.readers.base import BAND, RasterSource


@dataclass(frozen=True)
class OmeZarrSource(ZarrSource):
    """A resolution level of an OME-Zarr image: read as any Zarr array, but named for what it
    is (``geoseg info``'s format, a conversion's ``input_format``)."""

    @property
    def format(self) -> str:
        return OmeZarrReader.name


class OmeZarrReader(ZarrReader):
    """Level ``level`` of an OME-Zarr image; given a ``variable``, that array of the group is
    read as plain Zarr instead."""

    name = "ome-zarr"
    description = "an OME-Zarr image (NGFF 0.4/0.5)"
    priority = 20

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        """A group whose attributes hold ``multiscales`` (v3: ``zarr.json``, v2: ``.zattrs``)."""
        v3 = probe.read_json(url, storage_options, "zarr.json")
        if v3 is not None:
            return v3.get("node_type") == "group" and _multiscale(v3.get("attributes"))
        return _multiscale(probe.read_json(url, storage_options, ".zattrs"))

    def open(self, url: str, storage_options: dict[str, Any], *, variable: str | None = None,
             bands: Sequence[int] | None = None, level: int | None = None) -> RasterSource:
        if variable is not None:
            return super().open(url, storage_options, variable=variable, bands=bands, level=level)
        store = open_store(url, storage_options)
        group = zarr.open_group(store, mode="r")
        path, image = omezarr.level_path(group, level, url)
        arr = _level_array(store, path, level or 0, url)
        roles = omezarr.roles(image, arr.shape, url)
        if level:  # placed by its scale: its array must cover level 0's extent
            first = _level_array(store, str(image["datasets"][0]["path"]), 0, url)
            omezarr.check_levels(image, {0: first.shape, level: arr.shape}, roles, url)
        n_bands = arr.shape[roles.index(BAND)] if BAND in roles else 1
        georef = omezarr.georef(image, level or 0, roles, declared_nodata(arr, url), url, arr.shape)
        source = zarr_array_source(url, storage_options, arr, path, roles, bands, georef,
                                   omezarr.channel_names(dict(group.attrs), n_bands))
        return OmeZarrSource(**{f.name: getattr(source, f.name) for f in dataclasses.fields(source)})


def _level_array(store: Any, path: str, level: int, url: str) -> zarr.Array:
    """The array of resolution ``level`` at ``path``; one the multiscales metadata lists but the
    image lacks is named as such (it read as "nothing exists" at the image's URL)."""
    try:
        return own_metadata(store, path)
    except zarr.errors.NodeNotFoundError:
        raise CorruptInputError(
            f"OME-Zarr image {public_url(url)} lists resolution level {level} at dataset path "
            f"{path!r}, but no array is stored there; expected an array for every level its "
            "multiscales metadata lists. Ask for a level the image holds (input.level), or "
            "write the missing level (or remove it from the metadata).") from None


def _multiscale(attrs: Any) -> bool:
    return isinstance(attrs, dict) and omezarr.multiscales(attrs) is not None
