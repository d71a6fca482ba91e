"""Readers: one module per raster format, found through the entry-point group ``geoseg.readers``.

:func:`open_source` asks each installed reader in turn (most specific first) whether a URL is
its format, and the first that claims it describes it as a :class:`RasterSource`;
:func:`open_raster` makes that a lazy ``DataArray``. A format is added by one module holding a
:class:`Reader` (see :mod:`geoseg.io.readers.base` and ``docs/examples/reader_npy.py``) and one
line in its package's entry points::

    [project.entry-points."geoseg.readers"]
    npy = "my_package.reader:NpyReader"

Built in: ``geotiff``, ``tiff-stack``, ``nifti``, ``image``, ``zarr``, ``ome-zarr``
(the private modules ``_geotiff`` ... ``_omezarr`` here).
"""

from geoseg._lazy import lazy_exports

# Public name -> the module that defines it, imported on first use: the job spec asks for the
# installed readers' names without loading dask.
_LAZY = {
    "GROUPED": "geoseg.io.readers._open",
    "RasterSource": "geoseg.io.readers.base",
    "Reader": "geoseg.io.readers.base",
    "check_pixel_dtype": "geoseg.io.readers._open",
    "dask_chunks": "geoseg.io.readers._open",
    "installed_readers": "geoseg.io.readers._registry",
    "open_raster": "geoseg.io.readers._open",
    "open_source": "geoseg.io.readers._open",
    "source_to_dataarray": "geoseg.io.readers._open",
}

__all__ = ["GROUPED", "RasterSource", "Reader", "check_pixel_dtype", "dask_chunks", "installed_readers", "open_raster",
           "open_source", "source_to_dataarray"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
