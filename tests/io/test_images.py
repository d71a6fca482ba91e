"""Plain images (PNG, JPEG through imageio) and TIFF stacks (tifffile): values equal imageio's and
tifffile's own whole-file reads, windows read only what they cover, and jobs run on both."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import fsspec
import imageio.v3 as iio
import numpy as np
import pytest
import rasterio
import tifffile
import zarr
from fsspec.implementations.local import LocalFileSystem
from skimage.filters import threshold_otsu

import geoseg
from geoseg.errors import CorruptInputError, JobSpecError, UnsupportedFormatError
from geoseg.io import open_source
from geoseg.io.readers._image import ImageSource, image_source
from geoseg.io.readers._tiffstack import TiffStackSource
from geoseg.io.sources import GeoTIFFSource
from geoseg.jobs import JobSpec, run
from tests.cli import geoseg as geoseg_cli
from tests.conftest import TRANSFORM, textured_image


def channels_first(pixels: np.ndarray) -> np.ndarray:
    return np.moveaxis(pixels, -1, 0) if pixels.ndim == 3 else pixels[None]


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.moveaxis(textured_image(150, 130, seed=5), 0, -1).copy()  # (y, x, 3)


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("rgb.png", ("red", "green", "blue")),
        ("rgba.png", ("red", "green", "blue", "alpha")),
        ("gray.png", ("gray",)),
        ("gray16.png", ("gray",)),
        ("photo.jpg", ("red", "green", "blue")),
    ],
)
def test_plain_images_equal_imageio(tmp_path, rgb, name, names):
    pixels = {
        "rgb.png": rgb,
        "rgba.png": np.dstack([rgb, rgb[..., :1]]),
        "gray.png": rgb[..., 1],
        "gray16.png": rgb[..., 0].astype(np.uint16) * 250,
        "photo.jpg": rgb,
    }[name]
    iio.imwrite(tmp_path / name, pixels)
    raster = geoseg.open_raster(str(tmp_path / name))
    expected = channels_first(iio.imread(tmp_path / name))
    assert isinstance(raster.encoding["geoseg_source"], ImageSource)
    assert raster.dims == ("band", "y", "x") and tuple(raster.band.values) == names
    assert raster.dtype == expected.dtype and raster.data.numblocks == (1, 1, 1)  # one task
    np.testing.assert_array_equal(raster.values, expected)
    np.testing.assert_array_equal(raster[:, 20:91, 33:70].values, expected[:, 20:91, 33:70])


def test_palette_png_reads_as_its_colours(tmp_path, rgb):
    from PIL import Image

    Image.fromarray(rgb).quantize(colors=16).save(tmp_path / "palette.png")
    raster = geoseg.open_raster(str(tmp_path / "palette.png"))
    np.testing.assert_array_equal(
        raster.values, channels_first(iio.imread(tmp_path / "palette.png"))
    )
    assert raster.sizes["band"] == 3


def test_band_selection_and_small_chunks(tmp_path, rgb):
    iio.imwrite(tmp_path / "a.png", rgb)
    raster = geoseg.open_raster(str(tmp_path / "a.png"), bands=[3, 1], chunks=(64, 64))
    assert raster.data.numblocks == (1, 3, 3) and tuple(raster.band.values) == ("blue", "red")
    np.testing.assert_array_equal(raster.values, channels_first(rgb)[[2, 0]])


def test_a_rewritten_image_is_decoded_again(tmp_path, rgb):
    """Each process keeps the last image it decoded; a new version of the file replaces it."""
    path = tmp_path / "a.png"
    iio.imwrite(path, rgb)
    np.testing.assert_array_equal(geoseg.open_raster(str(path)).values, channels_first(rgb))
    iio.imwrite(path, 255 - rgb)
    np.testing.assert_array_equal(geoseg.open_raster(str(path)).values, channels_first(255 - rgb))


def test_png_on_s3(tmp_path, rgb, s3_server):
    iio.imwrite(tmp_path / "a.png", rgb)
    url = "s3://geoseg/images/a.png"
    fsspec.filesystem("s3", skip_instance_cache=True, **s3_server).put(str(tmp_path / "a.png"), url)
    raster = geoseg.open_raster(url, storage_options=s3_server)
    np.testing.assert_array_equal(raster.values, channels_first(rgb))


def test_too_large_images_are_refused_with_advice(tmp_path, rgb):
    iio.imwrite(tmp_path / "a.png", rgb)
    with pytest.raises(
        UnsupportedFormatError, match=r"130 x 150 image with 3 band\(s\).*geoseg convert"
    ):
        image_source(str(tmp_path / "a.png"), {}, max_bytes=10_000)
    assert image_source(str(tmp_path / "a.png"), {}, max_bytes=None).shape == (3, 150, 130)


def test_level_and_pages_are_refused_for_plain_images(tmp_path, rgb):
    iio.imwrite(tmp_path / "a.png", rgb)
    with pytest.raises(UnsupportedFormatError, match="has one resolution only"):
        geoseg.open_raster(str(tmp_path / "a.png"), level=1)
    with pytest.raises(UnsupportedFormatError, match=r"pages='band' was given .* not a TIFF stack"):
        geoseg.open_raster(str(tmp_path / "a.png"), pages="band")


# --- TIFF stacks --------------------------------------------------------------------------------


def stack(shape: tuple[int, ...], seed: int = 0, dtype: str = "uint16") -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, size=shape).astype(dtype)


def test_imagej_stack_is_a_volume_with_its_spacing(tmp_path):
    volume = stack((9, 70, 80))
    tifffile.imwrite(
        tmp_path / "cells.tif",
        volume,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
    )
    raster = geoseg.open_raster(str(tmp_path / "cells.tif"))
    source = raster.encoding["geoseg_source"]
    assert isinstance(source, TiffStackSource) and source.format == "tiffstack"
    assert raster.dims == ("band", "z", "y", "x") and raster.shape == (1, 9, 70, 80)
    np.testing.assert_array_equal(raster.values[0], tifffile.imread(tmp_path / "cells.tif"))
    np.testing.assert_array_equal(raster[0, 3:7, 10:33, 5:77].values, volume[3:7, 10:33, 5:77])
    assert source.georef.spacing == pytest.approx((2.0, 0.25, 0.25)) and source.georef.units == "um"
    np.testing.assert_allclose(source.georef.affine_matrix @ [1, 2, 3, 1], [0.75, 0.5, 2.0, 1])


def test_ome_tiff_channels_become_bands(tmp_path):
    data = stack((6, 2, 40, 50), seed=1)  # (z, c, y, x)
    tifffile.imwrite(
        tmp_path / "two.ome.tif",
        data,
        ome=True,
        metadata={"axes": "ZCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 3.0},
    )
    raster = geoseg.open_raster(str(tmp_path / "two.ome.tif"), bands=[2])
    expected = np.moveaxis(tifffile.imread(tmp_path / "two.ome.tif"), 1, 0)  # (c, z, y, x)
    assert raster.shape == (1, 6, 40, 50)
    np.testing.assert_array_equal(raster.values, expected[[1]])
    assert raster.encoding["geoseg_source"].georef.spacing == pytest.approx((3.0, 0.5, 0.5))


def hostile_ome(tmp_path, edit) -> str:
    """An OME-TIFF of 8 pages whose OME-XML ``edit`` changes, written as its description."""
    data = stack((8, 32, 32), seed=3, dtype="uint8")
    tifffile.imwrite(tmp_path / "ok.ome.tif", data, ome=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(tmp_path / "ok.ome.tif") as tif:
        xml = tif.ome_metadata
    path = tmp_path / "bad.ome.tif"
    tifffile.imwrite(path, data, description=edit(xml), metadata=None)
    return str(path)


@pytest.mark.parametrize(("edit", "said"), [
    (lambda xml: xml.replace('SizeZ="8"', 'SizeZ="2000000000"').replace(
        'PlaneCount="8"', 'PlaneCount="2000000000"'),
     r"declares 2,000,000,000 planes \(SizeZ x SizeC x SizeT\) for a file of 8 pages; "),
    (lambda xml: xml.replace("</OME>", "<a>" * 20_000 + "</a>" * 20_000 + "</OME>"),
     "nests elements over 100 levels deep"),
])
def test_ome_xml_that_tifffile_would_trust_past_memory_or_stack_is_refused(tmp_path, edit, said):
    """tifffile lists every plane the OME-XML declares before reading a pixel (2e9 planes: about
    16 GB) and converts it to a dict recursively, once per level of nesting."""
    path = hostile_ome(tmp_path, edit)
    with pytest.raises(CorruptInputError, match=f"bad.ome.tif: its OME-XML {said}"):
        geoseg.open_raster(path)


def test_metadata_tifffile_or_pillow_complain_of_prints_no_library_line(tmp_path):
    """tifffile logged "ImageJ series metadata invalid" as an error, and Pillow warned of a
    decompression bomb, on stderr before (or instead of) geoseg's own answer."""
    import struct
    import zlib

    data = stack((8, 32, 32), seed=4, dtype="uint8")
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(tmp_path / "ij.tif") as tif:
        said = tif.pages.first.description.replace("images=8", "images=2000000000")
    tifffile.imwrite(tmp_path / "odd.tif", data, description=said, metadata=None)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
    (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b""))

    listed = geoseg_cli("info", str(tmp_path / "odd.tif"), own_process=True)
    assert listed.returncode == 0 and listed.stderr == "" and "(1, 8, 32, 32)" in listed.stdout
    refused = geoseg_cli("info", str(tmp_path / "big.png"), own_process=True)
    [line] = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and line.startswith("error: "), refused.stderr


