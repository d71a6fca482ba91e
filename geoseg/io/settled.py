"""Dask work in this process that ends as a whole, even when it fails.

Dask's threaded scheduler raises the first task's error at once while the tasks already
started go on in its pool: a conversion whose clean-up then removed its part-written output
saw chunk writes still under way put folders back after it. :func:`compute_settled` returns or
raises only once no task of its own is running any more, or :data:`SETTLE_WAIT` seconds after
the failure (a read that never returns must not keep Ctrl-C or SIGTERM from ending a command).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import dask
from dask.system import CPU_COUNT

from geoseg import logs

SETTLE_WAIT = 10.0  # seconds a failed computation waits for its running tasks


class _Tracked(ThreadPoolExecutor):
    """A thread pool that keeps the futures of the tasks submitted to it."""

    def __init__(self, threads: int) -> None:
        super().__init__(threads, thread_name_prefix="geoseg-settled")
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self.futures = [f for f in self.futures if not f.done()] + [future]
        return future


def compute_settled(*collections: Any, threads: int | None = None) -> tuple[Any, ...]:
    """``dask.compute(*collections)`` on a pool of ``threads`` threads (dask's ``num_workers``
    setting, else the CPUs this process may use) owned by this call: on any failure, a Ctrl-C
    included, tasks not yet started are dropped and those running are waited for (at most
    :data:`SETTLE_WAIT` seconds, then said) before the error goes on."""
    pool = _Tracked(threads or dask.config.get("num_workers", None) or CPU_COUNT)
    try:
        result = dask.compute(*collections, scheduler="threads", pool=pool)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        running = [f for f in pool.futures if not f.cancelled()]  # wait() never sees those done
        left = wait(running, timeout=SETTLE_WAIT).not_done
        if left:
            logs.log.warning("%d task(s) still running %g s after the computation failed (a read "
                             "that never returns?); they may still write", len(left), SETTLE_WAIT)
        raise
    pool.shutdown(wait=True)
    return result
