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

from typing import Any

from fsspec.implementations.local import LocalFileSystem
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
        refuse_special(self._store, key, self.url)
        if byte_range is not None or key.rsplit("/", 1)[-1] not in METADATA_KEYS:
            return await self._store.get(key, prototype, byte_range)
        buffer = await self._store.get(key, prototype,
                                       RangeByteRequest(0, budgets.metadata_read_limit()))
        if buffer is not None:
            budgets.check_metadata(len(buffer), f"The metadata of {self.url} ({key})")
            depth = jsontext.levels(buffer.to_bytes())
            if depth > jsontext.MAX_LEVELS:
                raise NestedMetadataError(
                    f"The metadata of {self.url} ({key}) nests arrays or objects {depth} levels "
                    f"deep; expected at most {jsontext.MAX_LEVELS}, as no Zarr metadata needs "
                    "more: it is corrupt or hostile. Re-write it, or check the URL.")
        return buffer


def refuse_special(store: Any, key: str, url: str) -> None:
    """Refuse reading ``key`` of a local store where it is a FIFO, a socket or a device (a link
    to /dev/zero): reading would block, or never end."""
    root = getattr(store, "root", None)
    if not isinstance(store, LocalStore) or root is None:
        return
    kind = special_file(LocalFileSystem(), str(root / key))
    if kind is not None:
        raise CorruptInputError(f"{key} of the Zarr store {url} is {kind}, not a file: reading "
                                "it would block or never end. Remove it, or check the URL.")


def open_store(url: str, storage_options: dict[str, Any] | None = None,
               mode: str = "r") -> Store:
    """The store zarr would open for ``url`` in ``mode`` (read-only by default), its metadata
    measured before decoding."""
    store = sync(make_store(url, mode=mode, **remote.zarr_options(url, storage_options)))  # type: ignore[arg-type]
    return MetadataGuardStore(store, url=public_url(url))