def test_rgb_page_stack_has_colour_band_names(tmp_path):
    data = stack((4, 30, 20, 3), seed=2, dtype="uint8")
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    raster = geoseg.open_raster(str(tmp_path / "rgb.tif"))
    assert tuple(raster.band.values) == ("red", "green", "blue") and raster.shape == (3, 4, 30, 20)
    np.testing.assert_array_equal(
        raster.values, np.moveaxis(tifffile.imread(tmp_path / "rgb.tif"), -1, 0)
    )


def test_pages_are_z_or_bands_as_asked(tmp_path):
    pages = stack((5, 32, 48), seed=3)
    tifffile.imwrite(tmp_path / "pages.tif", pages)  # plain pages: tifffile's axes say nothing
    as_volume = geoseg.open_raster(str(tmp_path / "pages.tif"))
    as_bands = geoseg.open_raster(str(tmp_path / "pages.tif"), pages="band")
    assert as_volume.dims == ("band", "z", "y", "x") and as_volume.shape == (1, 5, 32, 48)
    assert as_bands.dims == ("band", "y", "x") and as_bands.shape == (5, 32, 48)
    np.testing.assert_array_equal(as_bands.values, tifffile.imread(tmp_path / "pages.tif"))
    with pytest.raises(UnsupportedFormatError, match="expected one of z, band"):
        geoseg.open_raster(str(tmp_path / "pages.tif"), pages="time")


