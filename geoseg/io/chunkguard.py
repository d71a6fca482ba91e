"""Zarr chunks checked against their array's chunk size before they are decoded.

A compressed chunk may decode to far more than its array's chunk holds: 65 KB of zstd can
declare 2 GB, which zarr's codecs allocate in full before noticing the size is wrong (a
decompression bomb: a worker runs out of memory on a tiny file). Every chunk of an input
array is fetched whole from its store, so the one place every chunk read goes through is the
store: :func:`guarded` re-opens an array on a :class:`ChunkGuardStore`, which looks at each
chunk's bytes as they arrive and refuses, before any codec runs, a chunk whose outermost
compressor declares (zstd, blosc, lz4) or decodes to (gzip, zlib, read no further than the
limit) more than the array's chunk in bytes. A chunk is also fetched no further than the most
any codec stores a chunk in (:func:`stored_limit`), so a chunk object of gigabytes where the
array's chunk holds kilobytes is refused without being read into memory.

Not covered: sharded arrays (their inner chunks arrive as byte ranges of a shard). Compressors
whose stream declares no size and that cannot be decoded in bounded memory here (bz2, lzma,
plugins) get the stored-size bound only.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import zarr
from numcodecs import blosc, zstd
from zarr.abc.codec import ArrayArrayCodec, BytesBytesCodec
from zarr.abc.store import ByteRequest
from zarr.codecs import ShardingCodec, TransposeCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import StorePath, WrapperStore

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError
from geoseg.io.metaguard import METADATA_KEYS, bounded_get

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UNKNOWN = -1  # a zstd frame that does not declare its decoded size
FILTER_FACTOR = 16  # bytes per element a filter's encoded form may take (complex128)
CHECKSUMS = {"crc32c": 4}  # bytes-to-bytes codecs that only append a checksum of this many bytes


def guarded(array: zarr.Array, url: str) -> zarr.Array:
    """``array`` reading its chunks through a :class:`ChunkGuardStore` (itself where there is
    nothing to check: a sharded array, a dtype of no fixed size)."""
    plan = _decode_plan(array)
    if plan is None:
        return array
    compressor, trailer, limit = plan
    store = ChunkGuardStore(array.store, compressor=compressor, trailer=trailer, limit=limit,
                            what=_chunk_text(array), url=public_url(url),
                            stored=stored_limit(limit, trailer))
    inner = array.async_array
    return zarr.Array(AsyncArray(inner.metadata, StorePath(store, array.path), inner.config))


def stored_limit(limit: int, trailer: int) -> int:
    """The most bytes a chunk decoding to ``limit`` bytes is stored in, whatever its codec:
    compressors expand incompressible data by under 1% plus a header (zstd, lz4, gzip, blosc's
    16 bytes), so twice the decoded size and a MiB more is never reached by a real chunk."""
    return 2 * limit + 2**20 + trailer


def _decode_plan(array: zarr.Array) -> tuple[str, int, int] | None:
    """``(compressor, checksum bytes after its stream, limit in bytes)`` for the first
    compressor a chunk's bytes go through when decoded (``""``: none, or one whose stream
    geoseg cannot check), or ``None`` for an array whose chunks are not checked."""
    dtype = np.dtype(array.dtype)
    if dtype.itemsize == 0 or dtype.hasobject:
        return None
    elements = math.prod(int(c) for c in array.chunks)
    if array.metadata.zarr_format == 2:
        codec = array.metadata.compressor
        names = [codec.codec_id] if codec is not None else []
        filtered = bool(array.metadata.filters)
    else:
        codecs = array.metadata.codecs
        if any(isinstance(c, ShardingCodec) for c in codecs):
            return None
        names = [_v3_name(c) for c in reversed(codecs) if isinstance(c, BytesBytesCodec)]
        filtered = any(isinstance(c, ArrayArrayCodec) and not isinstance(c, TransposeCodec)
                       for c in codecs)
    trailer = 0
    limit = elements * (max(dtype.itemsize, FILTER_FACTOR) if filtered else dtype.itemsize)
    for name in names:  # in decoding order: checksums first
        if name not in CHECKSUMS:
            return (name if name in DECLARED or name in INFLATED else "", trailer, limit)
        trailer += CHECKSUMS[name]
    return "", trailer, limit


def _v3_name(codec: Any) -> str:
    """A v3 codec's name, numcodecs' wrappers (``numcodecs.zstd``) read as the codec itself."""
    return str(codec.to_dict().get("name", "")).removeprefix("numcodecs.")


def _chunk_text(array: zarr.Array) -> str:
    """``"3 x 128 x 128 uint8 (49,152 bytes)"``: what one chunk of ``array`` holds."""
    dims = " x ".join(str(c) for c in array.chunks)
    nbytes = math.prod(int(c) for c in array.chunks) * np.dtype(array.dtype).itemsize
    return f"{dims} {np.dtype(array.dtype)} ({nbytes:,} bytes)"


class ChunkGuardStore(WrapperStore):
    """A read-only view of a store whose whole-key reads of chunks are checked by
    :func:`check_chunk` (metadata documents and byte ranges pass as they are)."""

    def __init__(self, store: Any, *, compressor: str = "", trailer: int = 0, limit: int = 0,
                 what: str = "", url: str = "", stored: int = 0):
        super().__init__(store)
        self.compressor, self.trailer, self.limit, self.what, self.url, self.stored = (
            compressor, trailer, limit, what, url, stored)

    def __getattr__(self, name: str) -> Any:
        """The wrapped store's other attributes (an fsspec store's ``fs`` and ``path``, which
        :mod:`geoseg.io.missing` asks for to test a key with a HEAD, not a GET of the chunk)."""
        if name == "_store":
            raise AttributeError(name)
        return getattr(self._store, name)

    def _with_store(self, store: Any) -> ChunkGuardStore:
        return type(self)(store, compressor=self.compressor, trailer=self.trailer,
                          limit=self.limit, what=self.what, url=self.url, stored=self.stored)

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if byte_range is not None or key.rsplit("/", 1)[-1] in METADATA_KEYS:
            return await self._store.get(key, prototype, byte_range)
        # one byte more than a chunk is ever stored in: no more is read of a larger object
        buffer = await bounded_get(self._store, key, prototype, self.stored + 1,
                                   lambda n: self._check_stored(key, n))
        if buffer is not None and self.compressor:
            data = buffer.as_numpy_array().view(np.uint8).reshape(-1)
            check_chunk(self, key, data[: max(len(data) - self.trailer, 0)])
        return buffer

    def _check_stored(self, key: str, n_bytes: int) -> None:
        if n_bytes > self.stored:
            raise CorruptInputError(
                f"Zarr chunk {key} of {self.url} is stored in more than {self.stored:,} bytes "
                f"(geoseg read it no further), but a chunk of this array holds {self.what}, which "
                "no codec stores in that much. The chunk is corrupt or hostile, or the array's "
                "metadata (chunk shape, data type) does not describe its chunks: re-write the "
                "array (or that chunk) from its source.")


def check_chunk(guard: ChunkGuardStore, key: str, data: np.ndarray) -> None:
    """Refuse chunk ``key`` when its compressed stream ``data`` declares or decodes to more
    than the guard's limit; a stream that does not parse is left to the codec to refuse."""
    if guard.compressor in DECLARED:
        declared = DECLARED[guard.compressor](data)
        if declared is None or 0 <= declared <= guard.limit:
            return
        if declared == UNKNOWN and _zstd_fits(data, guard.limit):
            return
        said = (f"declares no decoded size and does not decode to {guard.limit:,} bytes"
                if declared == UNKNOWN
                else f"declares {declared:,} bytes once decoded")
    else:
        if _inflated(data, INFLATED[guard.compressor], guard.limit) <= guard.limit:
            return
        said = f"decodes to more than {guard.limit:,} bytes (geoseg read it no further)"
    raise CorruptInputError(
        f"Zarr chunk {key} of {guard.url}: its {guard.compressor} stream ({len(data):,} bytes) "
        f"{said}, but a chunk of this array holds {guard.what}. The chunk is corrupt or a "
        "decompression bomb, or the array's metadata (chunk shape, data type) does not describe "
        "its chunks, so geoseg does not decode it: re-write the array (or that chunk) from its "
        "source.")


