"""What a GeoTIFF open and its task reads fetch from a store: each scene of a mosaic once while
opening it, each stored byte about once per process while tasks read windows (through the block
cache), and never a path other than the file's (rasterio checks a new opener with ``size("test")``:
on S3 a signed request to somebody else's bucket). Counted on fsspec's memory filesystem."""

from __future__ import annotations

import collections
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import fsspec
import numpy as np
import pytest
import rasterio
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

import geoseg
from geoseg.errors import GeosegError
from geoseg.io import blockcache
from geoseg.io.readers import open_source
from tests.conftest import CRS, TRANSFORM, textured_image

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


class CountingFS(MemoryFileSystem):
    """The memory filesystem, counting per path the bytes ranges fetch, the files opened and
    every path asked about."""

    protocol = "countmem"
    lock = threading.Lock()
    fetched: ClassVar[collections.Counter] = collections.Counter()
    opened: ClassVar[collections.Counter] = collections.Counter()
    asked: ClassVar[set] = set()

    def _note(self, counter, path, n=1):
        with self.lock:
            counter[key(path)] += n

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        self._note(self.fetched, path, len(data))
        return data

    def _open(self, path, mode="rb", **kwargs):
        self._note(self.opened, path)
        return super()._open(path, mode, **kwargs)

    def info(self, path, **kwargs):
        with self.lock:
            self.asked.add(key(path))
        return super().info(path, **kwargs)

    @classmethod
    def reset(cls):
        cls.fetched.clear()
        cls.opened.clear()
        cls.asked.clear()


fsspec.register_implementation("countmem", CountingFS, clobber=True)


def key(path: str) -> str:
    """A path of the counting store as its counters name it."""
    return str(path).removeprefix("countmem://").strip("/")


def put_tiff(url: str, data: np.ndarray, *, row: int = 0, col: int = 0, block: int | None = None,
             mask: np.ndarray | None = None, overviews: bool = False, nodata=None) -> bytes:
    """``data`` written as a GeoTIFF to ``url``; its bytes returned."""
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype, "crs": CRS, "nodata": nodata,
               "transform": window_transform(Window(col, row, data.shape[2], data.shape[1]), TRANSFORM)}
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
            if mask is not None:
                dst.write_mask(mask)
            if overviews:
                dst.build_overviews([2, 4])
        raw = mem.read()
    fsspec.filesystem("countmem").pipe_file(url, raw)
    return raw


def test_a_mosaic_open_fetches_each_scene_once_and_asks_about_no_other_path():
    image = textured_image(96, 96)
    base = f"countmem://mosaic-{uuid.uuid4().hex}"
    sizes = {}
    for i, r in enumerate((0, 32, 64)):
        for j, c in enumerate((0, 32, 64)):
            url = f"{base}/s_{i}_{j}.tif"
            sizes[key(url)] = len(put_tiff(url, image[:, r:r + 32, c:c + 32], row=r, col=c))
    CountingFS.reset()
    mosaic = geoseg.open_raster(f"{base}/*.tif")
    for path, size in sizes.items():
        # the format guess's first block holds the whole small scene: GDAL's reads take it from there
        assert CountingFS.fetched[path] <= size, (path, CountingFS.fetched[path], size)
        assert CountingFS.opened[path] <= 1, path  # the TIFF-stack reader's own look at it, only
    assert CountingFS.asked and all(p.startswith(key(base)) for p in CountingFS.asked), CountingFS.asked
    np.testing.assert_array_equal(mosaic.values, image)


def test_the_scenes_of_a_mosaic_keep_their_order_and_a_bad_one_is_named():
    image = textured_image(32, 96)
    base = f"countmem://order-{uuid.uuid4().hex}"
    urls = [f"{base}/s_{j}.tif" for j in range(3)]
    for j, url in enumerate(urls):  # overlapping scenes: the first listed wins
        put_tiff(url, np.full((3, 32, 48), j + 1, np.uint8), col=24 * j)
    mosaic = geoseg.open_raster(list(reversed(urls)))
    assert mosaic.values[0, 0, 0] == 1 and mosaic.values[0, 0, 30] == 2 and mosaic.values[0, 0, 50] == 3
    fsspec.filesystem("countmem").pipe_file(urls[1], b"II*\x00" + b"\x00" * 200)  # a broken TIFF
    with pytest.raises(GeosegError, match="s_1.tif"):
        geoseg.open_raster(f"{base}/*.tif")
    del image


@pytest.fixture(scope="module")
def stored_tiff():
    """A tiled GeoTIFF with overviews and an internal mask, in the counting store, and its pixels."""
    image = textured_image(200, 152, bands=3, seed=4)
    mask = np.full(image.shape[1:], 255, np.uint8)
    mask[40:90, 10:70] = 0
    url = f"countmem://tiff-{uuid.uuid4().hex}/image.tif"
    raw = put_tiff(url, image, block=32, mask=mask, overviews=True)
    return url, raw


def rasterio_window(raw: bytes, window, bands, level, masked_fill=None):
    """What rasterio reads of ``window`` of the file, the reference."""
    kwargs = {} if not level else {"overview_level": level - 1}
    with rasterio.MemoryFile(raw) as mem, mem.open(**kwargs) as ds:
        ys, xs = window
        win = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        data = ds.read([b for b in bands], window=win)
        if masked_fill is not None:
            data = data.astype(type(masked_fill) if not isinstance(masked_fill, int) else np.int16)
            data[:, ds.read_masks(bands[0], window=win) == 0] = masked_fill
        return data


