"""Errors of the trainer; each also subclasses the geoseg error it refines."""

from __future__ import annotations

from geoseg.errors import GeosegError, JobSpecError


class TrainSpecError(JobSpecError):
    """A training or sweep spec that does not validate; the message lists every problem."""


class TrainingDataError(GeosegError, ValueError):
    """Training rasters that cannot be used as given (shapes, bands, label values, sizes)."""


class CheckpointError(GeosegError, RuntimeError):
    """A run folder whose checkpoint is corrupt, or belongs to a different spec."""


class TrainingDivergedError(GeosegError, RuntimeError):
    """The loss became NaN or infinite."""
