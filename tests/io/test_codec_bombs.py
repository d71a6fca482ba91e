"""Decompression bombs past a chunk's first compressor (a codec chain, a v2 filter), inside a
shard's inner chunks, and codec lists long enough to hang zarr's parsing of them."""

from __future__ import annotations

import json
import pathlib
import struct
import tracemalloc
import zlib

import google_crc32c
import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, TransposeCodec, ZstdCodec
from zarr.codecs.numcodecs import BZ2

import geoseg
from geoseg.errors import CorruptInputError, UnsupportedFormatError

BOMB = 64 * 2**20  # what the hostile inner streams decode to; a chunk holds 256 KiB
CHUNK = (1, 512, 512)
HOLDS = "holds 1 x 512 x 512 uint8 (262,144 bytes)"


def zlib_bomb(n: int, wbits: int) -> bytes:
    """A zlib (15) or gzip (31) stream of ``n`` zero bytes (65 KB for 64 MiB)."""
    stream = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return stream.compress(bytes(n)) + stream.flush()


def v3_array(path, compressors, chunk: bytes | None = None, **kwargs) -> str:
    array = zarr.create_array(str(path), shape=CHUNK, chunks=CHUNK, dtype="uint8",
                              compressors=compressors, dimension_names=("band", "y", "x"),
                              **kwargs)
    array[:] = 3
    if chunk is not None:
        (path / "c" / "0" / "0" / "0").write_bytes(chunk)
    return str(path)


def sharded(path, compressors, inner: bytes | None = None) -> str:
    """A v3 array of one shard of four inner chunks of 1 x 256 x 256, the first replaced by
    ``inner`` (the shard index, at its end, re-written to match)."""
    array = zarr.create_array(str(path), shape=CHUNK, chunks=(1, 256, 256), shards=CHUNK,
                              dtype="uint8", compressors=compressors,
                              dimension_names=("band", "y", "x"))
    array[:] = 3
    if inner is not None:
        shard = path / "c" / "0" / "0" / "0"
        raw = shard.read_bytes()
        index = np.frombuffer(raw[-(16 * 4 + 4):-4], "<u8").reshape(4, 2)
        chunks = [inner] + [raw[o:o + n] for o, n in index[1:]]
        offsets = np.cumsum([0] + [len(c) for c in chunks[:-1]])
        table = np.array([(o, len(c)) for o, c in zip(offsets, chunks)], "<u8").tobytes()
        shard.write_bytes(b"".join(chunks) + with_crc(table))
    return str(path)


