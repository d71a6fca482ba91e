"""Runtime settings ("how" a job runs), each overridable by a ``GEOSEG_*`` variable.

The job spec says *what* to compute; these say how: which device, how many torch
threads, how many tiles per batch. Read at call time, so workers honour their
own environment.
"""

from __future__ import annotations

import os
import re

from geoseg.errors import ClusterConfigError

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
    "GEOSEG_CONNECT_TIMEOUT": "10",  # seconds a storage request waits for its connection
    "GEOSEG_READ_TIMEOUT": "20",  # seconds a storage request waits for the next bytes of its answer
    "GEOSEG_INPROCESS_PIXELS": "8e6",  # a local job this small runs on threads, no worker processes
    "GEOSEG_WORKER_WAIT": "120",  # seconds a job waits for a worker on a running scheduler
    "GEOSEG_GPUS": "auto",  # GPUs of a local cluster: auto, none, or ids such as 0,1
    "GEOSEG_GPU_THREADS": "4",  # threads per GPU worker: they read the next regions meanwhile
    # budgets (geoseg.budgets), checked from metadata before any read or allocation
    "GEOSEG_MAX_PIXELS": "1e11",  # spatial pixels (voxels) of one input
    "GEOSEG_MAX_TASKS": "1e6",  # tasks (output chunks or shards) of one job or output
    "GEOSEG_MAX_WINDOW_BYTES": str(2 << 30),  # input bytes one task reads
    "GEOSEG_MAX_MODEL_PARAMETERS": "1e9",  # values in a model file's network
    "GEOSEG_MAX_MODEL_BYTES": str(8 << 30),  # memory the network's weights take
    # where outputs may be written (geoseg.io.allow): schemes, and buckets (empty: any)
    "GEOSEG_OUTPUT_SCHEMES": "file,local,memory,s3,s3a,gs,gcs,az,abfs,abfss,adl,hdfs",
    "GEOSEG_OUTPUT_BUCKETS": "",
}
GPU_ID = re.compile(r"^\d+$|^(GPU|MIG)-[\w/-]+$")  # what CUDA_VISIBLE_DEVICES accepts


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


def inprocess_pixels() -> float:
    """Pixels (voxels) up to which a local CPU job runs on threads in this process: starting
    worker processes and loading the model in each costs more than it saves on such a job."""
    text = get("GEOSEG_INPROCESS_PIXELS")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ClusterConfigError(f"GEOSEG_INPROCESS_PIXELS: received {text!r}; expected a number "
                                 ">= 0 of pixels (0: always start worker processes), e.g. 8e6.")
    return value


def worker_wait() -> float:
    """Seconds a job waits for its running scheduler to have a worker (``GEOSEG_WORKER_WAIT``)."""
    text = get("GEOSEG_WORKER_WAIT")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ClusterConfigError(f"GEOSEG_WORKER_WAIT: received {text!r}; expected seconds > 0 "
                                 "to wait for a worker on a running scheduler, e.g. 120.")
    return value


def gpu_ids() -> list[str]:
    """GPUs a local cluster gives one worker process each: ``GEOSEG_GPUS`` (comma-separated ids,
    or ``none``) when set, else the GPUs torch counts, named as ``CUDA_VISIBLE_DEVICES`` names
    them. ``GEOSEG_DEVICE=cpu`` means none. Counting calls ``torch.cuda.device_count()`` only."""
    if get("GEOSEG_DEVICE").lower() == "cpu":
        return []
    wanted = get("GEOSEG_GPUS").strip().lower()
    if wanted == "none":
        return []
    if wanted != "auto":
        return parse_gpu_ids(get("GEOSEG_GPUS"))
    return _visible_gpus()


def parse_gpu_ids(text: str) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; ids are integers or ``GPU-``/``MIG-`` UUIDs, each once."""
    ids = [part.strip() for part in text.split(",")]
    bad = [part for part in ids if not GPU_ID.match(part)]
    if bad or len(set(ids)) != len(ids):
        raise ClusterConfigError(
            f"GEOSEG_GPUS: received {text!r}; expected auto, none, or distinct GPU ids separated "
            "by commas (integers or GPU-/MIG- UUIDs as CUDA_VISIBLE_DEVICES takes them), "
            "e.g. GEOSEG_GPUS=0,1.")
    return ids


def _visible_gpus() -> list[str]:
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(count)]
    return [part.strip() for part in visible.split(",")][:count]


def gpu_threads() -> int:
    """Threads per GPU worker process (``GEOSEG_GPU_THREADS``, default 4)."""
    text = get("GEOSEG_GPU_THREADS")
    if not text.strip().isdigit() or int(text) < 1:
        raise ClusterConfigError(f"GEOSEG_GPU_THREADS: received {text!r}; expected an integer "
                                 ">= 1 (threads per GPU worker), e.g. GEOSEG_GPU_THREADS=4.")
    return int(text)
