"""geoseg: segment rasters far larger than memory on Dask clusters.

The public names are resolved on first access (PEP 562): ``import geoseg.tiling``,
``geoseg --help`` or a Dask scheduler unpickling a graph that names a geoseg function load
neither torch nor dask until something uses them. ``from geoseg import segment`` and
``geoseg.segment`` work as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the subpackage that exports it (tests check it matches __all__).
_LAZY = {
    "TTA": "geoseg.ensembles",
    "Ensemble": "geoseg.ensembles",
    "open_raster": "geoseg.io",
    "ClassInfo": "geoseg.models",
    "ModelInfo": "geoseg.models",
    "SegmentationModel": "geoseg.models",
    "Segmenter": "geoseg.models",
    "load_model": "geoseg.models",
    "save_model": "geoseg.models",
    "segment": "geoseg.parallel",
}

__all__ = [
    "TTA",
    "ClassInfo",
    "Ensemble",
    "ModelInfo",
    "SegmentationModel",
    "Segmenter",
    "__version__",
    "load_model",
    "open_raster",
    "save_model",
    "segment",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:
    from geoseg.core.classes import ClassInfo
    from geoseg.ensembles import TTA, Ensemble
    from geoseg.io import open_raster
    from geoseg.models import ModelInfo, SegmentationModel, Segmenter, load_model, save_model
    from geoseg.parallel import segment
