"""Training: ``geoseg train TRAIN.yaml`` (:func:`train`) and ``geoseg sweep SWEEP.yaml`` (:func:`sweep`).

The public names are resolved on first access (PEP 562), so a training spec is read and
checked (:mod:`geoseg.training.spec`) before the trainer loads torch.
"""

from geoseg._lazy import lazy_exports

_LAZY = {
    "CheckpointError": "geoseg.errors",
    "SweepResult": "geoseg.training.sweeps",
    "SweepSpec": "geoseg.training.sweeps",
    "TrainResult": "geoseg.training.trainer",
    "TrainSpec": "geoseg.training.spec",
    "TrainSpecError": "geoseg.errors",
    "TrainingDataError": "geoseg.errors",
    "TrainingDivergedError": "geoseg.errors",
    "TrialResult": "geoseg.training.sweeps",
    "load_sweep_spec": "geoseg.training.sweeps",
    "load_train_spec": "geoseg.training.spec",
    "sweep": "geoseg.training.sweeps",
    "train": "geoseg.training.trainer",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
