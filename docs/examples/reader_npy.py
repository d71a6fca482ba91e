"""A geoseg reader for NumPy ``.npy`` files: the smallest complete reader, as a template.

A reader is two classes: a ``Reader`` that recognises its format and describes a file, and a
``RasterSource`` that a task uses to read one window. Make this module importable in your
package and register it in your ``pyproject.toml``; then ``geoseg.open_raster("scene.npy")``
and a job's ``input.url`` read ``.npy`` files (``geoseg.io.readers.installed_readers()`` lists it)::

    [project.entry-points."geoseg.readers"]
    npy = "reader_npy:NpyReader"

Arrays are ``(y, x)`` or ``(band, y, x)``; local files only (numpy maps them into memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.errors import UnsupportedFormatError
from geoseg.io.georef import GeoRef
from geoseg.io.readers import RasterSource, Reader


@dataclass(frozen=True)
class NpySource(RasterSource):
    """Picklable: a task on any worker maps the file and copies only its window."""

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        array = np.load(self.url, mmap_mode="r")
        return np.array((array if array.ndim == 3 else array[None])[(slice(None), *window)])


class NpyReader(Reader):
    name = "npy"  # the name it is registered under
    description = "a NumPy array file (.npy), (y, x) or (band, y, x)"

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        return url.endswith(".npy")  # cheap: the suffix alone

    def open(self, url: str, storage_options: dict[str, Any]) -> NpySource:
        """Reads the header only. Taking no keyword options, it refuses bands, level ..."""
        array = np.load(url, mmap_mode="r")
        if array.ndim not in (2, 3):
            raise UnsupportedFormatError(f"{url} holds an array of shape {array.shape}; the npy "
                                         "reader reads (y, x) or (band, y, x). Reshape it first.")
        shape = array.shape if array.ndim == 3 else (1, *array.shape)
        return NpySource(url=url, shape=shape, dtype=str(array.dtype),
                         chunks=tuple(min(n, 1024) for n in shape[1:]), georef=GeoRef(),
                         band_names=tuple(f"band_{i + 1}" for i in range(shape[0])))