def test_more_axes_than_fit_are_refused_with_advice(tmp_path):
    data = stack((3, 4, 16, 16), seed=4)
    tifffile.imwrite(tmp_path / "tz.tif", data, imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(UnsupportedFormatError, match=r"axes 'TZYX'.*pages='z' or pages='band'"):
        geoseg.open_raster(str(tmp_path / "tz.tif"))
    raster = geoseg.open_raster(str(tmp_path / "tz.tif"), pages="band")  # time steps as bands
    np.testing.assert_array_equal(raster.values, tifffile.imread(tmp_path / "tz.tif"))


def test_pyramid_levels(tmp_path):
    data = stack((4, 64, 64), seed=5)
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif") as tif:
        tif.write(data, subifds=1, tile=(32, 32), metadata={"axes": "ZYX"})
        tif.write(data[:, ::2, ::2], subfiletype=1, tile=(16, 16))
    level1 = geoseg.open_raster(str(tmp_path / "pyramid.ome.tif"), level=1)
    np.testing.assert_array_equal(level1.values[0], data[:, ::2, ::2])
    with pytest.raises(UnsupportedFormatError, match="2 resolution level"):
        geoseg.open_raster(str(tmp_path / "pyramid.ome.tif"), level=2)


class CountingFileSystem(LocalFileSystem):
    """The local disk under ``counting://``, adding up the bytes its files return."""

    protocol = ("counting",)
    lock = threading.Lock()
    read_bytes: ClassVar[list[int]] = [0]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return LocalFileSystem._strip_protocol(str(path).removeprefix("counting://"))

    def _open(self, path: str, mode: str = "rb", **kwargs: object) -> Any:
        f = super()._open(path, mode, **kwargs)
        read = f.read

        def counted(*args: object) -> bytes:
            data = read(*args)
            with self.lock:
                self.read_bytes[0] += len(data)
            return data

        f.read = counted
        return f


def test_tiled_stack_windows_read_only_their_tiles(tmp_path):
    fsspec.register_implementation("counting", CountingFileSystem, clobber=True)
    volume = stack((16, 256, 256), seed=6)  # 2 MiB, 64 tiles per page
    tifffile.imwrite(tmp_path / "tiled.tif", volume, tile=(32, 32))
    raster = geoseg.open_raster(f"counting://{tmp_path}/tiled.tif", chunks=(1, 32, 32))
    assert raster.encoding["geoseg_source"].chunks == (1, 32, 32)
    CountingFileSystem.read_bytes[0] = 0
    np.testing.assert_array_equal(raster[0, 5, 64:96, 32:64].values, volume[5, 64:96, 32:64])
    assert CountingFileSystem.read_bytes[0] < 0.05 * volume.nbytes, CountingFileSystem.read_bytes[0]


def test_georeferenced_tiffs_stay_geotiffs(tmp_path):
    """GeoTIFF tags decide, whatever the page count: GDAL reads the georeferencing."""
    data = stack((3, 40, 30), seed=7)
    scale = (TRANSFORM.a, -TRANSFORM.e, 0.0)
    tiepoint = (0.0, 0.0, 0.0, TRANSFORM.c, TRANSFORM.f, 0.0)
    tifffile.imwrite(
        tmp_path / "geo.tif",
        data,
        photometric="minisblack",
        extratags=[(33550, "d", 3, scale, True), (33922, "d", 6, tiepoint, True)],
    )
    source = open_source(str(tmp_path / "geo.tif"))
    assert isinstance(source, GeoTIFFSource)
    assert source.georef.transform == tuple(TRANSFORM)[:6]


# --- jobs ---------------------------------------------------------------------------------------


def test_job_on_a_png_equals_whole_image_inference(tmp_path, rgb, model_path, cluster_address):
    iio.imwrite(tmp_path / "photo.png", rgb)
    spec = JobSpec.from_dict(
        {
            "input": {"url": str(tmp_path / "photo.png")},
            "model": {"path": model_path},
            "output": {"url": str(tmp_path / "mask.zarr"), "chunks": [64, 64]},
            "inference": {"tile": 64},
        }
    )
    report = run(spec, scheduler=cluster_address)
    pixels = channels_first(iio.imread(tmp_path / "photo.png"))
    expected = geoseg.load_model(model_path).predict_image(pixels).argmax(0)
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "mask.zarr"), mode="r")["classes"][...], expected
    )
    assert report.n_tasks == 9 and report.provenance["input"]["format"] == "image"


