"""Preloaded by every worker process of a local cluster (``geoseg run``'s default), before it
connects: it installs what must be in place before the worker's first heartbeat, which plugins
registered once the cluster is up come too late for (a command interrupted while its cluster
starts closes the scheduler under workers still starting)."""

from __future__ import annotations

from typing import Any

from geoseg import logs


def dask_setup(worker: Any) -> None:
    """distributed's preload hook."""
    logs.quiet_lost_heartbeats()
