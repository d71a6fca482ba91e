"""Synthetic satellite-like scenes with ground truth, for training and demos."""

from __future__ import annotations

from geoseg.synth.scenes import SCENE_CLASSES, Scene, make_scene

__all__ = ["SCENE_CLASSES", "Scene", "make_scene"]
