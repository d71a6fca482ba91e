"""A client that lost its scheduler mid-run: whatever call notices it first (a task's result,
registering a model plugin, cancelling tasks) raises :class:`~geoseg.errors.ClusterLostError`
naming the scheduler, never the bare connection error of that call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager

from distributed import Client

from geoseg.core.urls import public_url
from geoseg.errors import ClusterLostError

LOSS_WAIT = 2.0  # seconds a client takes to notice that a broken connection lost its scheduler


@contextmanager
def scheduler_loss_said(client: Client) -> Iterator[None]:
    """A connection error (or a cancelled call) raised in the block once the client has lost its
    scheduler becomes :class:`ClusterLostError` naming the scheduler: raised by whatever call
    was talking to it (registering a model plugin, say), it would otherwise read as an internal
    error. The executor's own, which counts the chunks written, passes unchanged."""
    try:
        yield
    except ClusterLostError:
        raise
    except (OSError, asyncio.CancelledError, CancelledError) as exc:
        if not _scheduler_lost(client):
            raise
        raise ClusterLostError(
            f"Lost the Dask scheduler at {public_url(client.scheduler.address)} during the run "
            f"({type(exc).__name__}); the chunks written so far are kept. Check that the scheduler "
            "is running (it may have been killed, run out of memory or hit its walltime), then "
            "run the job again: it computes only the chunks not written.") from None


def _scheduler_lost(client: Client, wait: float = LOSS_WAIT) -> bool:
    """Whether ``client`` has lost its scheduler: it is reconnecting or closed; a connection
    that just broke takes it there within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while client.status == "running":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
