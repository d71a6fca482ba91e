"""``geoseg`` with one more method, ``slow``: a threshold that sleeps ``delay`` seconds per batch
of windows, so that a job or a batch runs long enough to be interrupted. Run as the command
itself: ``python -m tests.jobs.slow_batch batch BATCH.yaml`` (from the repository's root), or
from a test with :func:`slow_geoseg`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]


class SlowGeoseg:
    """``geoseg ARGS`` (knowing the slow method) in a process of its own, its stderr collected
    line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.jobs.slow_batch", *args], cwd=ROOT,
            env={**os.environ, "COLUMNS": "1000", "OMP_NUM_THREADS": "1", **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.lines) < count:
            assert self.proc.poll() is None and time.monotonic() < deadline, "\n".join(self.lines)
            time.sleep(0.02)

    def finish(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


@contextlib.contextmanager
def slow_geoseg(args: list[str], env: dict[str, str]) -> Iterator[SlowGeoseg]:
    """:class:`SlowGeoseg`, killed on the way out if it still runs."""
    command = SlowGeoseg(args, env)
    try:
        yield command
    finally:
        if command.proc.poll() is None:
            command.proc.kill()
            command.proc.wait(30)


if __name__ == "__main__":
    from geoseg.cli import main

    register()
    main()
