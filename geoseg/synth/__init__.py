"""Synthetic data with ground truth: satellite-like scenes and medical-like volumes."""

from __future__ import annotations

from geoseg.synth.scenes import SCENE_CLASSES, Scene, make_scene
from geoseg.synth.volumes import VOLUME_CLASSES, Volume, make_volume

__all__ = ["SCENE_CLASSES", "VOLUME_CLASSES", "Scene", "Volume", "make_scene", "make_volume"]
