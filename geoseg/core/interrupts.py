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


@contextlib.contextmanager
def children_spared_ctrl_c() -> Iterator[None]:
    """Block SIGINT in this thread while the block runs: the threads it starts inherit the
    block, and so do the processes they start, for life (a signal mask survives ``exec``).

    Ctrl-C in a terminal signals the whole process group. A local cluster's worker processes,
    started from its event loop's thread, would each print the ``KeyboardInterrupt`` traceback
    of an import cut short while they start, before anything in them can ignore the signal; the
    command itself stops the run and closes them. A Ctrl-C that lands in the block is taken once
    it ends. Where threads have no signal mask (Windows), it changes nothing.

    multiprocessing's resource tracker is started first: starting it unblocks SIGINT in the
    thread that does (``resource_tracker.ensure_running``), which would lift the block from the
    loop's thread that needs it first."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class StoppedOnceComplete(KeyboardInterrupt):
    """A signal taken once a run had marked its output complete and written its record (held
    while it did, :func:`deferred`): the run is complete; only what came after was stopped."""

    def __init__(self, stopped: KeyboardInterrupt, output_url: str, record_url: str | None,
                 note: str = "") -> None:
        super().__init__(str(stopped))
        self.stopped, self.output_url, self.record_url = stopped, output_url, record_url
        self.note = note  # what else the stop left undone (logging the run to MLflow)


class Held:
    """The signals :func:`deferred` holds, and the handlers it set aside."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self.handlers: dict[int, Any] = {}

    def catch(self, signum: int, frame: Any) -> None:
        self.caught.append(signum)

    def release(self) -> None:
        """Put the handlers back and take the first signal held as it would have been taken
        (``KeyboardInterrupt``, :class:`Terminated`, or the default action); once only."""
        handlers, self.handlers = self.handlers, {}
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        caught, self.caught = self.caught, []
        if caught:
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def deferred() -> Iterator[Held]:
    """Hold SIGINT and SIGTERM until the block ends (or :meth:`Held.release`), then take the
    first: for a short step that must not stop halfway, such as marking an output complete and
    writing the run's record. Outside the main thread, where no signal handler can be set, it
    changes nothing."""
    held = Held()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # one set outside Python stays
            held.handlers[signum] = handler
            signal.signal(signum, held.catch)
    try:
        yield held
    finally:
        held.release()


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status for a process ended by the signal: 143 for SIGTERM, 130 for SIGINT."""
    if isinstance(interrupt, StoppedOnceComplete):
        interrupt = interrupt.stopped
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
