"""Run records: one JSON file per training run, rewritten after every epoch.

A record holds the redacted spec (no storage options, no secrets in URLs), the
resolved settings (network config, device, steps), every data source with its
checksum, the normalization and class weights in use, per-epoch metrics, the
final metrics and the saved model's hash, plus package versions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import fsspec

from geoseg.core import jsontext
from geoseg.core.records import plain
from geoseg.core.urls import public_url
from geoseg.io.files import write_whole
from geoseg.io.sources import RasterSource, ZarrSource
from geoseg.training.checksums import source_checksum
from geoseg.training.data import RasterPair

FORMAT = "geoseg-train-run/1"


def read_json(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON object at ``url``, or ``None`` when there is no file."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if not fs.exists(path):
        return None
    return jsontext.loads(fs.cat_file(path))


def write_json(url: str, data: dict[str, Any], storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` as indented JSON to ``url``, creating its folder."""
    write_whole(url, json.dumps(data, indent=1, default=plain), storage_options=storage_options,
                what="Writing")



class SourceCatalog:
    """Describes sources for the record, computing each checksum once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def describe(self, source: RasterSource) -> dict[str, Any]:
        """URL (public part), format, shape, dtype, bands and checksum of one source."""
        array = source.array_path if isinstance(source, ZarrSource) else ""
        key = (source.url, array)
        if key not in self._cache:
            self._cache[key] = source_checksum(source)
        return {"url": public_url(source.url), "variable": array or None, "format": source.format,
                "shape": list(source.shape), "dtype": source.dtype, "bands": list(source.band_names),
                "nodata": source.georef.nodata, "checksum": self._cache[key]}

    def pairs(self, pairs: Sequence[RasterPair]) -> list[dict[str, Any]]:
        """One entry per pair: its name, region, image and labels."""
        return [{"pair": p.name, "region": p.region.to_list(), "image": self.describe(p.image),
                 "labels": self.describe(p.labels)} for p in pairs]