def sized_zstd_bomb(size: int, block: int = 128 * 1024) -> bytes:
    """A zstd frame declaring ``size`` zero bytes, in RLE blocks (a few bytes per block)."""
    blocks = b"".join(((block << 3) | (1 << 1) | (i == size // block - 1)).to_bytes(3, "little")
                      + b"\0" for i in range(size // block))
    return b"\x28\xb5\x2f\xfd\x80\x58" + size.to_bytes(4, "little") + blocks


def v2_array(path, compressor, filters, chunk: bytes | None = None) -> str:
    array = zarr.create_array(str(path), shape=CHUNK, chunks=CHUNK, dtype="uint8",
                              compressors=compressor, filters=filters, zarr_format=2)
    array.attrs["_ARRAY_DIMENSIONS"] = ["band", "y", "x"]
    array[:] = 3
    if chunk is not None:
        (path / "0.0.0").write_bytes(chunk)
    return str(path)


def warm_up(url: str) -> None:
    sound = v3_array(pathlib.Path(url).with_name("sound.zarr"), [ZstdCodec()])
    assert (geoseg.open_raster(sound).values == 3).all()


def refused_within(url: str, megabytes: int) -> str:
    """The message of the CorruptInputError reading ``url`` raises, checked to have taken
    under ``megabytes`` of Python allocations (the bomb decodes to 64), counted after a read of
    a sound array has imported what reads need."""
    warm_up(url)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptInputError) as info:
            geoseg.open_raster(url).values  # noqa: B018 - the read is the test
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < megabytes * 2**20, peak
    return " ".join(str(info.value).split())


@pytest.mark.parametrize(("make", "said"), [
    (lambda p: v3_array(p, [GzipCodec(), GzipCodec()], gzip_chunk()),
     "its gzip stream (compressor 2 of gzip -> gzip, in decoding order)"),
    (lambda p: v3_array(p, [GzipCodec(), ZstdCodec()],
                        numcodecs.Zstd().encode(zlib_bomb(BOMB, 31))),
     "its gzip stream (compressor 2 of zstd -> gzip, in decoding order)"),
    (lambda p: v3_array(p, [GzipCodec(), Crc32cCodec(), GzipCodec(), Crc32cCodec()],
                        with_crc(gzip_chunk(crc=True))),
     "its gzip stream (compressor 2 of crc32c -> gzip -> crc32c -> gzip"),
    (lambda p: v2_array(p, None, [numcodecs.Zlib()], zlib_bomb(BOMB, 15)), "its zlib stream ("),
    (lambda p: v2_array(p, numcodecs.Blosc(), [numcodecs.Zlib()],
                        numcodecs.Blosc().encode(zlib_bomb(BOMB, 15))),
     "its zlib stream (compressor 2 of blosc -> zlib, in decoding order)"),
], ids=["v3-gzip-gzip", "v3-gzip-zstd", "v3-crc32c-between", "v2-zlib-filter",
        "v2-blosc-zlib-filter"])
def test_a_bomb_behind_the_first_compressor_is_refused_in_bounded_memory(tmp_path, make, said):
    """Was: only the outermost compressor checked (a v2 filter not at all), so a 426-byte chunk
    whose inner stream decodes to 3 GiB took 3.5 GB and ended in MemoryError."""
    message = refused_within(make(tmp_path / "bomb.zarr"), 24)
    assert said in message and "decodes to more than 262,144 bytes" in message, message
    assert HOLDS in message and "decompression bomb" in message, message


def gzip_chunk(crc: bool = False) -> bytes:
    """An outer gzip stream (66 KB once decoded: under a chunk) holding a 64 MiB gzip bomb."""
    inner = zlib_bomb(BOMB, 31)
    stream = zlib.compressobj(1, zlib.DEFLATED, 31)
    return stream.compress(with_crc(inner) if crc else inner) + stream.flush()


def with_crc(data: bytes) -> bytes:
    return data + struct.pack("<I", google_crc32c.value(data))


@pytest.mark.parametrize("make", [
    lambda p: v3_array(p, [ZstdCodec()]),
    lambda p: v3_array(p, [zarr.codecs.BloscCodec()]),
    lambda p: v3_array(p, [GzipCodec(), Crc32cCodec()]),
    lambda p: v3_array(p, [GzipCodec(), ZstdCodec()]),
    lambda p: v3_array(p, [ZstdCodec()], filters=[TransposeCodec(order=(0, 2, 1))],
                       serializer=BytesCodec()),
    lambda p: v2_array(p, numcodecs.Zlib(), [numcodecs.Delta("u1")]),
    lambda p: v2_array(p, numcodecs.Blosc(), [numcodecs.Shuffle(1)]),
    lambda p: v2_array(p, numcodecs.BZ2(), []),
    lambda p: sharded(p, [ZstdCodec(), Crc32cCodec()]),
], ids=["zstd", "blosc", "gzip-crc32c", "gzip-zstd", "transpose-zstd", "v2-zlib-delta",
        "v2-blosc-shuffle", "v2-bz2", "sharded"])
def test_common_codec_chains_still_read_as_zarr_reads_them(tmp_path, make):
    url = make(tmp_path / "a.zarr")
    image = np.random.default_rng(0).integers(0, 255, CHUNK, dtype=np.uint8)
    zarr.open_array(url, mode="r+")[:] = image
    np.testing.assert_array_equal(geoseg.open_raster(url).values, image)


@pytest.mark.parametrize("window", [(slice(None), slice(0, 64), slice(0, 64)),
                                    (slice(None), slice(None), slice(None))],
                         ids=["inner-chunk-read", "whole-shard-read"])
def test_a_bomb_in_a_shards_inner_chunk_is_refused_in_bounded_memory(tmp_path, window):
    """Was: a sharded array's chunks were not checked at all (a 98 KB shard took 3.5 GB, then
    an internal error). zarr reads one inner chunk as a byte range of its shard, all four as the
    whole shard: each inner chunk is checked either way; the other inner chunks still read."""
    url = sharded(tmp_path / "s.zarr", [ZstdCodec()], sized_zstd_bomb(BOMB))
    warm_up(url)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptInputError) as info:
            geoseg.open_raster(url)[window].compute()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = " ".join(str(info.value).split())
    assert peak < 24 * 2**20, peak
    assert ("Zarr chunk c/0/0/0 (its inner chunk at bytes 0 to " in message
            and "its zstd stream" in message and "declares 67,108,864 bytes once decoded" in message
            and "holds 1 x 256 x 256 uint8 (65,536 bytes)" in message), message
    assert (geoseg.open_raster(url)[:, 300:, 300:].values == 3).all()


@pytest.mark.parametrize("window", [np.s_[:, :256, :256], np.s_[:, :, :]], ids=["inner-chunk",
                                                                               "whole-shard"])
def test_an_inner_chunk_placed_past_its_shards_end_is_refused_not_read_as_fill(tmp_path, window):
    """A shard index placing an inner chunk at byte 10**9 of a shard of a few hundred bytes
    read as the fill value (zarr took the empty range for a chunk never written): corrupt."""
    url = sharded(tmp_path / "s.zarr", [ZstdCodec()])
    shard = tmp_path / "s.zarr" / "c" / "0" / "0" / "0"
    raw = shard.read_bytes()
    index = np.frombuffer(raw[-(16 * 4 + 4):-4], "<u8").reshape(4, 2).copy()
    index[0, 0] = 10**9
    shard.write_bytes(raw[:-(16 * 4 + 4)] + with_crc(index.tobytes()))
    with pytest.raises(CorruptInputError, match=r"the shard's index places \d+ bytes there, "
                                                r"but the shard holds 0 of them"):
        geoseg.open_raster(url)[window].compute()


def whole_sharded(path, location: str = "end", inner: bytes | None = None,
                  stream: bytes | None = None, outer=None, codecs=None) -> str:
    """A v3 array sharded by zarr's explicit serializer, so zarr 3.1 adds its default zstd
    around the sharding codec (``[sharding_indexed, zstd]``: each shard compressed whole) unless
    ``outer`` says otherwise: one shard of four inner chunks of 1 x 256 x 256, zstd each. The
    first inner chunk is replaced by ``inner`` (the index, at the end, re-written to match), or
    the whole shard's stored bytes by ``stream``."""
    serializer = ShardingCodec(chunk_shape=(1, 256, 256), index_location=location,
                               codecs=codecs or [BytesCodec(), ZstdCodec()])
    array = zarr.create_array(str(path), shape=CHUNK, chunks=CHUNK, dtype="uint8",
                              serializer=serializer, compressors=outer or "auto",
                              dimension_names=("band", "y", "x"))
    array[:] = 3
    shard = path / "c" / "0" / "0" / "0"
    if inner is not None:
        assert [c["name"] for c in json.loads((path / "zarr.json").read_text())["codecs"]] == [
            "sharding_indexed", "zstd"]
        raw = numcodecs.Zstd().decode(shard.read_bytes())
        index = np.frombuffer(raw[-(16 * 4 + 4):-4], "<u8").reshape(4, 2)
        chunks = [inner] + [raw[o:o + n] for o, n in index[1:]]
        offsets = np.cumsum([0] + [len(c) for c in chunks[:-1]])
        table = np.array([(o, len(c)) for o, c in zip(offsets, chunks)], "<u8").tobytes()
        shard.write_bytes(numcodecs.Zstd().encode(b"".join(chunks) + with_crc(table)))
    if stream is not None:
        shard.write_bytes(stream)
    return str(path)


@pytest.mark.parametrize("location", ["start", "end"])
def test_a_shard_compressed_whole_reads_as_written(tmp_path, location):
    """Was: ``[sharding_indexed, zstd]`` (zarr 3.1's default around an explicit sharding
    serializer) was refused as unbounded, with a garbled message; it read before the guard."""
    url = whole_sharded(tmp_path / "a.zarr", location)
    image = np.random.default_rng(1).integers(0, 255, CHUNK, dtype=np.uint8)
    zarr.open_array(url, mode="r+")[:] = image
    raster = geoseg.open_raster(url)
    np.testing.assert_array_equal(raster.values, image)
    np.testing.assert_array_equal(raster[:, 200:300, 10:400].values, image[:, 200:300, 10:400])


@pytest.mark.parametrize(("make", "said"), [
    (lambda p: whole_sharded(p, inner=sized_zstd_bomb(BOMB)),
     "Zarr chunk c/0/0/0 (its inner chunk at bytes 0 to "),
    (lambda p: whole_sharded(p, stream=sized_zstd_bomb(BOMB)),
     "Zarr chunk c/0/0/0 (a whole shard) of "),
], ids=["inner-chunk", "whole-shard"])
def test_a_bomb_in_a_shard_compressed_whole_is_refused_in_bounded_memory(tmp_path, make, said):
    """A bomb in an inner chunk of a zstd-compressed shard, or the shard's own zstd stream
    declaring far more than a shard is ever stored in: refused before zarr decodes it."""
    message = refused_within(make(tmp_path / "s.zarr"), 24)
    assert said in message and "declares 67,108,864 bytes once decoded" in message, message
    holds = "holds 1 x 256 x 256 uint8 (65,536 bytes)"
    if "whole shard" in said:
        holds = "holds a shard of 4 inner chunks of " + holds.removeprefix("holds ")
    assert holds in message and "decompression bomb" in message, message


@pytest.mark.parametrize(("make", "chain", "why"), [
    (lambda p: whole_sharded(p, codecs=[ShardingCodec(chunk_shape=(1, 128, 128))]),
     "zstd -> sharding_indexed -> sharding_indexed", "sharded again (sharding inside sharding)"),
    (lambda p: whole_sharded(p, outer=[BZ2()]),
     "bz2 -> sharding_indexed -> zstd",
     "its shards are stored whole through bz2, which geoseg cannot decode in bounded memory"),
], ids=["nested-sharding", "bz2-around-shards"])
def test_shards_geoseg_cannot_follow_are_refused_when_opened(tmp_path, make, chain, why):
    url = make(tmp_path / "a.zarr")
    with pytest.raises(UnsupportedFormatError) as info:
        geoseg.open_raster(url).values  # noqa: B018 - the read is the test
    message = " ".join(str(info.value).split())
    assert f"through the codecs {chain} (in decoding order), but " in message, message
    assert why in message and "at most one level of sharding" in message, message


@pytest.mark.parametrize("make", [
    lambda p: v2_array(p, numcodecs.BZ2(), [numcodecs.Zlib()]),
    lambda p: v2_array(p, numcodecs.Zlib(), [numcodecs.Zlib(), numcodecs.Delta("u1")]),
], ids=["v2-bz2-then-zlib", "v2-filter-then-zlib"])
def test_a_chain_whose_inner_streams_cannot_be_bounded_is_refused_when_opened(tmp_path, make):
    """A compressor geoseg cannot bound (bz2), or a filter it does not run, ahead of another
    compressor: the inner stream cannot be checked, so the array is refused, naming its chain."""
    url = make(tmp_path / "a.zarr")
    with pytest.raises(UnsupportedFormatError) as info:
        geoseg.open_raster(url).values  # noqa: B018 - the read is the test
    message = " ".join(str(info.value).split())
    assert "decodes its chunks through the codecs " in message, message
    assert "Re-write the array with such codecs" in message, message


def many_codecs(path, n: int) -> str:
    """A v3 array whose zarr.json lists ``bytes`` then ``n`` crc32c codecs."""
    v3_array(path, [ZstdCodec()])
    doc = json.loads((path / "zarr.json").read_text())
    doc["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}}] + [
        {"name": "crc32c"}] * n
    doc["attributes"] = {"filters": list(range(100))}  # the user's: any length
    (path / "zarr.json").write_text(json.dumps(doc))
    return str(path)


def test_a_long_codec_list_is_refused_before_zarr_parses_it(tmp_path):
    """Was: 100,000 crc32c codecs (2 MB) took zarr 225 s to parse, growing with the square."""
    url = many_codecs(tmp_path / "a.zarr", 5000)
    with pytest.raises(CorruptInputError, match=r'\(zarr.json\) lists 5,001 codecs in "codecs"; '
                                                r"expected at most 16"):
        geoseg.open_raster(url)


def test_a_long_v2_filter_list_is_refused_and_long_attributes_are_not(tmp_path):
    url = v2_array(tmp_path / "a.zarr", numcodecs.Zlib(), [numcodecs.Delta("u1")])
    doc = json.loads((tmp_path / "a.zarr" / ".zarray").read_text())
    (tmp_path / "a.zarr" / ".zattrs").write_text(json.dumps(
        {"_ARRAY_DIMENSIONS": ["band", "y", "x"], "filters": list(range(100))}))
    assert (geoseg.open_raster(url).values == 3).all()
    doc["filters"] = doc["filters"] * 40
    (tmp_path / "a.zarr" / ".zarray").write_text(json.dumps(doc))
    with pytest.raises(CorruptInputError, match=r'\(.zarray\) lists 40 codecs in "filters"'):
        geoseg.open_raster(url)


def test_many_codecs_but_under_the_limit_still_read(tmp_path):
    url = many_codecs(tmp_path / "a.zarr", 15)
    assert geoseg.open_raster(url).shape == CHUNK
