"""A failed in-process computation ends with its tasks: none still writes after the error."""

import threading
import time

import dask
import pytest

from geoseg.io.settled import compute_settled


def _tasks(running: list[int], ended: list[int], go_on: threading.Event | None = None) -> list:
    """Twelve tasks; the third to start fails at once, while the two before it still run:
    they end after ``go_on`` (or a while)."""
    lock = threading.Lock()

    def one(i: int) -> int:
        with lock:
            running.append(i)
            third = len(running) == 3
        if third:
            raise OSError(28, "No space left on device")
        if go_on is None:
            time.sleep(0.3)
        else:
            go_on.wait(10)
        ended.append(i)
        return i

    return [dask.delayed(one)(i) for i in range(12)]


def test_a_failure_is_raised_only_once_the_running_tasks_have_ended():
    running: list[int] = []
    ended: list[int] = []
    with pytest.raises(OSError, match="No space"):
        compute_settled(*_tasks(running, ended), threads=4)
    started = len(running)
    assert 3 <= started < 12, running  # some ran beside the failing one, not all were started
    assert sorted(ended) == sorted(running[:2] + running[3:])
    time.sleep(0.5)
    assert len(running) == started, "a task started after the error was raised"
    assert not [t for t in threading.enumerate() if t.name.startswith("geoseg-settled")]


def test_dask_alone_would_leave_them_running():
    """What the helper is for: dask's threaded scheduler raises while its tasks go on (a
    check of dask's behaviour, not geoseg's: if it fails, dask waits for them itself now)."""
    running: list[int] = []
    ended: list[int] = []
    go_on = threading.Event()
    with pytest.raises(OSError):
        dask.compute(*_tasks(running, ended, go_on), scheduler="threads", num_workers=4)
    assert not ended  # those running were still waiting when the error came
    go_on.set()
    deadline = time.monotonic() + 10
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended


def test_results_come_back_in_order():
    assert compute_settled(*[dask.delayed(lambda i: i * i)(i) for i in range(5)], threads=2) \
        == (0, 1, 4, 9, 16)


def test_a_task_that_never_returns_delays_the_error_a_bounded_time(monkeypatch, caplog):
    """A read from a hung mount must not keep Ctrl-C, SIGTERM or the error from ending a
    command: the wait is bounded, and what it left running is said."""
    from geoseg.io import settled

    monkeypatch.setattr(settled, "SETTLE_WAIT", 0.5)
    stuck, started = threading.Event(), threading.Event()

    def one(i: int) -> int:
        if i == 0:
            started.wait(10)
            raise OSError(28, "No space left on device")
        started.set()
        stuck.wait(30)  # a read that does not return
        return i

    t0 = time.monotonic()
    try:
        with pytest.raises(OSError, match="No space"):
            compute_settled(*[dask.delayed(one)(i) for i in range(2)], threads=2)
        took = time.monotonic() - t0
    finally:
        stuck.set()
    assert 0.4 < took < 5, took
    assert "1 task(s) still running 0.5 s after the computation failed" in caplog.text