@st.composite
def cases(draw):
    level = draw(st.sampled_from([0, 1, 2]))
    height, width = (200 >> level) + (level and 0), (152 >> level)
    y0, x0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
    y1, x1 = draw(st.integers(y0 + 1, height)), draw(st.integers(x0 + 1, width))
    bands = draw(st.sampled_from([[1], [3, 1], [1, 2, 3]]))
    cache = draw(st.sampled_from([0, 20_000, 1 << 26]))
    return level, (slice(y0, y1), slice(x0, x1)), bands, cache


@given(cases())
@settings(max_examples=60, deadline=None)
def test_cached_geotiff_windows_equal_rasterio_window_reads(stored_tiff, case):
    url, raw = stored_tiff
    level, window, bands, cache = case
    source = open_source(url, bands=bands, level=level)
    shape = source.shape[1:]
    window = tuple(slice(min(s.start, n - 1), min(s.stop, n)) for s, n in zip(window, shape))
    fill = source.georef.nodata if source.masked else None
    expected = rasterio_window(raw, window, bands, level, fill)
    saved = blockcache._cache
    blockcache._cache = blockcache.BlockCache(cache)
    try:
        cached = source.with_read_cache()
        for _ in range(2):  # from the store, then from the cache
            got = cached.read(window)
            assert got.dtype == np.dtype(source.dtype)
            np.testing.assert_array_equal(got, expected)
    finally:
        blockcache._cache = saved


def test_task_reads_fetch_each_stored_byte_about_once(stored_tiff, monkeypatch):
    url, raw = stored_tiff
    monkeypatch.setattr(blockcache, "_cache", blockcache.BlockCache(1 << 26))
    source = open_source(url).with_read_cache()
    CountingFS.reset()
    n, c, halo = 200, 64, 12
    windows = [(slice(max(0, y - halo), min(n, y + c + halo)), slice(max(0, x - halo), min(152, x + c + halo)))
               for y in range(0, 200, c) for x in range(0, 152, c)]
    with ThreadPoolExecutor(3) as pool:
        parts = list(pool.map(source.read, windows))
    for part, window in zip(parts, windows):
        np.testing.assert_array_equal(part, rasterio_window(raw, window, [1, 2, 3], 0, source.georef.nodata))
    path = key(url)
    # a full-resolution read touches no overview: at most the file, not one header per task
    assert CountingFS.fetched[path] <= len(raw), (CountingFS.fetched[path], len(raw))
    assert CountingFS.opened[path] == 0


def test_a_mosaic_read_through_the_cache_reads_its_scenes_through_it(monkeypatch):
    base = f"countmem://cached-mosaic-{uuid.uuid4().hex}"
    image = textured_image(64, 128)
    urls = [f"{base}/s_{j}.tif" for j in range(2)]
    for j, url in enumerate(urls):
        put_tiff(url, image[:, :, 64 * j:64 * (j + 1)], col=64 * j, block=32)
    monkeypatch.setattr(blockcache, "_cache", blockcache.BlockCache(1 << 26))
    mosaic = geoseg.io.readers.open_source(urls).with_read_cache()
    assert all(p.source.read_cache is not None for p in mosaic.scenes)
    window = (slice(10, 50), slice(40, 100))
    np.testing.assert_array_equal(mosaic.read(window), image[:, 10:50, 40:100])
    CountingFS.reset()
    np.testing.assert_array_equal(mosaic.read(window), image[:, 10:50, 40:100])
    assert not CountingFS.fetched and not CountingFS.opened  # the second read: from the cache


def test_a_truncated_geotiff_names_only_the_blocks_rasterio_cannot_read(tmp_path):
    """The probe for blocks that fail on their own read through the read cache, which reads
    groups of blocks of at least 256 pixels: intact blocks beside a broken one were named."""
    import re
    from pathlib import Path

    from geoseg.errors import CorruptInputError
    from geoseg.io.faults import SHOWN
    from tests.conftest import write_geotiff

    full = write_geotiff(tmp_path / "full.tif", textured_image(300, 300, seed=4))
    data = Path(full).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    broken = set()
    with rasterio.Env(), rasterio.open(cut) as ds:  # each 64-pixel block read alone
        for y in range(0, 300, 64):
            for x in range(0, 300, 64):
                try:
                    ds.read(window=Window(x, y, min(64, 300 - x), min(64, 300 - y)))
                except rasterio.errors.RasterioIOError:
                    broken.add((y // 64, x // 64))
    assert broken and len(broken) < 25
    source = open_source(str(cut)).with_read_cache()
    with pytest.raises(CorruptInputError) as raised:
        source.read((slice(0, 300), slice(0, 300)))
    named = {tuple(int(n) for n in m)
             for m in re.findall(r"block \(y (\d+), x (\d+)\)", str(raised.value))}
    assert named <= broken and len(named) == min(len(broken), SHOWN), (named, broken)
    assert f"and {len(broken) - SHOWN} more" in str(raised.value) or len(broken) <= SHOWN
