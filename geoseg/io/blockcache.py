"""Decoded storage chunks kept per process, so neighbouring windows decode a chunk once.

A task reads its region plus a halo. On a Zarr input whose chunks are as large as the
regions, that window touches up to 3 x 3 stored chunks, each fetched and decoded whole for
a strip of it; the neighbouring tasks then fetch and decode the same chunks again. This
cache keeps decoded chunks (least recently used first out, ``GEOSEG_READ_CACHE_BYTES`` in
all, 0 turns it off) so that tasks running on one worker one after another (a GPU worker
runs every task of its GPU) fetch and decode each chunk about once.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future

import numpy as np

from geoseg import config
from geoseg.tiling.plan import ceil_div

Fetch = Callable[[tuple[slice, ...]], np.ndarray]


class BlockCache:
    """Decoded blocks by key, bounded in bytes, least recently used evicted first."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._fetching: dict[Hashable, Future[np.ndarray | None]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, fetch: Callable[[], np.ndarray]) -> np.ndarray:
        """The block under ``key``; ``fetch()`` reads it when it is not held. A block another
        thread is reading is waited for, not read again (neighbouring tasks running at once
        want the same blocks); other blocks are read meanwhile. A read that fails fails its
        own thread only (its error is told apart in that thread's context, a transient one
        retried there): a thread that waited for it reads the block itself. A ``fetch`` must
        not get blocks of this cache itself (two such reads could wait for each other)."""
        while True:
            with self._lock:
                block = self._blocks.get(key)
                if block is not None:
                    self._blocks.move_to_end(key)
                    return block
                pending = self._fetching.get(key)
                if pending is None:
                    pending = self._fetching[key] = Future()
                    break
            block = pending.result()  # None: its reader failed, so read it here
            if block is not None:
                return block
        try:
            block = fetch()
            block.flags.writeable = False
        except BaseException:
            self._done(key, pending, None)
            raise
        self._put(key, block)
        self._done(key, pending, block)
        return block

    def peek(self, key: Hashable) -> np.ndarray | None:
        """The block under ``key`` when it is held; nothing is read."""
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
            return block

    def put(self, key: Hashable, block: np.ndarray) -> None:
        """Keep ``block`` under ``key`` (read-only from now on), unless it is larger than the cache."""
        block.flags.writeable = False
        self._put(key, block)

    def _done(self, key: Hashable, pending: Future[np.ndarray | None],
              block: np.ndarray | None) -> None:
        with self._lock:
            del self._fetching[key]
        pending.set_result(block)

    def _put(self, key: Hashable, block: np.ndarray) -> None:
        if block.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._blocks:
                return
            self._blocks[key] = block
            self._bytes += block.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._blocks.popitem(last=False)
                self._bytes -= old.nbytes


_cache: BlockCache | None = None
_cache_lock = threading.Lock()


def process_cache() -> BlockCache:
    """This process's cache, sized by ``GEOSEG_READ_CACHE_BYTES`` when first used."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = BlockCache(config.read_cache_bytes())
        return _cache


def read_blocks(key: Hashable, index: Sequence[slice], shape: Sequence[int], chunks: Sequence[int],
                dtype: np.dtype, fetch: Fetch, cache: BlockCache | None = None) -> np.ndarray:
    """``index`` (one slice per axis, inside ``shape``) of an array stored in ``chunks``,
    assembled from whole decoded chunks that ``fetch(chunk_slices)`` reads, through ``cache``
    (default: this process's) under ``(key, chunk coordinates)``."""
    cache = cache or process_cache()
    if cache.max_bytes <= 0:
        return np.asarray(fetch(tuple(index)))
    out = np.empty(tuple(s.stop - s.start for s in index), dtype=dtype)
    spans = [range(s.start // c, ceil_div(s.stop, c)) for s, c in zip(index, chunks)]
    for coords in itertools.product(*spans):
        bounds = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunks, shape))
        block = cache.get((key, coords), lambda b=bounds: np.asarray(fetch(b)))
        part = tuple(slice(max(s.start, b.start), min(s.stop, b.stop)) for s, b in zip(index, bounds))
        out[tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part, index))] = \
            block[tuple(slice(p.start - b.start, p.stop - b.start) for p, b in zip(part, bounds))]
    return out
