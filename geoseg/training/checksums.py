"""Checksums of training rasters for run records: did a rerun see the same data?

* Zarr arrays: sha256 over every file of the array's folder, in path order,
  each as ``path|size``; metadata files (``zarr.json``, ``.zarray``, ``.zattrs``)
  always with their bytes, chunks with their bytes too when the whole array is
  at most :data:`CONTENT_LIMIT` bytes (``method: content``), else by name and
  size only (``method: listing``: a rewritten chunk of a new size shows, one of
  the same size does not).
* Single files (GeoTIFF/COG): sha256 of the bytes up to :data:`CONTENT_LIMIT`
  (``method: content``), else of ``size`` plus whatever identifies a version
  in fsspec ``info`` (ETag, mtime, LastModified, ...) (``method: info``).

Everything goes through fsspec, so the same code serves local files and object
stores; nothing here ever reads storage options into the result.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import fsspec

from geoseg.io.sources import RasterSource, ZarrSource

CONTENT_LIMIT = 64 * 2**20
METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
VERSION_KEYS = ("ETag", "etag", "mtime", "LastModified", "last_modified", "generation", "version_id",
                "md5Hash", "crc32c", "created")


def source_checksum(source: RasterSource) -> dict[str, Any]:
    """``{"method", "sha256", "bytes", "files"}`` describing the stored data of ``source``."""
    fs, path = fsspec.core.url_to_fs(source.url, **source.storage_options)
    path = path.rstrip("/")
    if isinstance(source, ZarrSource):
        root = f"{path}/{source.array_path}" if source.array_path else path
        return _folder_checksum(fs, root)
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
        digest = hashlib.sha256()
        with fs.open(path, "rb") as f:
            while block := f.read(2**20):
                digest.update(block)
        return {"method": "content", "sha256": digest.hexdigest(), "bytes": size, "files": 1}
    version = {k: str(info[k]) for k in VERSION_KEYS if info.get(k) is not None}
    text = json.dumps({"size": size, **version}, sort_keys=True)
    return {"method": "info", "sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": size,
            "files": 1, "info": version}
