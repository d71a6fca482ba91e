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
import signal
import threading
from collections.abc import Iterator
from typing import Any


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
