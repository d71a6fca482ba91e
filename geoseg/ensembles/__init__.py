"""Ensembles of segmenters and test-time augmentation, usable with :func:`geoseg.segment`.

::

    ndwi = fit_threshold(raster, "otsu", feature=(2, 4), class_names=("land", "water"))
    ens = Ensemble([model_a, model_b, ndwi], weights=(2, 1, 1), combine="mean")  # same class names
    classes = geoseg.segment(raster, ens)            # each window is read once
    tta = TTA(model_a, transforms="d4")               # 8 flips/rotations, averaged
"""

from __future__ import annotations

from geoseg.ensembles.ensemble import (
    COMBINES,
    Ensemble,
    EnsembleError,
    EnsembleRef,
    combine_scores,
    normalize_weights,
)
from geoseg.ensembles.tta import TRANSFORMS, TTA, Transform, TTARef, transform_set

__all__ = [
    "COMBINES",
    "TRANSFORMS",
    "TTA",
    "Ensemble",
    "EnsembleError",
    "EnsembleRef",
    "TTARef",
    "Transform",
    "combine_scores",
    "normalize_weights",
    "transform_set",
]
