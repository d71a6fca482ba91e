"""Reads through the cache of decoded chunks equal direct reads, and fetch each chunk once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import geoseg
from geoseg.io.blockcache import BlockCache, read_blocks
from geoseg.io.readers import open_source
from tests.conftest import textured_image, write_zarr


@st.composite
def windows(draw: st.DrawFn) -> tuple[tuple[int, int], tuple[int, int], tuple[slice, slice]]:
    shape = (draw(st.integers(1, 60)), draw(st.integers(1, 60)))
    chunks = (draw(st.integers(1, 25)), draw(st.integers(1, 25)))
    starts = [draw(st.integers(0, n - 1)) for n in shape]
    index = tuple(slice(s, draw(st.integers(s + 1, n))) for s, n in zip(starts, shape))
    return shape, chunks, index


@settings(max_examples=200, deadline=None)
@given(windows(), st.integers(0, 3000))
def test_assembled_windows_equal_the_array_whatever_the_chunking_and_cache_size(case, max_bytes):
    shape, chunks, index = case
    data = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    cache = BlockCache(max_bytes)
    for _ in range(2):  # the second read may come from the cache
        out = read_blocks("k", index, shape, chunks, data.dtype, lambda part: data[part].copy(), cache)
        np.testing.assert_array_equal(out, data[index])


def test_overlapping_windows_fetch_each_chunk_once():
    data = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    fetched = []
    cache = BlockCache(1 << 20)

    def fetch(part):
        fetched.append(tuple((p.start, p.stop) for p in part))
        return data[part]

    for y in (0, 40):
        for x in (0, 40):  # 60 x 60 windows: a 40-pixel region plus halos, on 25-pixel chunks
            read_blocks("k", (slice(y, y + 60), slice(x, x + 60)), data.shape, (25, 25), data.dtype,
                        fetch, cache)
    assert len(fetched) == len(set(fetched)) == 16


def test_a_job_source_reads_through_the_cache_under_its_own_name(tmp_path):
    image = textured_image(70, 50, seed=1)
    url = write_zarr(tmp_path / "in.zarr", image, chunks=(16, 16))
    source = open_source(url)
    cached = source.with_read_cache()
    window = (slice(5, 61), slice(3, 47))
    np.testing.assert_array_equal(cached.read(window), source.read(window))
    np.testing.assert_array_equal(cached.read(window), image[:, 5:61, 3:47])
    again = source.with_read_cache()
    assert again.read_cache != cached.read_cache  # a new run never sees an old run's blocks
    zarr.open_array(url, mode="r+")[:] = 0  # the data changes between runs
    assert not again.read(window).any()
    assert geoseg.open_raster(url).shape == image.shape


def test_a_block_being_read_is_waited_for_not_read_again():
    """Neighbouring tasks running at once want the same blocks: the second waits for the
    first's read. A failed read fails its own thread only: the one waiting for it reads the
    block itself (a transient error is retried in the thread that met it, and told apart
    there only)."""
    cache, started, release, calls = BlockCache(1 << 20), threading.Event(), threading.Event(), []

    def slow(value: int):
        def fetch() -> np.ndarray:
            calls.append(value)
            started.set()
            release.wait(10)
            if value < 0:
                raise OSError("storage went away")
            return np.full(4, value)
        return fetch

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(cache.get, "a", slow(1))
        started.wait(10)
        waiting = [pool.submit(cache.get, "a", slow(2)) for _ in range(2)]
        time.sleep(0.2)
        release.set()
        assert [f.result()[0] for f in (first, *waiting)] == [1, 1, 1] and calls == [1]
        started.clear(), release.clear()
        failing = pool.submit(cache.get, "b", slow(-1))
        started.wait(10)
        waiting = pool.submit(cache.get, "b", slow(3))
        time.sleep(0.2)
        release.set()
        with pytest.raises(OSError, match="storage went away"):
            failing.result()
        assert waiting.result()[0] == 3 and calls == [1, -1, 3]
    assert cache.get("b", lambda: np.full(4, 5))[0] == 3  # kept from the waiter's own read
