"""Checksums of training rasters for run records: did a rerun see the same data?

* Zarr arrays: sha256 over every file of the array's folder, in path order,
  each as ``path|size``; metadata files (``zarr.json``, ``.zarray``, ``.zattrs``)
  always with their bytes, chunks with their bytes too when the whole array is
  at most :data:`CONTENT_LIMIT` bytes (``method: content``), else by name and
  size only (``method: listing``: a rewritten chunk of a new size shows, one of
  the same size does not).
* Single files (GeoTIFF/COG): sha256 of the bytes up to :data:`CONTENT_LIMIT`
  (``method: content``), else of ``size`` plus whatever identifies a version
  in fsspec ``info`` (:func:`geoseg.io.versions.version_marks`: ETag, mtime, ...)
  (``method: info``).

Everything goes through fsspec, so the same code serves local files and object
stores; nothing here ever reads storage options into the result.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from geoseg.io.identity import sha256_file, stored_path
from geoseg.io.sources import RasterSource, ZarrSource
from geoseg.io.versions import version_marks

CONTENT_LIMIT = 64 * 2**20
METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def source_checksum(source: RasterSource) -> dict[str, Any]:
    """``{"method", "sha256", "bytes", "files"}`` describing the stored data of ``source``."""
    fs, path = stored_path(source)
    if isinstance(source, ZarrSource):
        return _folder_checksum(fs, path)
    return _file_checksum(fs, path)


def _folder_checksum(fs: Any, root: str) -> dict[str, Any]:
    files = fs.find(root, detail=True)
    entries = sorted((name[len(root):].lstrip("/"), int(info.get("size") or 0))
                     for name, info in files.items())
    total = sum(size for _, size in entries)
    method = "content" if total <= CONTENT_LIMIT else "listing"
    digest = hashlib.sha256()
    for rel, size in entries:
        digest.update(f"{rel}|{size}|".encode())
        if method == "content" or rel.rsplit("/", 1)[-1] in METADATA_FILES:
            digest.update(fs.cat_file(f"{root}/{rel}"))
    return {"method": method, "sha256": digest.hexdigest(), "bytes": total, "files": len(entries)}


def _file_checksum(fs: Any, path: str) -> dict[str, Any]:
    info = fs.info(path)
    size = int(info.get("size") or 0)
    if size <= CONTENT_LIMIT:
        return {"method": "content", "sha256": sha256_file(fs, path), "bytes": size, "files": 1}
    version = version_marks(info)
    text = json.dumps({"size": size, **version}, sort_keys=True)
    return {"method": "info", "sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": size,
            "files": 1, "info": version}
