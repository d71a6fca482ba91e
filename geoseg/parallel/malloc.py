"""Worker processes' malloc set up for the large buffers a network allocates.

Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory goes back
to the system. Setting any malloc threshold also freezes glibc's mmap threshold at 128 KiB: each
tensor a network allocates (its activations, megabytes per tile) then becomes a fresh ``mmap``
whose pages fault in zero-filled and go back to the system when freed. MONAI's sliding window
with the demo U-Net (``bench/bench_peer_monai.py``'s setting) took 15.8-16.0 s in a Dask worker
process against 14.5 s in a plain one, and 16.3-16.5 s against 13.3-14.7 s in plain processes
started with and without that variable. With the mmap threshold
at :data:`MMAP_THRESHOLD`, smaller buffers are reused from malloc's heap; larger ones still get
mappings of their own, and the trim still hands the heap's free top back to the system.

A task that runs a network file raises it in its process (:func:`for_networks`), in a job as in
a lazy ``segment`` on a cluster, when the process started with ``MALLOC_TRIM_THRESHOLD_`` set:
a plain process keeps glibc's own adaptive threshold. The price is memory kept for reuse: a
threshold job's workers peaked 88 MiB higher with it set at their start (576-584 against
488-495 MiB, ``bench/bench_memory.py``), which is why tasks without a network leave malloc as
Dask set it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

MMAP_THRESHOLD = 64 << 20  # bytes: smaller allocations come from malloc's heap
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def set_mmap_threshold(threshold: int) -> bool:
    """glibc's ``mallopt(M_MMAP_THRESHOLD, threshold)`` in this process; whether it took."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


@functools.cache
def for_networks() -> bool:
    """Raise this process's mmap threshold to :data:`MMAP_THRESHOLD` if it started with
    ``MALLOC_TRIM_THRESHOLD_`` set (as Dask's worker processes do), once; whether it did."""
    return "MALLOC_TRIM_THRESHOLD_" in os.environ and set_mmap_threshold(MMAP_THRESHOLD)
