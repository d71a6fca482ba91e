"""Reading rasters lazily and writing chunked outputs.

The public names are resolved on first access (PEP 562): a light module such as
``geoseg.io.allow`` loads without the readers' dask, zarr and rasterio.
"""

from geoseg._lazy import lazy_exports

_LAZY = {
    "GeoRef": "geoseg.io.georef",
    "GeoTIFFSource": "geoseg.io.sources",
    "RasterSource": "geoseg.io.sources",
    "Reader": "geoseg.io.readers",
    "ZarrSource": "geoseg.io.sources",
    "installed_readers": "geoseg.io.readers",
    "open_raster": "geoseg.io.readers",
    "open_source": "geoseg.io.readers",
}

__all__ = ["GeoRef", "GeoTIFFSource", "RasterSource", "Reader", "ZarrSource", "installed_readers",
           "open_raster", "open_source"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
