"""Plain images (PNG, JPEG, GIF, BMP, WebP) and TIFF stacks that are not georeferenced: the
sources and helpers of their readers, :mod:`geoseg.io.readers._image` (decoded whole, once per
process) and :mod:`geoseg.io.readers._tiffstack` (read window by window through tifffile)."""

from geoseg.io.readers._image import MAX_IMAGE_BYTES, ImageSource, decoded, image_kind, image_source
from geoseg.io.readers._tiffstack import PAGES, TiffStackSource, tiff_kind, tiff_roles, tiff_source

__all__ = [
    "MAX_IMAGE_BYTES",
    "PAGES",
    "ImageSource",
    "TiffStackSource",
    "decoded",
    "image_kind",
    "image_source",
    "tiff_kind",
    "tiff_roles",
    "tiff_source",
]
