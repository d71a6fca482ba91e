"""Dask work in this process that ends as a whole, even when it fails.

Dask's threaded scheduler raises the first task's error at once while the tasks already
started go on in its pool: a conversion whose clean-up then removed its part-written output
saw chunk writes still under way put folders back after it. :func:`compute_settled` returns or
raises only once no task of its own is running any more.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask


def compute_settled(*collections: Any, threads: int | None = None) -> tuple[Any, ...]:
    """``dask.compute(*collections)`` on a pool of ``threads`` threads (the CPU count by
    default) owned by this call: on any failure, a Ctrl-C included, tasks not yet started are
    dropped and those running are waited for before the error goes on."""
    pool = ThreadPoolExecutor(threads or os.cpu_count() or 1, thread_name_prefix="geoseg-settled")
    try:
        return dask.compute(*collections, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
