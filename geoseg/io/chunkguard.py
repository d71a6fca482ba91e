"""Zarr chunks checked against their array's chunk size before they are decoded.

A compressed chunk may decode to far more than its array's chunk holds: 65 KB of zstd can
declare 2 GB, which zarr's codecs allocate in full before noticing the size is wrong (a
decompression bomb: a worker runs out of memory on a tiny file). Every chunk of an input
array is fetched from its store, so the one place every chunk read goes through is the
store: :func:`guarded` re-opens an array on a :class:`ChunkGuardStore`, which looks at each
chunk's bytes as they arrive and follows them down the array's codec chain (its bytes-to-bytes
codecs, or a v2 array's compressor and filters, in decoding order) before any of zarr's codecs
runs: each compressor's stream must declare (zstd, blosc, lz4) or decode to (gzip, zlib, read
no further than the bound) at most a bound, the array's chunk in bytes for the last compressor
and what a chunk of that size is ever stored in (:func:`stored_limit`) for one whose output is
another compressor's stream (``[bytes, gzip, gzip]``: a 3 MB outer stream may hold a 3 GB
inner one). Only a chain of two compressors or more is decoded here, each step bounded; a
chain geoseg cannot follow that way (a compressor it cannot bound, or a filter, ahead of
another compressor) is refused when the array is opened. A chunk is also fetched no further
than the most any codec stores a chunk in, so a chunk object of gigabytes where the array's
chunk holds kilobytes is refused without being read into memory.

A sharded array's inner chunks are checked the same way against the inner chunk: zarr reads
each inner chunk it needs as one byte range of its shard (or the whole shard, whose index then
gives each inner chunk's range), and the shard index's own reads pass as they are. A shard
stored through bytes-to-bytes codecs of its own (``[sharding_indexed, zstd]``, zarr 3.1's
default when sharding is given as the serializer) is read whole by zarr: each of those steps is
decoded here, bounded by what a whole shard is ever stored in, and the inner chunks are checked
inside the decoded shard (found by its index there). Sharding inside sharding is refused.

Not covered: compressors whose stream declares no size and that cannot be decoded in bounded
memory here (bz2, lzma, plugins), as the last compressor of a chain, get the stored-size bound
only.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np
import zarr
from numcodecs import blosc, zstd
from zarr.abc.codec import ArrayArrayCodec, BytesBytesCodec
from zarr.abc.store import ByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.codecs import ShardingCodec, TransposeCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import StorePath, WrapperStore

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.metaguard import METADATA_KEYS, bounded_get

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UNKNOWN = -1  # a zstd frame that does not declare its decoded size
FILTER_FACTOR = 16  # bytes per element a filter's encoded form may take (complex128)
CHECKSUMS = {"crc32c": 4}  # bytes-to-bytes codecs that only append a checksum of this many bytes
# numcodecs filters (v2 ``filters``, v3 ``numcodecs.*``) that compress nothing: harmless after
# the last compressor, but geoseg does not run them to follow a chain past them
FILTERS = frozenset({"delta", "shuffle", "bitshuffle", "fixedscaleoffset", "quantize", "astype",
                     "packbits", "categorize", "bitround"})
# numcodecs checksums (v2 ``filters``, v3 ``numcodecs.*``): compress nothing either
PASSIVE = FILTERS | {"crc32", "adler32", "fletcher32", "jenkins_lookup3"}
SHARD_CHUNK_OVERHEAD = 64  # bytes a compressor adds to an inner chunk at most (headers, blosc's 16)
EMPTY = 2**64 - 1  # a shard index's offset and length of an inner chunk that is not stored


@dataclass(frozen=True)
class Chain:
    """How one stored chunk decodes: its bytes-to-bytes ``steps`` (codec names, in decoding
    order) and ``limit``, the bytes its last compressor may decode to; ``what`` says what the
    chunk holds."""

    steps: tuple[str, ...]
    limit: int
    what: str

    @property
    def last(self) -> int:
        """The index of the last compressor among the steps (-1: none, nothing to check)."""
        return max((i for i, name in enumerate(self.steps)
                    if name not in CHECKSUMS and name not in PASSIVE), default=-1)

    @property
    def trailer(self) -> int:
        """Checksum bytes after the first compressor's stream."""
        return sum(CHECKSUMS.get(name, 0) for name in self.steps[: self.last + 1])

    @property
    def stored(self) -> int:
        """The most bytes a chunk of this chain is ever stored in."""
        return stored_limit(self.limit, self.trailer)


