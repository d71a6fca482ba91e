"""Zarr metadata documents measured before zarr decodes them.

zarr decodes every metadata document (``zarr.json``, ``.zarray``, ``.zattrs``, ``.zgroup``,
``.zmetadata``) with ``json.loads``, which recurses once per level: a document nested
100,000 levels deep exhausts the interpreter's stack, and at that depth anything else that
runs (a finaliser) fails too and prints on stderr. :func:`open_store` gives zarr a read-only
store through which every such document is measured first (:func:`geoseg.core.jsontext.levels`)
and refused past :data:`~geoseg.core.jsontext.MAX_LEVELS`, whichever array or child of a group
zarr reads it for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from zarr.abc.store import ByteRequest, RangeByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, WrapperStore
from zarr.storage._common import make_store

from geoseg import budgets
from geoseg.core import jsontext
from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, NestedMetadataError
from geoseg.io import remote
from geoseg.io.readers.probe import special_file

METADATA_KEYS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
MAX_CODECS = 16  # codecs one list may hold: real arrays use 2 to 5
CODEC_LISTS = (b'"codecs"', b'"index_codecs"', b'"filters"')


class MetadataGuardStore(WrapperStore):
    """A view of a store whose metadata documents are refused when nested deeper than any Zarr
    metadata is."""

    def __init__(self, store: Any, *, url: str = ""):
        super().__init__(store)
        self.url = url

    def __getattr__(self, name: str) -> Any:
        """The wrapped store's other attributes (an fsspec store's ``fs`` and ``path``)."""
        if name == "_store":
            raise AttributeError(name)
        return getattr(self._store, name)

    def _with_store(self, store: Any) -> MetadataGuardStore:
        return type(self)(store, url=self.url)

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if byte_range is not None or key.rsplit("/", 1)[-1] not in METADATA_KEYS:
            return await self._store.get(key, prototype, byte_range)
        refuse_special(self._store, key, self.url)
        what = f"The metadata of {self.url} ({key})"
        buffer = await bounded_get(self._store, key, prototype, budgets.metadata_read_limit(),
                                   lambda n: budgets.check_metadata(n, what))
        if buffer is not None:
            depth = jsontext.levels(buffer.to_bytes())
            if depth > jsontext.MAX_LEVELS:
                raise NestedMetadataError(
                    f"The metadata of {self.url} ({key}) nests arrays or objects {depth} levels "
                    f"deep; expected at most {jsontext.MAX_LEVELS}, as no Zarr metadata needs "
                    "more: it is corrupt or hostile. Re-write it, or check the URL.")
            refuse_long_codec_lists(buffer.to_bytes(), key, self.url)
        return buffer


def refuse_long_codec_lists(text: bytes, key: str, url: str) -> None:
    """Refuse metadata document ``key`` when one of its codec lists (an array's ``codecs``, a
    sharding codec's ``codecs`` and ``index_codecs``, a v2 array's ``filters``, its own or in
    consolidated metadata) holds more than :data:`MAX_CODECS` codecs. Attributes (``.zattrs``,
    v3 ``attributes``) are the user's, whatever their names, and a document naming no such list
    is not parsed; one that does not parse is left to zarr to refuse."""
    if key.rsplit("/", 1)[-1] == ".zattrs" or not any(name in text for name in CODEC_LISTS):
        return
    try:
        nodes = [json.loads(text)]  # its depth is measured: json.loads does not recurse deeper
    except ValueError:
        return
    while nodes:
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for name, value in node.items():
            if name == "attributes" or name.endswith(".zattrs"):
                continue
            if name in ("codecs", "index_codecs", "filters") and isinstance(value, list) and (
                    len(value) > MAX_CODECS):
                raise CorruptInputError(
                    f"The metadata of {url} ({key}) lists {len(value):,} codecs in \"{name}\"; "
                    f"expected at most {MAX_CODECS}, as no Zarr array needs more (zarr reads "
                    "such a list in time growing with its square): it is corrupt or hostile. "
                    "Re-write the array's metadata with the codecs it was written with (a "
                    "compressor, a checksum, filters), or check the URL.")
            nodes.append(value)


async def bounded_get(store: Any, key: str, prototype: BufferPrototype, most: int,
                      check: Callable[[int], None]) -> Buffer | None:
    """``store.get(key)``, ``check`` (which raises) told the object's size first where that is
    cheap, else the length of a read of at most ``most`` bytes. A local file is measured by
    ``stat``: a ranged read of a local file allocates all the range asks for (64 MiB for a
    100-byte zarr.json), where a remote store's sends no more than there is."""
    local = local_store(store)
    if local is None:
        buffer = await store.get(key, prototype, RangeByteRequest(0, most))
        if buffer is not None:
            check(len(buffer))
        return buffer
    try:
        size = os.stat(local.root / key).st_size
    except OSError:  # absent (the fill value), or a folder: as the store answers
        return await store.get(key, prototype)
    check(size)
    return await store.get(key, prototype)


def local_store(store: Any) -> LocalStore | None:
    """The local store under ``store``'s wrappers (geoseg's guards, zarr's read-only view)."""
    while store is not None and not isinstance(store, LocalStore):
        store = getattr(store, "_store", None) if isinstance(store, WrapperStore) else None
    return store


def refuse_special(store: Any, key: str, url: str) -> None:
    """Refuse reading the metadata document ``key`` of a local store where it is a FIFO, a
    socket or a device (a link to /dev/zero): reading would block, or never end. (A chunk that
    is one blocks its read as a hung network disk does: a run's signals still end it.)"""
    local = local_store(store)
    if local is None:
        return
    kind = special_file(str(local.root / key))
    if kind is not None:
        raise CorruptInputError(f"{key} of the Zarr store {url} is {kind}, not a file: reading "
                                "it would block or never end. Remove it, or check the URL.")


def open_store(url: str, storage_options: dict[str, Any] | None = None,
               mode: str = "r") -> Store:
    """The store zarr would open for ``url`` in ``mode`` (read-only by default), its metadata
    measured before decoding."""
    store = sync(make_store(url, mode=mode, **remote.zarr_options(url, storage_options)))  # type: ignore[arg-type]
    return MetadataGuardStore(store, url=public_url(url))
