"""Signals held over a step that must not stop halfway (geoseg.core.interrupts.deferred)."""

from __future__ import annotations

import os
import signal

import pytest

from geoseg.core.interrupts import Terminated, deferred, terminated_as_interrupt


def test_sigint_is_held_until_the_block_ends_then_raised_as_ctrl_c():
    handler = signal.getsignal(signal.SIGINT)
    steps = []
    with pytest.raises(KeyboardInterrupt), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("finished")  # not stopped halfway
    assert steps == ["finished"]
    assert signal.getsignal(signal.SIGINT) is handler


def test_sigterm_held_is_taken_as_the_handler_in_effect_takes_it_and_only_once():
    with terminated_as_interrupt():
        with pytest.raises(Terminated), deferred() as held:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert held.caught == [signal.SIGTERM, signal.SIGTERM]
        with pytest.raises(Terminated), deferred() as held:
            os.kill(os.getpid(), signal.SIGTERM)
            try:
                held.release()  # taken here, not again when the block ends
            finally:
                assert held.caught == []


def test_a_block_that_fails_while_a_signal_is_held_still_stops():
    with pytest.raises(KeyboardInterrupt) as stopped, deferred():
        os.kill(os.getpid(), signal.SIGINT)
        raise OSError("disk full")
    assert isinstance(stopped.value.__context__, OSError)


def test_a_block_without_signals_changes_nothing():
    with deferred():
        value = 1
    assert value == 1
