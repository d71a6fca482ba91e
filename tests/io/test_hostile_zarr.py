"""Hostile inputs: decompression bombs in Zarr chunks, transforms that place no pixel, GeoZarr
side attributes that say nothing usable, FIFOs and folders given as files, and messages that
must be geoseg's own."""

from __future__ import annotations

import gzip
import os
import re

import numcodecs
import numpy as np
import pytest
import yaml
import zarr

import geoseg
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from tests.cli import geoseg as geoseg_cli

GIB2 = 2 * 2**30
CHUNK = (3, 128, 128)  # 49,152 bytes of uint8


def sized_zstd_bomb(size: int, block: int = 128 * 1024) -> bytes:
    """A zstd frame declaring ``size`` decoded bytes, made of RLE blocks of zeros: a few bytes
    per 128 KiB, so a 2 GiB bomb is 64 KiB, built without allocating what it declares."""
    sizes = [block] * (size // block) + ([size % block] if size % block else [])
    return b"\x28\xb5\x2f\xfd\x80\x58" + size.to_bytes(4, "little") + _rle_blocks(sizes)


def unsized_zstd_frame(blocks: int, block: int, byte: int = 0) -> bytes:
    """A zstd frame declaring no decoded size (as a streaming writer makes it)."""
    return b"\x28\xb5\x2f\xfd\x00\x58" + _rle_blocks([block] * blocks, byte)


def _rle_blocks(sizes: list[int], byte: int = 0) -> bytes:
    """zstd RLE blocks (RFC 8878, 3.1.1.2) of ``sizes`` bytes each, all ``byte``, the last
    marked last."""
    last = len(sizes) - 1
    return b"".join(((n << 3) | (1 << 1) | (i == last)).to_bytes(3, "little") + bytes([byte])
                    for i, n in enumerate(sizes))


def bombed_array(path, zarr_format: int, compressor, payload: bytes) -> str:
    """A (band, y, x) uint8 array whose first chunk is replaced by ``payload``."""
    array = zarr.create_array(str(path), shape=(3, 256, 256), chunks=CHUNK, dtype="uint8",
                              compressors=compressor, zarr_format=zarr_format,
                              **({"dimension_names": ("band", "y", "x")} if zarr_format == 3
                                 else {}))
    array[:] = 7
    key = "c/0/0/0" if zarr_format == 3 else "0.0.0"
    (path / key).write_bytes(payload)
    return key


def test_numcodecs_really_allocates_what_a_zstd_frame_declares():
    """The hand-made bomb is one: zarr's codec decodes it to what it declares."""
    assert len(numcodecs.Zstd().decode(sized_zstd_bomb(300_000))) == 300_000


@pytest.mark.parametrize(("zarr_format", "compressor", "payload", "said"), [
    (3, zarr.codecs.ZstdCodec(), sized_zstd_bomb(GIB2),
     "zstd stream (65,546 bytes) declares 2,147,483,648 bytes once decoded"),
    (2, numcodecs.Zstd(), sized_zstd_bomb(GIB2), "declares 2,147,483,648 bytes once decoded"),
    (2, numcodecs.Blosc(), numcodecs.Blosc().encode(np.zeros(10**7, "u1")),
     "blosc stream"),
    (3, zarr.codecs.BloscCodec(), numcodecs.Blosc().encode(np.zeros(10**7, "u1")),
     "declares 10,000,000 bytes once decoded"),
    (3, zarr.codecs.GzipCodec(), gzip.compress(bytes(10**7)),
     "decodes to more than 49,152 bytes (geoseg read it no further)"),
    (2, numcodecs.Zlib(), numcodecs.Zlib().encode(np.zeros(10**7, "u1")),
     "zlib stream"),
    (3, zarr.codecs.ZstdCodec(), unsized_zstd_frame(16, 128 * 1024),
     "declares no decoded size and does not decode to 49,152 bytes"),
], ids=["v3-zstd", "v2-zstd", "v2-blosc", "v3-blosc", "v3-gzip", "v2-zlib", "v3-zstd-unsized"])
def test_a_chunk_decoding_to_more_than_a_chunk_is_refused_before_decoding(
        tmp_path, zarr_format, compressor, payload, said):
    key = bombed_array(tmp_path / "bomb.zarr", zarr_format, compressor, payload)
    with pytest.raises(CorruptInputError) as info:
        geoseg.open_raster(str(tmp_path / "bomb.zarr"))[:, :64, :64].compute()
    message = str(info.value)
    assert f"Zarr chunk {key} of " in message and said in message, message
    assert "holds 3 x 128 x 128 uint8 (49,152 bytes)" in message, message
    assert "decompression bomb" in message


def test_a_zstd_chunk_without_a_declared_size_still_reads(tmp_path):
    """A streaming writer's frames declare no size: decoded into exactly a chunk, they pass."""
    bombed_array(tmp_path / "ok.zarr", 3, zarr.codecs.ZstdCodec(),
                 unsized_zstd_frame(3, 128 * 128, byte=5))
    data = geoseg.open_raster(str(tmp_path / "ok.zarr"))[:, :128, :130].compute().values
    assert (data[:, :, :128] == 5).all() and (data[:, :, 128:] == 7).all()


def test_guarded_reads_match_zarr_on_every_codec(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    for i, codec in enumerate([zarr.codecs.ZstdCodec(), zarr.codecs.GzipCodec(),
                               zarr.codecs.BloscCodec()]):
        path = tmp_path / f"a{i}.zarr"
        zarr.create_array(str(path), data=image, chunks=CHUNK, compressors=codec,
                          dimension_names=("band", "y", "x"))
        np.testing.assert_array_equal(geoseg.open_raster(str(path)).compute().values, image)


def test_a_two_gib_zstd_bomb_is_refused_within_bounded_memory(tmp_path):
    """Was: 4.6 GB peak, and MemoryError (exit 1, an internal error) under a 3 GB cap."""
    bombed_array(tmp_path / "bomb.zarr", 3, zarr.codecs.ZstdCodec(), sized_zstd_bomb(GIB2))
    spec = {"input": {"url": str(tmp_path / "bomb.zarr")},
            "model": {"method": "otsu", "params": {"feature": "mean"}},
            "output": {"url": str(tmp_path / "out.zarr")}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    result = geoseg_cli("validate", str(tmp_path / "job.yaml"),
                        prefix=["prlimit", "--as=2500000000"], timeout=120)
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    assert "Zarr chunk c/0/0/0 of" in said and "declares 2,147,483,648 bytes" in said, said
    assert "Traceback" not in said and "MemoryError" not in said


@pytest.mark.parametrize("compressors", [None, zarr.codecs.ZstdCodec()], ids=["raw", "zstd"])
def test_a_chunk_object_far_larger_than_any_chunk_is_refused_unread(tmp_path, compressors):
    """A 3 GiB chunk file (sparse here) where the array's chunk holds 49,152 bytes: it was read
    whole into memory (6.8 GB peak) before zarr found it the wrong size; an uncompressed array
    was not guarded at all."""
    path = tmp_path / "big.zarr"
    array = zarr.create_array(str(path), shape=CHUNK, chunks=CHUNK, dtype="uint8",
                              compressors=compressors, dimension_names=("band", "y", "x"))
    array[:] = 1
    os.truncate(path / "c" / "0" / "0" / "0", 3 * 2**30)
    spec = {"input": {"url": str(path)}, "model": {"method": "otsu", "params": {"feature": 1}},
            "output": {"url": str(tmp_path / "out.zarr")}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    result = geoseg_cli("validate", str(tmp_path / "job.yaml"),
                        prefix=["prlimit", "--as=2500000000"], timeout=120)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, said
    assert ("Zarr chunk c/0/0/0 of" in said and "is stored in more than 1,146,880 bytes (geoseg "
            "read it no further), but a chunk of this array holds 3 x 128 x 128 uint8") in said, said
    assert "Traceback" not in said and "MemoryError" not in said


def geozarr(path, attrs: dict, dtype: str = "uint8") -> str:
    array = zarr.create_array(str(path), shape=(2, 32, 32), chunks=(2, 32, 32), dtype=dtype,
                              dimension_names=("band", "Y", "X"), attributes=attrs)
    array[:] = 1
    return str(path)


@pytest.mark.parametrize(("transform", "problem"), [
    ([float("nan"), 0, 0, 0, -1, 0], "NaN or infinite"),
    ([0, 0, 0, 0, 0, 0], "singular"),
    ([1e309, 0, 0, 0, -1, 0], "NaN or infinite"),
    ([1, 2, 0, 2, 4, 0], "singular"),
])
def test_a_geozarr_transform_that_places_no_pixel_is_refused(tmp_path, transform, problem):
    url = geozarr(tmp_path / "a.zarr", {"proj:epsg": 4326, "spatial:transform": transform,
                                        "spatial:dimensions": ["Y", "X"]})
    with pytest.raises(UnsupportedFormatError, match=f"spatial:transform = .*{problem}"):
        geoseg.open_raster(url)


@pytest.mark.parametrize("transform", [[1e308, 0, 1e308, 0, -1e308, 1e308],
                                       [1e307, 0, 1.7e308, 0, -1, 0]])
def test_a_transform_placing_pixels_beyond_floating_point_is_refused(tmp_path, transform):
    """Its terms are finite, its pixels' coordinates infinite: the run passed, and geoseg's own
    export and instance stage then refused the output it wrote."""
    from geoseg.errors import CorruptInputError

    url = geozarr(tmp_path / "a.zarr", {"proj:epsg": 4326, "spatial:transform": transform,
                                        "spatial:dimensions": ["Y", "X"]})
    with pytest.raises(CorruptInputError, match=r"places its 32 x 32 pixels beyond the range of "
                                                r"floating-point numbers .*inf"):
        geoseg.open_raster(url)


def test_plain_and_cf_transforms_that_place_no_pixel_are_refused(tmp_path):
    plain = zarr.create_array(str(tmp_path / "p.zarr"), shape=(32, 32), chunks=(32, 32),
                              dtype="uint8", attributes={"transform": [1, 0, 0, 0, 0, 0]})
    plain[:] = 1
    with pytest.raises(UnsupportedFormatError, match="attribute transform = .*singular"):
        geoseg.open_raster(str(tmp_path / "p.zarr"))
    group = zarr.open_group(str(tmp_path / "cf.zarr"), mode="w")
    group.create_array("raster", shape=(32, 32), chunks=(32, 32), dtype="uint8",
                       dimension_names=("y", "x"))[:] = 1
    group.create_array("spatial_ref", shape=(), dtype="int64",
                       attributes={"GeoTransform": "0 nan 0 0 0 -1"})
    with pytest.raises(UnsupportedFormatError, match="GeoTransform = '0 nan 0 0 0 -1' .*NaN"):
        geoseg.open_raster(str(tmp_path / "cf.zarr"))


@pytest.mark.parametrize(("attrs", "match"), [
    ({"spatial:dimensions": ["q", "r"]}, r"spatial:dimensions = \['q', 'r'\] does not name"),
    ({"spatial:dimensions": ["Y", "X"], "spatial:registration": "weird",
      "spatial:transform": [1, 0, 0, 0, -1, 0]}, "spatial:registration = 'weird' is not"),
])
def test_geozarr_side_attributes_that_say_nothing_usable_are_refused(tmp_path, attrs, match):
    with pytest.raises(UnsupportedFormatError, match=match):
        geoseg.open_raster(geozarr(tmp_path / "a.zarr", attrs))


@pytest.mark.parametrize(("dtype", "nodata"), [("uint8", 1e40), ("uint8", -1), ("int16", 0.5),
                                               ("float32", 1e40)])
def test_a_nodata_no_pixel_can_equal_is_refused(tmp_path, dtype, nodata):
    url = geozarr(tmp_path / "a.zarr", {"nodata": nodata, "spatial:dimensions": ["Y", "X"]}, dtype)
    said = f"nodata={nodata!r}, but its pixels are {dtype}"  # as declared: -1 is no -1.0
    with pytest.raises(CorruptInputError, match=re.escape(said)):
        geoseg.open_raster(url)


def test_a_nodata_the_dtype_holds_is_read(tmp_path):
    url = geozarr(tmp_path / "a.zarr", {"nodata": 255, "spatial:dimensions": ["Y", "X"]})
    assert geoseg.open_raster(url).attrs["nodata"] == 255


def test_a_fifo_or_a_folder_given_as_a_file_is_named_as_such(tmp_path):
    os.mkfifo(tmp_path / "fifo.tif")
    (tmp_path / "dir.tif").mkdir()
    fifo = geoseg_cli("info", str(tmp_path / "fifo.tif"))
    assert fifo.returncode == 2 and "it is a FIFO (named pipe), not a file" in fifo.stderr, fifo
    folder = geoseg_cli("info", str(tmp_path / "dir.tif"))
    assert folder.returncode == 2 and "it is a folder, not a file" in folder.stderr, folder
    os.symlink(tmp_path / "loop2.tif", tmp_path / "loop1.tif")
    os.symlink(tmp_path / "loop1.tif", tmp_path / "loop2.tif")
    loop = geoseg_cli("info", str(tmp_path / "loop1.tif"))  # was an internal error (ELOOP)
    said = " ".join(loop.stderr.split())
    assert loop.returncode == 2 and "it is a symbolic link that leads back to itself" in said, said
    assert "Point the link at the raster file itself" in said


@pytest.mark.parametrize("dtype, said", [
    ("complex_int16", ("has pixels of dtype complex_int16 (complex integers, which numpy has no "
                      "type for); geoseg reads bool, integer and floating-point rasters")),
    ("[('a', 'u1'), ('b', '<f4')]", "(not a type numpy reads)"),
])
def test_pixel_types_numpy_cannot_read_are_named_not_an_internal_error(dtype, said):
    """GDAL's complex integers (rasterio's 'complex_int16') and a structured type given as
    text made np.dtype raise TypeError inside the check."""
    from geoseg.io.readers import check_pixel_dtype

    with pytest.raises(UnsupportedFormatError) as info:
        check_pixel_dtype(dtype, "input x.tif", "the input")
    assert said in str(info.value)


def test_datetime_pixels_and_repeated_dimension_names_are_named(tmp_path):
    zarr.create_array(str(tmp_path / "dt.zarr"), shape=(32, 32), chunks=(32, 32),
                      dtype="M8[s]", zarr_format=2)
    with pytest.raises(UnsupportedFormatError, match=r"datetime64\[s\] \(dates and times\).*"
                                                     "seconds since 1970") as info:
        geoseg.open_raster(str(tmp_path / "dt.zarr"))
    assert "complex" not in str(info.value)
    zarr.create_array(str(tmp_path / "yy.zarr"), shape=(2, 32, 32), chunks=(2, 32, 32),
                      dtype="uint8", dimension_names=("y", "y", "x"))
    with pytest.raises(UnsupportedFormatError, match="'y' named more than once"):
        geoseg.open_raster(str(tmp_path / "yy.zarr"))


def test_an_unknown_epsg_code_prints_only_geosegs_message(tmp_path):
    url = geozarr(tmp_path / "a.zarr", {"proj:epsg": 99999999, "spatial:dimensions": ["Y", "X"]})
    result = geoseg_cli("info", url, own_process=True, timeout=120)
    assert result.returncode == 2, result
    assert "proj:epsg = 99999999 is not a CRS PROJ knows" in result.stderr
    assert "ERROR 1" not in result.stderr, result.stderr


def test_metadata_over_the_limit_is_refused_unread_at_the_top_and_inside_a_group(tmp_path,
                                                                                monkeypatch):
    """A sparse 12 GB zarr.json was read whole (MemoryError); the group's own document is read
    by geoseg's probe, an array's inside it by zarr through the guarded store: both bounded."""
    from geoseg.errors import BudgetError

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("image", shape=(2, 16, 16), dtype="uint8",
                       dimension_names=("band", "y", "x"), attributes={"note": "x" * 5000})
    monkeypatch.setenv("GEOSEG_MAX_METADATA_BYTES", "4000")
    with pytest.raises(BudgetError, match=r"\(image/zarr.json\) holds [0-9.]+ KiB or more of metadata; "
                                          r"the limit is 4000 \(GEOSEG_MAX_METADATA_BYTES\)"):
        geoseg.open_raster(str(tmp_path / "g.zarr"), variable="image")
    monkeypatch.setenv("GEOSEG_MAX_METADATA_BYTES", "40")
    with pytest.raises(BudgetError, match=r"Zarr metadata .*g.zarr/zarr.json holds [0-9]+ B or more"):
        geoseg.open_raster(str(tmp_path / "g.zarr"), variable="image")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_metadata_document_that_is_a_fifo_or_a_device_is_refused_unread(tmp_path, kind):
    """A FIFO hung `geoseg info` for ever; a link to /dev/zero took 6.5 GB, then MemoryError."""
    store = tmp_path / "a.zarr"
    store.mkdir()
    if kind == "fifo":
        os.mkfifo(store / "zarr.json")
    else:
        os.symlink("/dev/zero", store / "zarr.json")
    result = geoseg_cli("info", str(store), timeout=60)
    said = " ".join(result.stderr.split())
    expected = "a FIFO (named pipe)" if kind == "fifo" else "a device"
    assert result.returncode == 2 and f"zarr.json is {expected}, not a file" in said, said


def test_an_array_document_inside_a_group_that_is_a_device_is_refused(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=2)
    group.create_array("image", shape=(2, 16, 16), dtype="uint8")
    (tmp_path / "g.zarr" / "image" / ".zattrs").unlink(missing_ok=True)
    os.symlink("/dev/zero", tmp_path / "g.zarr" / "image" / ".zattrs")
    with pytest.raises(CorruptInputError, match=r"image/.zattrs of the Zarr store .* is a device"):
        geoseg.open_raster(str(tmp_path / "g.zarr"), variable="image")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_stale_consolidated_metadata_is_not_taken_for_the_arrays_own(tmp_path, zarr_format):
    """A group's consolidated copy saying 256 x 256 (v2: float64 too) where the array's own
    metadata, which its chunks are read with, says 128 x 128 uint8: the shape came from the
    copy and every read failed on a broadcast (an internal error). The array's own is read."""
    import json

    path = tmp_path / "g.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    image = np.arange(128 * 128, dtype=np.uint8).reshape(1, 128, 128)
    group.create_array("img", data=image, chunks=(1, 64, 64))
    if zarr_format == 2:
        group["img"].attrs["_ARRAY_DIMENSIONS"] = ["band", "y", "x"]
    zarr.consolidate_metadata(str(path))
    if zarr_format == 3:
        doc = json.loads((path / "zarr.json").read_text())
        doc["consolidated_metadata"]["metadata"]["img"]["shape"] = [1, 256, 256]
        (path / "zarr.json").write_text(json.dumps(doc))
    else:
        doc = json.loads((path / ".zmetadata").read_text())
        doc["metadata"]["img/.zarray"].update(shape=[1, 1000, 1000], dtype="<f8")
        (path / ".zmetadata").write_text(json.dumps(doc))
    raster = geoseg.open_raster(str(path))
    assert raster.shape == (1, 128, 128) and raster.dtype == np.uint8
    np.testing.assert_array_equal(raster.values, image)
