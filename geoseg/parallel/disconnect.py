"""A job's worker plugin goes when its client goes, even when the client never says goodbye.

A client that ends normally unregisters its job's :class:`~geoseg.parallel.plugins.ModelPlugin`
and the workers free the model. A client that is killed, or loses the network, leaves it
registered: on a long-lived cluster every worker (and every worker that joins later) would keep
that job's networks in memory for good. :class:`ReleaseOnDisconnect` runs on the scheduler and
unregisters, when a client disconnects, the model plugins whose names end with that client's id.

This module imports no torch: the scheduler unpickles it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger(__name__)

PREFIX = "geoseg-models-"


def plugin_name(digest: str, job: str, client: str) -> str:
    """A model plugin's name: one per job, ending with the id of the client that owns it."""
    return f"{PREFIX}{digest}-{job}@{client}"


def owned_by(names: Iterable[str], client: str) -> list[str]:
    """The model plugins among ``names`` that ``client`` registered."""
    return [n for n in names if n.startswith(PREFIX) and n.endswith(f"@{client}")]


class ReleaseOnDisconnect(SchedulerPlugin):
    """Scheduler plugin: unregisters a departed client's model plugins (the workers free them)."""

    name = "geoseg-release-on-disconnect"
    idempotent = True  # registered by every job; the scheduler keeps the first

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    def remove_client(self, scheduler: Any, client: str) -> None:
        for name in owned_by(scheduler.worker_plugins, client):
            logger.info("client %s left without releasing %s: releasing it", client, name)
            task = asyncio.ensure_future(_unregister(scheduler, name))
            self._pending.add(task)  # a reference until done, so the task is not collected
            task.add_done_callback(self._pending.discard)


async def _unregister(scheduler: Any, name: str) -> None:
    try:
        await scheduler.unregister_worker_plugin(None, name)
    except ValueError:  # gone meanwhile: the client released it after all
        pass
