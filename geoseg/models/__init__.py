"""Segmenters: deep models (architectures, model files, per-process cache)."""

# Importing the architecture modules registers them by name.
from geoseg.core.classes import ClassInfo
from geoseg.core.segmenter import Segmenter
from geoseg.models import deeplab, fcn, segnet, unet, unet3d  # noqa: F401
from geoseg.models.cache import load_counts, resolve
from geoseg.models.model import ModelInfo, ModelRef, SegmentationModel, weights_sha256
from geoseg.models.modelfile import (
    builtin_models,
    export_torchscript,
    load_model,
    save_model,
)
from geoseg.models.registry import architectures, build_network, register_architecture
from geoseg.models.slicewise import SliceWise
from geoseg.models.unet import UNet2D

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
    "export_torchscript",
    "load_counts",
    "load_model",
    "register_architecture",
    "resolve",
    "save_model",
    "weights_sha256",
]
