"""Raster sources: small picklable descriptions of where pixels live and how to read a window,
one kind per format. Each lives with its reader (:mod:`geoseg.io.readers`); this module names
them all in one place. :class:`RasterSource` is their contract (:mod:`geoseg.io.readers.base`).
"""

from geoseg.io.mosaic import MosaicSource
from geoseg.io.readers._geotiff import GeoTIFFSource
from geoseg.io.readers._image import ImageSource
from geoseg.io.readers._nifti import NiftiSource
from geoseg.io.readers._tiffstack import TiffStackSource
from geoseg.io.readers._zarr import ZarrSource
from geoseg.io.readers.base import BAND, DROP, SPACE, RasterSource

__all__ = [
    "BAND",
    "DROP",
    "SPACE",
    "GeoTIFFSource",
    "ImageSource",
    "MosaicSource",
    "NiftiSource",
    "RasterSource",
    "TiffStackSource",
    "ZarrSource",
]