def test_otsu_job_on_a_tiff_stack_equals_scikit_image(tmp_path, cluster_address):
    z, y, x = np.mgrid[0:12, 0:60, 0:50]
    cells = (np.sin(z / 3) + np.cos(y / 7) * np.sin(x / 5)) * 900 + 2000
    volume = (cells + np.random.default_rng(9).normal(0, 150, cells.shape)).astype(np.uint16)
    tifffile.imwrite(
        tmp_path / "cells.tif", volume, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0}
    )
    out = str(tmp_path / "cells-mask.zarr")
    spec = JobSpec.from_dict(
        {
            "input": {"url": str(tmp_path / "cells.tif")},
            "model": {"method": "otsu"},
            "output": {"url": out, "chunks": [8, 32, 32]},
        }
    )
    report = run(spec, scheduler=cluster_address)
    reference = tifffile.imread(tmp_path / "cells.tif")
    classes = zarr.open_group(out, mode="r")["classes"]
    np.testing.assert_array_equal(classes[...], reference > threshold_otsu(reference))
    assert report.n_tasks == 2 * 2 * 2
    assert classes.attrs["spacing"] == pytest.approx([2.0, 1.0, 1.0])


def test_job_reads_tiff_pages_as_bands_when_asked(tmp_path, model_path, cluster_address):
    tifffile.imwrite(
        tmp_path / "pages.tif", textured_image(90, 80, seed=11), photometric="minisblack"
    )
    spec = {
        "input": {"url": str(tmp_path / "pages.tif"), "pages": "band"},
        "model": {"path": model_path},
        "output": {"url": str(tmp_path / "mask.zarr"), "chunks": [64, 64]},
    }
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    expected = (
        geoseg.load_model(model_path)
        .predict_image(tifffile.imread(tmp_path / "pages.tif"))
        .argmax(0)
    )
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "mask.zarr"), mode="r")["classes"][...], expected
    )
    with pytest.raises(JobSpecError, match=r"input\.pages: received 'time'"):
        JobSpec.from_dict({**spec, "input": {"url": str(tmp_path / "pages.tif"), "pages": "time"}})


