"""The model files inside a composed segmenter: what an input's value ranges are checked
against (:mod:`geoseg.models.ranges`). Here, above both, because a composition (an ensemble, a
TTA) is a model's wrapper, never the other way round."""

from __future__ import annotations

from typing import Any

from geoseg.ensembles.ensemble import Ensemble
from geoseg.ensembles.tta import TTA
from geoseg.models.header import ModelHeader, ModelInfo
from geoseg.models.model import SegmentationModel
from geoseg.models.slicewise import SliceWise


def trained_models(segmenter: Any) -> list[ModelInfo]:
    """The model files inside ``segmenter`` (a loaded model or a model file's header, a TTA's
    member, a slice-wise model's 2-D one, an ensemble's members), each once: the statistics an
    input is checked against. Classical methods have none."""
    if isinstance(segmenter, (SegmentationModel, ModelHeader)):
        return [segmenter.info]
    if isinstance(segmenter, TTA):
        return trained_models(segmenter.member)
    if isinstance(segmenter, SliceWise):
        return trained_models(segmenter.inner)
    if isinstance(segmenter, Ensemble):
        found = [info for member in segmenter.members for info in trained_models(member)]
        # a file's by its weights; a model built in memory (no hash yet) by itself
        return list({info.sha256 or id(info): info for info in found}.values())
    return []
