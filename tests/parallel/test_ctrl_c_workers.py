"""Ctrl-C in a terminal signals the whole process group, a local cluster's workers included.
The command stops the run and closes them itself; a worker that took the signal while it
started printed the ``KeyboardInterrupt`` traceback of its cut-short imports, and a plugin's
broadcast cut short logged errors while the workers closed."""

from __future__ import annotations

import logging
import os
import signal
import sys

import pytest
from distributed.comm.core import CommClosedError

from geoseg.core.interrupts import children_spared_ctrl_c
from geoseg.logs import DropInterruptedBroadcasts, quiet_interrupted_broadcasts
from geoseg.parallel.cluster import connect
from geoseg.parallel.cluster_spec import ClusterSpec

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _blocked(pid: int | None = None) -> set[int]:
    """The signals blocked in the main thread of process ``pid`` (this one by default)."""
    pid = pid or os.getpid()
    with open(f"/proc/{pid}/task/{pid}/status") as status:
        line = next(line for line in status if line.startswith("SigBlk:"))
    mask = int(line.split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


@linux
def test_local_workers_start_with_ctrl_c_blocked_and_the_command_keeps_it(monkeypatch):
    monkeypatch.setenv("GEOSEG_GPUS", "none")
    with connect(ClusterSpec(kind="local", n_workers=1, threads_per_worker=1)) as client:
        workers = client.run(_blocked)
        assert [signal.SIGINT in blocked for blocked in workers.values()] == [True]
        assert signal.SIGINT not in _blocked()  # the command itself still takes Ctrl-C


def test_a_ctrl_c_during_the_start_is_taken_once_it_ends():
    # Python's own Ctrl-C handler: a library an earlier test imported may have set another
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ran_to_the_end = False
    try:
        with pytest.raises(KeyboardInterrupt), children_spared_ctrl_c():
            signal.raise_signal(signal.SIGINT)
            ran_to_the_end = True
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ran_to_the_end
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def _record(logger: str, message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord(logger, logging.ERROR, __file__, 1, message, None, exc_info)


def test_the_broadcast_filter_drops_only_broadcasts_to_closed_workers():
    kept = DropInterruptedBroadcasts()
    closed = CommClosedError("in <TCP (closed) Scheduler Broadcast local=tcp://127.0.0.1:1 "
                             "remote=tcp://127.0.0.1:2>: Stream is closed")
    assert not kept.filter(_record("distributed.scheduler",
                                   f"broadcast to tcp://127.0.0.1:2 failed: CommClosedError: {closed}"))
    assert not kept.filter(_record("asyncio", "Future exception was never retrieved\nfuture: ...", closed))
    assert kept.filter(_record("distributed.scheduler", "broadcast to tcp://127.0.0.1:2 failed: "
                                                        "ValueError: bad plugin"))
    other = CommClosedError("in <TCP (closed) ConnectionPool.gather local=... remote=...>")
    assert kept.filter(_record("asyncio", "Future exception was never retrieved", other))
    assert kept.filter(_record("asyncio", "Task was destroyed but it is pending!"))
    quiet_interrupted_broadcasts()
    quiet_interrupted_broadcasts()  # once, however often it is called
    for name in ("distributed.scheduler", "asyncio"):
        assert sum(isinstance(f, DropInterruptedBroadcasts)
                   for f in logging.getLogger(name).filters) == 1
