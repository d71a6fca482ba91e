"""Segmenters: deep models (architectures, model files, per-process cache)."""

from geoseg._lazy import lazy_exports

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "ClassInfo": "geoseg.core.classes",
    "ModelInfo": "geoseg.models.header",
    "ModelRef": "geoseg.models.header",
    "SegmentationModel": "geoseg.models.model",
    "Segmenter": "geoseg.core.segmenter",
    "SliceWise": "geoseg.models.slicewise",
    "UNet2D": "geoseg.models.unet",
    "architectures": "geoseg.models.registry",
    "build_network": "geoseg.models.registry",
    "builtin_models": "geoseg.models.modelfile",
    "load_counts": "geoseg.models.cache",
    "load_model": "geoseg.models.modelfile",
    "register_architecture": "geoseg.models.registry",
    "resolve": "geoseg.models.cache",
    "save_model": "geoseg.models.modelfile",
    "weights_sha256": "geoseg.models.model",
}

__all__ = [
    "ClassInfo",
    "ModelInfo",
    "ModelRef",
    "SegmentationModel",
    "Segmenter",
    "SliceWise",
    "UNet2D",
    "architectures",
    "build_network",
    "builtin_models",
    "load_counts",
    "load_model",
    "register_architecture",
    "resolve",
    "save_model",
    "weights_sha256",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
