"""A failed in-process computation ends with its tasks: none still writes after the error."""

import threading
import time

import dask
import pytest

from geoseg.io.settled import compute_settled


def _tasks(running: list[int], ended: list[int]) -> list:
    def one(i: int) -> int:
        running.append(i)
        if i == 0:
            time.sleep(0.05)  # the others have started by then
            raise OSError(28, "No space left on device")
        time.sleep(0.4)
        ended.append(i)
        return i

    return [dask.delayed(one)(i) for i in range(12)]


def test_a_failure_is_raised_only_once_the_running_tasks_have_ended():
    running: list[int] = []
    ended: list[int] = []
    with pytest.raises(OSError, match="No space"):
        compute_settled(*_tasks(running, ended), threads=4)
    started = len(running)
    assert 1 < started < 12, running  # some ran beside the failing one, not all were started
    assert sorted(ended) == sorted(i for i in running if i != 0)
    time.sleep(0.6)
    assert len(running) == started, "a task started after the error was raised"
    assert not [t for t in threading.enumerate() if t.name.startswith("geoseg-settled")]


def test_dask_alone_would_leave_them_running():
    """What the helper is for: dask's threaded scheduler raises while its tasks go on."""
    running: list[int] = []
    ended: list[int] = []
    with pytest.raises(OSError):
        dask.compute(*_tasks(running, ended), scheduler="threads", num_workers=4)
    at_error = len(ended)
    time.sleep(1.5)
    assert len(ended) > at_error


def test_results_come_back_in_order():
    assert compute_settled(*[dask.delayed(lambda i: i * i)(i) for i in range(5)], threads=2) \
        == (0, 1, 4, 9, 16)
