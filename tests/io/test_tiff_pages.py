"""Multi-page TIFFs that are not georeferenced: every data page is read, or the file is refused.

A stack written page by page (``tifffile.TiffWriter.write`` once per page: one series per page)
used to be read as its first page only, silently, and so was a stack of pages of different sizes
(GDAL reads the first page). Pages are compared with tifffile's and PIL's own page reads.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import tifffile
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_origin

import geoseg
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.readers._geotiff import GeoTIFFSource
from geoseg.io.readers._open import open_source
from geoseg.io.readers._tiffstack import TiffStackSource

FORCED = ({}, {"reader": "tiff-stack"})


def _pages(n: int, shape: tuple[int, int] = (60, 70), dtype: str = "uint8") -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 200, shape).astype(dtype) + i for i in range(n)]


def _write_page_by_page(path, pages, **options):
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            tif.write(page, **options)
    return path


def _tifffile_pages(path) -> list[np.ndarray]:
    n = len(tifffile.TiffFile(path).pages)
    return [tifffile.imread(path, key=i) for i in range(n)]


def _pil_pages(path) -> list[np.ndarray]:
    with Image.open(path) as image:
        found = []
        for i in range(image.n_frames):
            image.seek(i)
            found.append(np.asarray(image))
        return found


@pytest.mark.parametrize("options", FORCED)
def test_a_stack_written_page_by_page_reads_every_page_as_depth(tmp_path, options):
    path = _write_page_by_page(tmp_path / "pages.tif", _pages(5))
    assert len(tifffile.TiffFile(path).series) == 5  # what made geoseg read page 1 only
    array = geoseg.open_raster(str(path), **options)
    assert array.shape == (1, 5, 60, 70)
    for i, page in enumerate(_tifffile_pages(path)):
        np.testing.assert_array_equal(array.values[0, i], page)


@pytest.mark.parametrize("options", FORCED)
def test_a_stack_written_page_by_page_reads_every_page_as_a_band(tmp_path, options):
    path = _write_page_by_page(tmp_path / "pages.tif", _pages(4))
    array = geoseg.open_raster(str(path), pages="band", **options)
    assert array.shape == (4, 60, 70)
    np.testing.assert_array_equal(array.values, np.stack(_pil_pages(path)))
    np.testing.assert_array_equal(array.values, np.stack(_tifffile_pages(path)))


def test_a_tiled_compressed_page_stack_is_read_by_window(tmp_path):
    """Each task reads the tiles of the pages its window covers, never the whole file."""
    path = _write_page_by_page(tmp_path / "tiled.tif", _pages(3, (64, 80), "uint16"),
                               tile=(16, 16), compression="zlib")
    source = open_source(str(path))
    assert isinstance(source, TiffStackSource) and source.all_pages
    assert source.shape == (1, 3, 64, 80) and source.dtype == "uint16"
    assert source.chunks == (1, 16, 16)
    window = source.read((slice(1, 3), slice(10, 40), slice(5, 70)))
    expected = np.stack(_tifffile_pages(path))[1:3, 10:40, 5:70]
    np.testing.assert_array_equal(window, expected[None])


def test_a_pil_stack_of_alike_pages_still_reads_as_depth(tmp_path):
    pages = _pages(5)
    Image.fromarray(pages[0]).save(tmp_path / "pil.tif", save_all=True,
                                   append_images=[Image.fromarray(p) for p in pages[1:]])
    array = geoseg.open_raster(str(tmp_path / "pil.tif"))
    assert array.shape == (1, 5, 60, 70)
    np.testing.assert_array_equal(array.values[0], np.stack(_pil_pages(tmp_path / "pil.tif")))


@pytest.mark.parametrize("options", [*FORCED, {"pages": "band"},
                                     {"reader": "tiff-stack", "pages": "band"}])
def test_pages_of_different_sizes_are_refused_naming_them(tmp_path, options):
    first, second, third = _pages(1, (200, 300))[0], _pages(1, (150, 250))[0], _pages(1, (10, 10))[0]
    path = tmp_path / "mixed.tif"
    Image.fromarray(first).save(path, save_all=True,
                                append_images=[Image.fromarray(second), Image.fromarray(third)])
    with pytest.raises(UnsupportedFormatError) as raised:
        geoseg.open_raster(str(path), **options)
    message = str(raised.value)
    assert "mixed.tif" in message and "3 pages" in message
    assert "200 x 300" in message and "150 x 250" in message and "10 x 10" in message
    assert "Split the file" in message


def test_a_page_by_page_stack_of_different_sizes_is_refused(tmp_path):
    path = _write_page_by_page(tmp_path / "sizes.tif", [_pages(1, (100, 120))[0],
                                                        _pages(1, (80, 90))[0]])
    with pytest.raises(UnsupportedFormatError, match=r"2 pages .*100 x 120.*80 x 90"):
        geoseg.open_raster(str(path), reader="tiff-stack")


def test_pages_of_different_dtypes_are_refused_naming_them(tmp_path):
    path = _write_page_by_page(tmp_path / "dtypes.tif", [_pages(1)[0], _pages(1, dtype="uint16")[0]])
    with pytest.raises(UnsupportedFormatError, match=r"uint8.*uint16"):
        geoseg.open_raster(str(path))


def _gdal_tiff(path, *, georeferenced: bool, mask: bool = False):
    data = np.random.default_rng(3).integers(0, 255, (3, 128, 160), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 160, "height": 128, "count": 3, "dtype": "uint8",
               "tiled": True, "blockxsize": 64, "blockysize": 64}
    if georeferenced:
        profile |= {"crs": "EPSG:32633", "transform": from_origin(500000, 4200000, 10, 10)}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if mask:
            ds.write_mask(np.full((128, 160), 255, np.uint8))
        ds.build_overviews([2, 4], Resampling.nearest)
    return data


@pytest.mark.parametrize(("georeferenced", "mask"), [(True, False), (False, False), (False, True)])
def test_a_gdal_tiff_with_overview_and_mask_pages_stays_with_gdal(tmp_path, georeferenced, mask):
    """Overview (reduced) and mask pages are no data pages: such a file is one image, read by
    GDAL as before, its overviews as levels."""
    path = tmp_path / "gdal.tif"
    data = _gdal_tiff(path, georeferenced=georeferenced, mask=mask)
    assert len(tifffile.TiffFile(path).pages) > 1
    source = open_source(str(path))
    assert isinstance(source, GeoTIFFSource)
    np.testing.assert_array_equal(geoseg.open_raster(str(path)).values, data)
    if georeferenced:  # (a non-georeferenced overview has a singular transform in rasterio)
        assert geoseg.open_raster(str(path), level=1).shape == (3, 64, 80)


def test_a_page_stack_whose_ome_xml_tifffile_cannot_read_is_refused_not_read_as_page_one(
        tmp_path):
    """OME-XML without SizeT: tifffile cannot build the series, and GDAL, reading it instead,
    read its first page of five, silently."""
    path = tmp_path / "bogus.tif"
    xml = ('<?xml version="1.0"?><OME><Image><Pixels SizeX="32" SizeY="32" SizeZ="5" '
           'DimensionOrder="XYZCT" Type="uint8"/></Image></OME>')
    with tifffile.TiffWriter(path) as tif:
        for page in range(5):
            tif.write(np.full((32, 32), page, np.uint8), description=xml if page == 0 else None,
                      metadata=None)
    with pytest.raises(CorruptInputError, match=r"bogus.tif is a TIFF of 5 image pages whose "
                                                r"metadata tifffile cannot read \(KeyError: "
                                                r"'SizeT'\).*not read its first page alone"):
        geoseg.open_raster(str(path))
