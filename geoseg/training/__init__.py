"""Training: ``geoseg train TRAIN.yaml`` (:func:`train`) and ``geoseg sweep SWEEP.yaml`` (:func:`sweep`)."""

from geoseg.errors import CheckpointError, TrainingDataError, TrainingDivergedError, TrainSpecError
from geoseg.training.spec import TrainSpec, load_train_spec
from geoseg.training.sweep import SweepResult, SweepSpec, TrialResult, load_sweep_spec, sweep
from geoseg.training.trainer import TrainResult, train

__all__ = [
    "CheckpointError",
    "SweepResult",
    "SweepSpec",
    "TrainResult",
    "TrainSpec",
    "TrainSpecError",
    "TrainingDataError",
    "TrainingDivergedError",
    "TrialResult",
    "load_sweep_spec",
    "load_train_spec",
    "sweep",
    "train",
]
