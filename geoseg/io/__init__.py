"""Reading rasters lazily and writing chunked outputs."""

from geoseg.io.georef import GeoRef
from geoseg.io.readers import Reader, installed_readers, open_raster, open_source
from geoseg.io.sources import GeoTIFFSource, RasterSource, ZarrSource

__all__ = ["GeoRef", "GeoTIFFSource", "RasterSource", "Reader", "ZarrSource", "installed_readers",
           "open_raster", "open_source"]
