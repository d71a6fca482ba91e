"""A geoseg method: vegetation where NDVI = (nir - red) / (nir + red) passes a threshold.

A classical method is a :class:`~geoseg.core.segmenter.Segmenter` written in numpy: it
names its classes, says how much context a pixel needs (``halo``; none here, so any
chunking is exact) and turns a batch of windows into one score per class and pixel.
Register it in your ``pyproject.toml``; a job spec then asks for it by name, as
``model: {method: ndvi, params: {red: 3, nir: 4, threshold: 0.3}}``::

    [project.entry-points."geoseg.methods"]
    ndvi = "method_ndvi:NdviThreshold"

A method that learns from the raster (as Otsu does) adds a classmethod
``fit(raster, **params)`` returning the fitted segmenter; geoseg calls it on the job's
input before segmenting.
"""

from __future__ import annotations

import numpy as np

from geoseg.core.classes import ClassInfo
from geoseg.core.segmenter import Segmenter
from geoseg.errors import MethodParameterError


class NdviThreshold(Segmenter):
    name = "ndvi"
    classes = (ClassInfo("other", (160, 160, 160)), ClassInfo("vegetation", (34, 139, 34)))
    stride = (1, 1)
    halo = (0, 0)

    def __init__(self, red: int = 1, nir: int = 2, threshold: float = 0.3):
        if not -1 <= threshold <= 1:
            raise MethodParameterError(f"ndvi threshold={threshold}: NDVI lies in [-1, 1]; "
                                       "pick a threshold there, e.g. 0.3.")
        self.red, self.nir, self.threshold = red - 1, nir - 1, float(threshold)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        red, nir = batch[:, self.red], batch[:, self.nir]
        ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
        vegetation = ndvi > self.threshold
        return np.stack([~vegetation, vegetation], axis=1).astype(np.float32)
