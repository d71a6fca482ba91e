"""What identifies a stored input, read from the store: the folder that holds a Zarr array, a
digest of a folder's listing, a file's sha256. The fields that tell one version of an object
from another are :mod:`geoseg.io.versions`'.

Run records (:mod:`geoseg.jobs.provenance`), training checksums
(:mod:`geoseg.training.checksums`) and batch input identities (:mod:`geoseg.jobs.identity`)
all read versions through :func:`geoseg.io.versions.version_marks`. Nothing here ever returns
storage options.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import fsspec

from geoseg.io.sources import RasterSource, ZarrSource

_BLOCK = 1 << 20


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
