"""SIGTERM ends a command as Ctrl-C does: its clean-up runs.

A process stopped by ``kill``, a scheduler's time limit or a container's shutdown gets SIGTERM,
whose default is to end at once: a run's lease on its output would be left to expire (keeping
runs on other machines off the output), its status would still say ``running``, and a
half-written conversion would stay. Raised as :class:`Terminated`, a ``KeyboardInterrupt``,
it unwinds through the same ``finally`` blocks and ``except KeyboardInterrupt`` clauses as
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

EXIT_GRACE = 5  # seconds an interrupted command may take to exit once its clean-up has run


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while :func:`terminated_as_interrupt` is in effect."""


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread instead of
    ending the process at once. Outside the main thread, where no signal handler can be set,
    it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated(f"received signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status for a process ended by the signal: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def exit_within(code: int, seconds: float = EXIT_GRACE) -> None:
    """End the process with ``code`` if it has not ended ``seconds`` from now.

    Called once an interrupted command's clean-up has run (tasks cancelled, lease released,
    status written). A task of an in-process cluster blocked where no signal reaches it (a read
    from a FIFO or a hung network file system) would otherwise keep the interpreter waiting at
    exit, in the thread pools' exit-time joins, until the reader returns: a container would then
    be killed at the end of its grace period and a terminal would hang. The timer's thread is a
    daemon thread: a process that exits in time ends it unseen."""
    def force() -> None:
        print(f"geoseg: a thread of this process was still busy {seconds:g} s after the "
              "interrupt (a read that never returns?); exiting without waiting for it",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
