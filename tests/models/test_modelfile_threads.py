"""Model files checked on many threads at once, as a batch's jobs check theirs on one process,
while other threads build torch modules (as tasks on a threads cluster do): each build bounded
(:func:`geoseg.models.modelfile._parts_bounded`) must neither fail for another thread's build
nor make another thread's build fail."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import torch

from geoseg.errors import BudgetError
from geoseg.models import modelfile

SECONDS = 3.0  # of checks on each thread: the old race failed a few builds a second


@contextlib.contextmanager
def switching_often() -> Iterator[None]:
    """Threads switch every microsecond, so that a race shows in a few seconds."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_model_checks_on_many_threads_while_others_build_modules_never_fail():
    url = modelfile.resolve_url("builtin:demo-unet")
    errors: list[str] = []
    stop = threading.Event()

    def check() -> None:
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            try:
                modelfile.read_header(url)
            except Exception as exc:  # noqa: BLE001 - every failure is collected and shown
                errors.append(f"check: {type(exc).__name__}: {exc}")

    def build() -> None:
        while not stop.is_set():
            try:
                torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 1) for _ in range(10)])
            except Exception as exc:  # noqa: BLE001
                errors.append(f"build: {type(exc).__name__}: {exc}")

    checkers = [threading.Thread(target=check) for _ in range(4)]
    builders = [threading.Thread(target=build) for _ in range(2)]
    with switching_often():
        for t in checkers + builders:
            t.start()
        for t in checkers:
            t.join()
        stop.set()
        for t in builders:
            t.join()
    assert errors == [], f"{len(errors)} failed, first: {errors[:3]}"


def test_a_bounded_build_counts_only_its_own_thread_and_still_refuses_past_its_budget():
    """Another thread's modules made during a bounded build count against neither; the bounded
    build itself is refused past its budget, and the budget ends with the build."""
    made_elsewhere = threading.Event()

    def elsewhere() -> None:
        torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 1) for _ in range(50)])
        made_elsewhere.set()

    with modelfile._parts_bounded("model file x", 3):
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert made_elsewhere.is_set()
        with pytest.raises(BudgetError, match="model file x builds more than 3 modules"):
            torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 1) for _ in range(3)])
    torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 1) for _ in range(10)])  # no budget now