def test_a_plain_tiled_tiff_is_read_by_tifffile_without_warnings(tmp_path, recwarn):
    """One page, tiled, no GeoTIFF tags: tifffile reads it by window, as a TIFF stack."""
    data = stack((1, 300, 410), seed=8)[0]
    tifffile.imwrite(tmp_path / "plain.tif", data, tile=(64, 64))
    source = open_source(str(tmp_path / "plain.tif"))
    assert isinstance(source, TiffStackSource) and source.chunks == (64, 64)
    assert source.georef.transform is None and source.shape == (1, 300, 410)
    raster = geoseg.open_raster(str(tmp_path / "plain.tif"))
    np.testing.assert_array_equal(raster.values[0], tifffile.imread(tmp_path / "plain.tif"))
    assert not recwarn.list, [str(w.message) for w in recwarn.list]


def test_a_plain_tiff_gdal_reads_raises_no_warning(tmp_path):
    """Not georeferenced, but with what only GDAL reads (here its nodata tag, LZW): GDAL reads
    it, and its NotGeoreferencedWarning stays off the terminal (a process of its own: pytest
    records every warning its own way)."""
    from tests.cli import geoseg as geoseg_cli

    data = stack((1, 60, 70), seed=9)
    profile = {"driver": "GTiff", "width": 70, "height": 60, "count": 1, "dtype": "uint16",
               "nodata": 0, "compress": "lzw"}
    with rasterio.open(tmp_path / "gdal.tif", "w", **profile) as dst:
        dst.write(data)
    source = open_source(str(tmp_path / "gdal.tif"))
    assert isinstance(source, GeoTIFFSource) and source.georef.nodata == 0
    np.testing.assert_array_equal(geoseg.open_raster(str(tmp_path / "gdal.tif")).values, data)
    shown = geoseg_cli("info", str(tmp_path / "gdal.tif"), own_process=True)
    assert shown.returncode == 0 and "geotiff" in shown.stdout, shown.stderr
    assert "Warning" not in shown.stderr, shown.stderr


def test_an_image_past_pillows_bomb_limit_is_refused_with_the_size_advice(tmp_path):
    """A 40000 x 40000 PNG header: Pillow refuses it before geoseg's own size check, and the
    answer said "check that the file is complete" of a valid file."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b""))
    with pytest.raises(UnsupportedFormatError) as info:
        geoseg.open_raster(str(tmp_path / "huge.png"))
    said = str(info.value)
    assert "is an image too large to decode whole" in said and "gdal_translate -of COG" in said
    assert "complete" not in said
