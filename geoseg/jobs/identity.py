"""Input identity: a short string that changes when an input's bytes change.

``auto`` asks the store, reading no data: the ETag and size of an object (S3 and
other object stores), else its size and version id or modification time (local
files), from the fields :data:`geoseg.io.versions.VERSION_KEYS` lists. A Zarr
store (a folder or prefix) is identified by all of its objects' paths and
stamps, so rewriting one chunk changes it. Where a store reports neither an
ETag nor a modification time, ``auto`` falls back to ``checksum``: the sha256
of every byte (slow for large inputs, but exact). Identities never include
URLs or credentials.
"""

from __future__ import annotations

from typing import Any, Literal

import fsspec

from geoseg.io.identity import sha256_file, tree_digest
from geoseg.io.versions import file_stamp

IdentityMethod = Literal["auto", "checksum"]


def input_identity(url: str, storage_options: dict[str, Any] | None = None, *,
                   method: IdentityMethod = "auto") -> str:
    """The identity of the file or folder/prefix at ``url`` (see the module's docstring)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    path = path.rstrip("/")
    fs.invalidate_cache(path)
    info = fs.info(path)
    if info.get("type") == "directory":
        return _tree_identity(fs, path, method)
    stamp = None if method == "checksum" else file_stamp(info)
    return stamp if stamp is not None else f"sha256:{sha256_file(fs, path)}"


def _tree_identity(fs: Any, path: str, method: IdentityMethod) -> str:
    """One hash over every object under ``path``: its relative path and its stamp (or bytes)."""
    def stamp(name: str, info: dict[str, Any]) -> str:
        found = None if method == "checksum" else file_stamp(info)
        return found or sha256_file(fs, name)

    return f"tree:{tree_digest(fs, path, stamp)}"
