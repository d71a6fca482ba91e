"""geoseg: segment rasters far larger than memory on Dask clusters."""

from geoseg.ensembles import TTA, Ensemble
from geoseg.io import open_raster
from geoseg.models import ClassInfo, ModelInfo, SegmentationModel, Segmenter, load_model, save_model
from geoseg.parallel import segment

__version__ = "0.1.0"

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
