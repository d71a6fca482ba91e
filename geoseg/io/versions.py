"""Versions of stored objects: the fsspec ``info`` fields that tell one version of an object
from another (:func:`version_marks`), and one stamp of them (:func:`file_stamp`). Apart from
:mod:`geoseg.io.identity`, which reads sources, so that readers may use them too."""

from __future__ import annotations

from typing import Any

# fsspec ``info`` fields that tell one version of a stored object from another, strongest
# first: hashes of the content, then version ids, then times.
CONTENT_KEYS = ("ETag", "etag", "md5Hash", "content_md5", "crc32c")
VERSION_ID_KEYS = ("generation", "version_id", "VersionId")
TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
VERSION_KEYS = CONTENT_KEYS + VERSION_ID_KEYS + TIME_KEYS


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
