"""What identifies a stored input, read from the store: one list of the ``info`` fields that tell
one version of an object from another, the folder that holds a Zarr array, a file's sha256.

Run records (:mod:`geoseg.jobs.provenance`), training checksums
(:mod:`geoseg.training.checksums`) and batch input identities (:mod:`geoseg.jobs.identity`)
all read versions through :func:`version_marks`. Nothing here ever returns storage options.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import fsspec

from geoseg.io.sources import RasterSource, ZarrSource

# fsspec ``info`` fields that tell one version of a stored object from another, strongest
# first: hashes of the content, then version ids, then times.
CONTENT_KEYS = ("ETag", "etag", "md5Hash", "content_md5", "crc32c")
VERSION_ID_KEYS = ("generation", "version_id", "VersionId")
TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
VERSION_KEYS = CONTENT_KEYS + VERSION_ID_KEYS + TIME_KEYS
_BLOCK = 1 << 20


def version_marks(info: dict[str, Any]) -> dict[str, str]:
    """The version fields of a store's file ``info``, as text, strongest first."""
    return {key: str(info[key]) for key in VERSION_KEYS if info.get(key) not in (None, "")}


def file_stamp(info: dict[str, Any]) -> str | None:
    """``etag:...`` (a content hash) or ``stat:...`` (a version id or time) from file ``info``,
    with its size; ``None`` when the store reports no version at all."""
    marks, size = version_marks(info), info.get("size")
    key = next(iter(marks), None)
    if key is None:
        return None
    if key in CONTENT_KEYS:
        return f"etag:{marks[key].strip(chr(34))};size={size}"
    return f"stat:size={size};{'mtime' if key in TIME_KEYS else key}={marks[key]}"


def stored_path(source: RasterSource) -> tuple[Any, str]:
    """The filesystem and path of ``source``'s stored data: its file, or its Zarr array's folder."""
    fs, path = fsspec.core.url_to_fs(source.url, **source.storage_options)
    path = path.rstrip("/")
    if isinstance(source, ZarrSource) and source.array_path:
        path = f"{path}/{source.array_path}"
    return fs, path


def sha256_file(fs: Any, path: str) -> str:
    """The sha256 of every byte of the file at ``path``, read a block at a time."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(fs: Any, path: str, stamp: Callable[[str, dict[str, Any]], str]) -> str:
    """sha256 over every object under ``path``: its path relative to ``path`` and
    ``stamp(name, info)``, in name order (one listing of the folder or prefix)."""
    files = fs.find(path, detail=True)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name[len(path):].lstrip('/')}\t{stamp(name, files[name])}\n".encode())
    return digest.hexdigest()
