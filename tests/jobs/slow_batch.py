"""``geoseg`` with one more method, ``slow``: a threshold that sleeps ``delay`` seconds per batch
of windows, so that a batch runs long enough to be interrupted. Run as the command itself:
``python -m tests.jobs.slow_batch batch BATCH.yaml`` (from the repository's root)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from geoseg.methods import build
from geoseg.methods.threshold import Threshold


@dataclass(frozen=True)
class Slow(Threshold):
    """A threshold taking ``delay`` seconds per batch of windows."""

    delay: float = 0.0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return super().predict(batch)


def register() -> None:
    """Make ``model: {method: slow}`` known in this process (a threads cluster's workers too)."""
    build.DIRECT["slow"] = lambda _, p: Slow(**{**p, "thresholds": tuple(p["thresholds"])})


if __name__ == "__main__":
    from geoseg.cli import main

    register()
    main()
