"""Runtime settings ("how" a job runs), each overridable by a ``GEOSEG_*`` variable.

The job spec says *what* to compute; these say how: which device, how many torch
threads, how many tiles per batch. Read at call time, so workers honour their
own environment.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "GEOSEG_DEVICE": "auto",
    "GEOSEG_TORCH_THREADS": "0",
    "GEOSEG_BATCH_SIZE": "4",
    "GEOSEG_TILE": "1024",
    "GEOSEG_VOLUME_TILE": "96",
    "GEOSEG_REGION_BYTES": str(1 << 30),  # bound on a task's region buffers (scores, ids)
    "GEOSEG_READ_CACHE_BYTES": str(512 << 20),  # decoded input chunks kept per process
    "GEOSEG_RETRIES": "4",  # retries of a storage read or write after a transient error
    "GEOSEG_RETRY_DELAY": "0.5",  # seconds before the first retry; doubles at each one
}


def get(name: str) -> str:
    """The value of setting ``name`` (e.g. ``"GEOSEG_DEVICE"``): environment first, then default."""
    return os.environ.get(name, DEFAULTS[name])


def device() -> str:
    """``cuda`` when asked for or when ``auto`` finds a GPU, else ``cpu``."""
    wanted = get("GEOSEG_DEVICE").lower()
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_threads() -> int:
    """Threads torch may use per process; 0 leaves torch's own default."""
    return int(get("GEOSEG_TORCH_THREADS"))


def batch_size() -> int:
    return int(get("GEOSEG_BATCH_SIZE"))


def region_bytes() -> int:
    """Bytes a task's region buffers may take (class scores, ids): bounds how far a task's
    region grows past one output chunk."""
    return int(get("GEOSEG_REGION_BYTES"))


def tile_size(ndim: int = 2) -> int:
    """Default tile core per axis: ``GEOSEG_TILE`` for images, ``GEOSEG_VOLUME_TILE`` for volumes."""
    return int(get("GEOSEG_TILE" if ndim == 2 else "GEOSEG_VOLUME_TILE"))


def read_cache_bytes() -> int:
    """Bytes of decoded input chunks each process keeps for neighbouring windows (0: none)."""
    return int(get("GEOSEG_READ_CACHE_BYTES"))