@dataclass(frozen=True)
class Shards:
    """Where a sharded array's shard index lies: ``index`` bytes at the ``start`` or the end of
    each shard; ``codec`` decodes it, ``per_shard`` inner chunks along each axis. ``outer``:
    the :class:`Chain` a whole shard is stored through (``None``: stored as it is)."""

    codec: ShardingCodec
    per_shard: tuple[int, ...]
    index: int
    start: bool
    outer: Chain | None = None

    def is_index_read(self, byte_range: ByteRequest) -> bool:
        """Whether ``byte_range`` is zarr's read of a shard's index (nothing to check)."""
        if self.start:
            return isinstance(byte_range, RangeByteRequest) and (
                byte_range.start, byte_range.end) == (0, self.index)
        return isinstance(byte_range, SuffixByteRequest) and byte_range.suffix == self.index


def guarded(array: zarr.Array, url: str) -> zarr.Array:
    """``array`` reading its chunks through a :class:`ChunkGuardStore` (itself where there is
    nothing to check: a dtype of no fixed size).

    Raises
    ------
    UnsupportedFormatError
        When the array's codec chain cannot be followed in bounded memory.
    """
    dtype = np.dtype(array.dtype)
    if dtype.itemsize == 0 or dtype.hasobject:
        return array
    url = public_url(url)
    chain, shards = _decode_plan(array, url)
    stored = chain.stored
    if shards is not None:
        stored = shard_limit(chain, shards.per_shard, shards.index)
        if shards.outer is not None:
            stored = shards.outer.stored
    store = ChunkGuardStore(array.store, chain=chain, shards=shards, url=url, stored=stored)
    inner = array.async_array
    return zarr.Array(AsyncArray(inner.metadata, StorePath(store, array.path), inner.config))


def stored_limit(limit: int, trailer: int) -> int:
    """The most bytes a chunk decoding to ``limit`` bytes is stored in, whatever its codec:
    compressors expand incompressible data by under 1% plus a header (zstd, lz4, gzip, blosc's
    16 bytes), so twice the decoded size and a MiB more is never reached by a real chunk."""
    return 2 * limit + 2**20 + trailer


def shard_limit(chain: Chain, per_shard: tuple[int, ...], index: int) -> int:
    """The most bytes a shard of inner chunks of ``chain`` is ever stored in (as it is: before
    any codec around the sharding codec): as :func:`stored_limit` for all its inner chunks at
    once (twice their decoded size and a MiB), a header and checksums for each, and its index.
    Not each inner chunk's own limit summed: its MiB of slack, times 10,000 inner chunks of
    100 bytes, let a shard compressed whole decode to 10 GB."""
    n = math.prod(per_shard)
    return stored_limit(chain.limit * n, 0) + n * (SHARD_CHUNK_OVERHEAD + chain.trailer) + index