def zstd_content_size(data: np.ndarray) -> int | None:
    """The decoded size a zstd frame's header declares (RFC 8878, 3.1.1.1), :data:`UNKNOWN`
    when it declares none, ``None`` when ``data`` is no zstd frame (the codec refuses it).
    numcodecs allocates the first frame's declared size, and streams one that declares none
    with no bound (zarr and numcodecs always write the size; a streaming writer may not)."""
    head = bytes(data[:18])
    if len(head) < 6 or head[:4] != ZSTD_MAGIC:
        return None
    descriptor = head[4]
    single_segment = (descriptor >> 5) & 1
    size = (single_segment, 2, 4, 8)[descriptor >> 6]
    if size == 0:
        return UNKNOWN
    start = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]
    field = head[start:start + size]
    if len(field) < size:
        return None
    return int.from_bytes(field, "little") + (256 if size == 2 else 0)


def _zstd_fits(data: np.ndarray, limit: int) -> bool:
    """Whether a zstd stream that declares no size decodes into exactly ``limit`` bytes: tried
    into a buffer of that size, so a bomb fails there instead of growing without bound."""
    try:
        zstd.decompress(bytes(data), bytearray(limit))
    except RuntimeError:
        return False
    return True


def blosc_size(data: np.ndarray) -> int | None:
    """The decoded size a blosc header declares (``None`` when there is no whole header)."""
    if len(data) < 16:
        return None
    return int(blosc._cbuffer_sizes(bytes(data[:16]))[0])


def lz4_size(data: np.ndarray) -> int | None:
    """The decoded size numcodecs' LZ4 codec writes in front of its stream."""
    return int.from_bytes(bytes(data[:4]), "little") if len(data) >= 4 else None


def _inflated(data: np.ndarray, wbits: int, limit: int) -> int:
    """How many bytes a gzip (each member in turn) or zlib stream decodes to, counted no further
    than ``limit + 1``: neither format declares its size reliably. A stream that does not
    decode counts what decoded (the codec then refuses it)."""
    total, rest = 0, memoryview(data)
    while len(rest) and total <= limit:
        stream = zlib.decompressobj(wbits)
        try:
            total += len(stream.decompress(rest, limit + 1 - total))
        except zlib.error:
            break
        if not stream.eof or wbits != GZIP_WBITS:
            break
        rest = memoryview(stream.unused_data)
    return total


GZIP_WBITS = 31
DECLARED = {"zstd": zstd_content_size, "blosc": blosc_size, "lz4": lz4_size}
INFLATED = {"gzip": GZIP_WBITS, "zlib": 15}
