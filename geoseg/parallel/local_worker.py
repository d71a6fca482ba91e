"""Preloaded by every worker process of a local cluster (``geoseg run``'s default), before it
connects: it installs what must be in place before the worker's first heartbeat, which plugins
registered once the cluster is up come too late for (a command interrupted while its cluster
starts closes the scheduler under workers still starting).

Ctrl-C in a terminal signals the whole process group, these workers included; the command
itself stops the run and closes its cluster, so the workers ignore SIGINT rather than each
printing the traceback of its interrupted event loop. (A local cluster also starts them with
SIGINT blocked, :func:`geoseg.core.interrupts.children_spared_ctrl_c`, for the moments before
this preload runs.)"""

from __future__ import annotations

import signal
import threading
from typing import Any

from geoseg import logs


def dask_setup(worker: Any) -> None:
    """distributed's preload hook."""
    logs.quiet_lost_heartbeats()
    if threading.current_thread() is threading.main_thread():  # where signals can be set
        signal.signal(signal.SIGINT, signal.SIG_IGN)