def _decode_plan(array: zarr.Array, url: str) -> tuple[Chain, Shards | None]:
    """The :class:`Chain` each stored chunk (a sharded array's inner chunk) decodes through,
    and where a sharded array's shard indexes lie."""
    dtype = np.dtype(array.dtype)
    if array.metadata.zarr_format == 2:
        codec = array.metadata.compressor
        filters = [f.codec_id for f in reversed(array.metadata.filters or ())]
        steps = ([codec.codec_id] if codec is not None else []) + filters
        filtered = any(name in FILTERS for name in filters)
        return _chain(steps, filtered, array.chunks, dtype, url), None
    codecs = array.metadata.codecs
    sharding = next((c for c in codecs if isinstance(c, ShardingCodec)), None)
    if sharding is None:
        return _v3_chain(codecs, array.chunks, dtype, url), None
    around = [_v3_name(c) for c in reversed(codecs) if isinstance(c, BytesBytesCodec)]
    steps = [*around, "sharding_indexed", *_v3_steps(sharding.codecs)]
    if any(isinstance(c, ShardingCodec) for c in sharding.codecs):
        _refuse_chain(url, steps, "its shards' inner chunks are sharded again (sharding inside "
                      "sharding), and geoseg checks the inner chunks of one level of shards only")
    for name in around:
        if name not in CHECKSUMS and name not in DECLARED and name not in INFLATED:
            _refuse_chain(url, steps, f"its shards are stored whole through {name}, which geoseg "
                          "cannot decode in bounded memory to check the inner chunks inside")
    chain = _v3_chain(sharding.codecs, sharding.chunk_shape, dtype, url)
    # the chunk grid's shape is the shard's: ``array.shards`` is None when codecs surround
    # the sharding codec
    shard = array.metadata.chunk_grid.chunk_shape
    per_shard = tuple(int(s) // int(c) for s, c in zip(shard, sharding.chunk_shape))
    index = int(sharding._shard_index_size(per_shard))
    outer = None
    if around:
        limit = shard_limit(chain, per_shard, index)
        outer = Chain(tuple(around), limit, f"a shard of {math.prod(per_shard):,} inner chunks "
                      f"of {chain.what}, stored in at most {limit:,} bytes")
    shards = Shards(sharding, per_shard, index, sharding.index_location.value == "start", outer)
    return chain, shards


def _v3_steps(codecs: Any) -> list[str]:
    """The names of ``codecs``' bytes-to-bytes and sharding codecs, in decoding order."""
    return [_v3_name(c) for c in reversed(codecs)
            if isinstance(c, (BytesBytesCodec, ShardingCodec))]


def _v3_chain(codecs: Any, chunks: tuple[int, ...], dtype: np.dtype, url: str) -> Chain:
    """The :class:`Chain` of a v3 array's (or a shard's inner) ``codecs``."""
    steps = [_v3_name(c) for c in reversed(codecs) if isinstance(c, BytesBytesCodec)]
    filtered = any(isinstance(c, ArrayArrayCodec) and not isinstance(c, TransposeCodec)
                   for c in codecs)
    return _chain(steps, filtered, chunks, dtype, url)


def _chain(steps: list[str], filtered: bool, chunks: tuple[int, ...], dtype: np.dtype,
           url: str) -> Chain:
    """``steps`` (in decoding order) as a :class:`Chain`, refused when a step geoseg cannot
    bound or does not run (a plugin compressor, a filter) lies before another compressor."""
    elements = math.prod(int(c) for c in chunks)
    limit = elements * (max(dtype.itemsize, FILTER_FACTOR) if filtered else dtype.itemsize)
    chain = Chain(tuple(steps), limit, _chunk_text(chunks, dtype))
    for name in steps[: chain.last]:
        if name not in CHECKSUMS and name not in DECLARED and name not in INFLATED:
            _refuse_chain(url, steps, f"geoseg cannot follow the chain past {name} (a "
                          "compressor it cannot decode in bounded memory, or a filter it does "
                          "not run), so it cannot check what the codecs after it decode to")
    return chain


def _refuse_chain(url: str, steps: list[str], why: str) -> None:
    """Refuse the array at ``url``, whose codecs ``steps`` (in decoding order) geoseg cannot
    follow in bounded memory; ``why`` is a clause saying which step and why."""
    raise UnsupportedFormatError(
        f"The Zarr array {url} decodes its chunks through the codecs {' -> '.join(steps)} (in "
        f"decoding order), but {why}: a chunk of such an array can be a decompression bomb "
        "that geoseg cannot check before zarr decodes it, so geoseg does not read it. Expected "
        "one compressor (zstd, blosc, gzip, zlib or lz4, with crc32c or filters around it), or "
        "compressors of those kinds only, and at most one level of sharding. Re-write the array "
        "with such codecs (e.g. with zarr-python, from its source) and give that copy.")


def _v3_name(codec: Any) -> str:
    """A v3 codec's name, numcodecs' wrappers (``numcodecs.zstd``) read as the codec itself."""
    return str(codec.to_dict().get("name", "")).removeprefix("numcodecs.")


def _chunk_text(chunks: tuple[int, ...], dtype: np.dtype) -> str:
    """``"3 x 128 x 128 uint8 (49,152 bytes)"``: what one chunk of ``chunks`` values holds."""
    dims = " x ".join(str(c) for c in chunks)
    nbytes = math.prod(int(c) for c in chunks) * dtype.itemsize
    return f"{dims} {dtype} ({nbytes:,} bytes)"


class ChunkGuardStore(WrapperStore):
    """A read-only view of a store whose reads of chunks (a shard's inner chunks) are checked
    by :func:`check_chunk` (metadata documents and shard indexes pass as they are)."""

    def __init__(self, store: Any, *, chain: Chain, shards: Shards | None = None,
                 url: str = "", stored: int = 0):
        super().__init__(store)
        self.chain, self.shards, self.url, self.stored = chain, shards, url, stored

    def __getattr__(self, name: str) -> Any:
        """The wrapped store's other attributes (an fsspec store's ``fs`` and ``path``, which
        :mod:`geoseg.io.missing` asks for to test a key with a HEAD, not a GET of the chunk)."""
        if name == "_store":
            raise AttributeError(name)
        return getattr(self._store, name)

    def _with_store(self, store: Any) -> ChunkGuardStore:
        return type(self)(store, chain=self.chain, shards=self.shards, url=self.url,
                          stored=self.stored)

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if key.rsplit("/", 1)[-1] in METADATA_KEYS:
            return await self._store.get(key, prototype, byte_range)
        if byte_range is not None:
            return await self._get_range(key, prototype, byte_range)
        # one byte more than a chunk is ever stored in: no more is read of a larger object
        buffer = await bounded_get(self._store, key, prototype, self.stored + 1,
                                   lambda n: self._check_stored(key, n, self.stored))
        if buffer is None:
            return None
        data = buffer.as_numpy_array().view(np.uint8).reshape(-1)
        if self.shards is None:
            check_chunk(self, key, data)
        else:
            await self._check_shard(key, prototype, data)
        return buffer

    async def _get_range(self, key: str, prototype: BufferPrototype,
                         byte_range: ByteRequest) -> Buffer | None:
        """A byte range of chunk ``key``: in a sharded array, an inner chunk (zarr reads each
        as one range of its shard) unless it is the shard's index."""
        shards = self.shards
        # zarr reads a shard stored through codecs of its own (``outer``) only whole: it decodes
        # no part of one, so no range of one is an inner chunk
        if (shards is None or shards.outer is not None or shards.is_index_read(byte_range)
                or not isinstance(byte_range, RangeByteRequest)):
            return await self._store.get(key, prototype, byte_range)
        where = f"{key} (its inner chunk at bytes {byte_range.start:,} to {byte_range.end:,})"
        self._check_stored(where, byte_range.end - byte_range.start, self.chain.stored)
        buffer = await self._store.get(key, prototype, byte_range)
        if buffer is not None:
            data = buffer.as_numpy_array().view(np.uint8).reshape(-1)
            self._check_complete(where, len(data), byte_range.end - byte_range.start)
            check_chunk(self, where, data)
        return buffer

    def _check_complete(self, where: str, got: int, asked: int) -> None:
        """Refuse an inner chunk its shard holds fewer bytes of than its index says: zarr read
        the empty range past a shard's end as a chunk never written (the fill value)."""
        if got < asked:
            raise CorruptInputError(
                f"Zarr chunk {where} of {self.url}: the shard's index places {asked:,} bytes "
                f"there, but the shard holds {got:,} of them. The shard is truncated or its "
                "index is corrupt: re-write the array (or that shard) from its source.")

    async def _check_shard(self, key: str, prototype: BufferPrototype,
                           data: np.ndarray) -> None:
        """Check each inner chunk of a whole shard, found by its index (an index, or a stream
        around the shard, that does not decode is left to zarr to refuse)."""
        shards = self.shards
        assert shards is not None
        if shards.outer is not None:
            # The shard's own codecs (``[sharding_indexed, zstd]``) are decoded here, each step
            # bounded, to reach its index and inner chunks; zarr decodes them again itself. That
            # double decode of the outer steps, for this layout only, is the price of checking
            # the inner chunks before zarr allocates what they declare.
            decoded = follow(self, f"{key} (a whole shard)", data, shards.outer, whole=True)
            if decoded is None:
                return
            data = decoded
        if len(data) < shards.index:
            return
        index_bytes = data[: shards.index] if shards.start else data[len(data) - shards.index:]
        try:
            index = await shards.codec._decode_shard_index(
                prototype.buffer.from_bytes(index_bytes.tobytes()), shards.per_shard)
        except Exception:  # noqa: BLE001 - zarr's decode of the same index refuses it
            return
        for offset, length in np.asarray(index.offsets_and_lengths).reshape(-1, 2).tolist():
            if offset == EMPTY:
                continue
            where = f"{key} (its inner chunk at bytes {offset:,} to {offset + length:,})"
            self._check_stored(where, length, self.chain.stored)
            self._check_complete(where, len(data[offset:offset + length]), length)
            check_chunk(self, where, data[offset:offset + length])

    def _check_stored(self, key: str, n_bytes: int, most: int) -> None:
        if n_bytes > most:
            raise CorruptInputError(
                f"Zarr chunk {key} of {self.url} is stored in more than {most:,} bytes "
                f"(geoseg read it no further), but a chunk of this array holds "
                f"{self.chain.what}, which no codec stores in that much. The chunk is corrupt "
                "or hostile, or the array's metadata (chunk shape, data type) does not describe "
                "its chunks: re-write the array (or that chunk) from its source.")


def check_chunk(guard: ChunkGuardStore, key: str, data: np.ndarray) -> None:
    """Refuse chunk ``key`` when, followed down its codec chain, a compressor's stream declares
    or decodes to more than its bound (the chunk's bytes for the last compressor, what such a
    chunk is stored in for one before it); a stream that does not parse is left to the codec
    to refuse. Only a chain of several compressors is decoded here, each step bounded."""
    follow(guard, key, data, guard.chain, whole=False)


def follow(guard: ChunkGuardStore, key: str, data: np.ndarray, chain: Chain,
           whole: bool) -> np.ndarray | None:
    """:func:`check_chunk` of ``data`` down ``chain``; with ``whole``, every step (the last
    compressor and checksums after it too) is decoded, each bounded, and the bytes the chain
    decodes to are returned (``None`` where a stream does not parse: zarr refuses it)."""
    steps = chain.steps if whole else chain.steps[: chain.last + 1]
    compressors = [name for name in steps if name not in CHECKSUMS]
    for i, name in enumerate(steps):
        if name in CHECKSUMS:
            data = data[: max(len(data) - CHECKSUMS[name], 0)]
            continue
        if name not in DECLARED and name not in INFLATED:
            return None  # the last compressor, of no declared size: the stored bound only
        bound = chain.limit if i == chain.last else stored_limit(chain.limit, 0)
        said, decoded = _step(name, data, bound, decode=whole or i < chain.last)
        if said:
            where = "" if len(compressors) == 1 else (
                f" (compressor {_rank(chain.steps, i)} of {' -> '.join(chain.steps)}, in "
                "decoding order)")
            raise CorruptInputError(
                f"Zarr chunk {key} of {guard.url}: its {name} stream{where} ({len(data):,} bytes) "
                f"{said}, but a chunk of this array holds {chain.what}. The chunk is corrupt or a "
                "decompression bomb, or the array's metadata (chunk shape, data type) does not "
                "describe its chunks, so geoseg does not decode it: re-write the array (or that "
                "chunk) from its source.")
        if decoded is None:
            return None
        data = decoded
    return data


def _rank(steps: tuple[str, ...], i: int) -> int:
    """Which compressor (1 for the first decoded) step ``i`` of ``steps`` is."""
    return 1 + sum(name not in CHECKSUMS for name in steps[:i])


def _step(name: str, data: np.ndarray, bound: int,
          decode: bool) -> tuple[str, np.ndarray | None]:
    """``(what compressor name's stream data says, "" when it fits in bound; its decoded bytes
    when asked to decode and it fits and parses, else None)``."""
    if name in INFLATED:
        total, decoded = _inflate(data, INFLATED[name], bound, keep=decode)
        if total > bound:
            return f"decodes to more than {bound:,} bytes (geoseg read it no further)", None
        return "", np.frombuffer(decoded, np.uint8) if decode else None
    declared = DECLARED[name](data)
    if declared is None:
        return "", None
    if declared == UNKNOWN:
        if decode:
            said = ("declares no decoded size, which geoseg needs of a stream it decodes "
                    "before zarr does (one holding another compressor's stream, or a shard)")
            return said, None
        if _zstd_fits(data, bound):
            return "", None
        return f"declares no decoded size and does not decode to {bound:,} bytes", None
    if declared > bound:
        return f"declares {declared:,} bytes once decoded", None
    if not decode:
        return "", None
    try:  # at most ``bound`` bytes: each codec allocates what its stream declares
        return "", np.frombuffer(numcodecs.get_codec({"id": name}).decode(bytes(data)), np.uint8)
    except Exception:  # noqa: BLE001 - zarr's decode of the same stream refuses it
        return "", None


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


def _inflate(data: np.ndarray, wbits: int, limit: int, keep: bool) -> tuple[int, bytes]:
    """How many bytes a gzip (each member in turn) or zlib stream decodes to, counted no further
    than ``limit + 1``, and those bytes when ``keep``: neither format declares its size
    reliably. A stream that does not decode counts what decoded (the codec then refuses it)."""
    total, rest, kept = 0, memoryview(data), []
    while len(rest) and total <= limit:
        stream = zlib.decompressobj(wbits)
        try:
            out = stream.decompress(rest, limit + 1 - total)
        except zlib.error:
            break
        total += len(out)
        if keep:
            kept.append(out)
        if not stream.eof or wbits != GZIP_WBITS:
            break
        rest = memoryview(stream.unused_data)
    return total, b"".join(kept)


GZIP_WBITS = 31
DECLARED = {"zstd": zstd_content_size, "blosc": blosc_size, "lz4": lz4_size}
INFLATED = {"gzip": GZIP_WBITS, "zlib": 15}
