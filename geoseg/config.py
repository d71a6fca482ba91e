"""Runtime settings ("how" a job runs), each overridable by a ``GEOSEG_*`` variable.

The job spec says *what* to compute; these say how: which device, how many torch
threads, how many tiles per batch. Read at call time, so workers honour their
own environment. Every ``GEOSEG_*`` variable geoseg reads is listed in :data:`DEFAULTS`
and read here (tests/test_config.py checks); a value that does not parse is a
:class:`~geoseg.errors.SettingError` naming the variable, what it holds and what it takes.
"""

from __future__ import annotations

import math
import os
import re
import sys

from geoseg.core.text import whole_number
from geoseg.errors import ClusterConfigError, ParameterError, SettingError

DEFAULTS = {
    "GEOSEG_DEVICE": "auto",
    "GEOSEG_TORCH_THREADS": "0",
    "GEOSEG_BATCH_SIZE": "4",
    "GEOSEG_TILE": "1024",
    "GEOSEG_VOLUME_TILE": "96",
    "GEOSEG_REGION_BYTES": str(1 << 30),  # bound on a task's region buffers (scores, ids)
    "GEOSEG_READ_CACHE_BYTES": str(512 << 20),  # decoded input chunks kept per process
    "GEOSEG_MODEL_CACHE": "4",  # models a process keeps loaded that no running job holds
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
    "GEOSEG_MAX_BANDS": "1e5",  # bands (NIfTI volumes) of one input
    "GEOSEG_MAX_TASKS": "1e6",  # tasks (output chunks or shards) of one job or output
    "GEOSEG_MAX_WINDOW_BYTES": str(2 << 30),  # input bytes one task reads
    "GEOSEG_MAX_WINDOW_CHUNKS": "1e5",  # stored input chunks one task's window spans
    "GEOSEG_MAX_CHUNK_BYTES": str(1 << 30),  # decoded bytes of one stored input chunk
    "GEOSEG_MAX_METADATA_BYTES": str(64 << 20),  # bytes of one Zarr metadata document
    "GEOSEG_MAX_MODEL_PARAMETERS": "1e9",  # values in a model file's network
    "GEOSEG_MAX_MODEL_BYTES": str(8 << 30),  # memory the network's weights take
    "GEOSEG_MAX_MODEL_TENSORS": "1e5",  # tensors a model file's header lists
    "GEOSEG_MAX_FIT_CACHE_BYTES": str(2 << 30),  # raster bytes a fit keeps in memory for its passes
    "GEOSEG_MAX_MULTIOTSU_BINS": "8192",  # histogram bins of a multi-Otsu search (table: bins**2)
    "GEOSEG_MAX_MULTIOTSU_SEARCH": "1e10",  # threshold combinations a multi-Otsu search tries
    "GEOSEG_MAX_KERNEL": "1025",  # side in pixels of a method's kernel, footprint or halo
    "GEOSEG_MAX_SMOOTHING": "1e8",  # histogram bins x smoothing passes of a modes/minimum fit
    "GEOSEG_MAX_OBJECTS": "1e6",  # objects an instance stage tables and outlines in one process
    # where outputs may be written (geoseg.io.allow): schemes, and buckets (empty: any)
    "GEOSEG_OUTPUT_SCHEMES": "file,local,memory,s3,s3a,gs,gcs,az,abfs,abfss,adl,hdfs",
    "GEOSEG_OUTPUT_BUCKETS": "",
    "GEOSEG_LOG_FORMAT": "text",  # text or json (geoseg.logs)
    "GEOSEG_RUNS_DIR": "",  # run records; empty: $XDG_DATA_HOME/geoseg/runs
}
GPU_ID = re.compile(r"^\d+$|^(GPU|MIG)-[\w/-]+$")  # what CUDA_VISIBLE_DEVICES accepts


def get(name: str) -> str:
    """The value of setting ``name`` (e.g. ``"GEOSEG_DEVICE"``): environment first, then default."""
    return os.environ.get(name, DEFAULTS[name])


def number(name: str, what: str, *, least: float = 0, above: bool = False,
           whole: bool = False, most: float = math.inf) -> float:
    """Setting ``name`` as a finite number ``>= least`` (``> least`` with ``above``) and
    ``<= most``, a whole one with ``whole`` (digits or exponent form: ``8e6``); ``what`` says
    what it counts, for the message that names the variable when it holds anything else."""
    text = get(name)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    fits = (value > least if above else value >= least) and value <= most
    if not (math.isfinite(value) and fits and (not whole or value == int(value))):
        kind = "a whole number" if whole else "a number"
        upto = f" and <= {most:g}" if math.isfinite(most) else ""
        raise SettingError(f"{name}: received {text!r}; expected {kind} {'>' if above else '>='} "
                           f"{least:g}{upto} ({what}), e.g. {DEFAULTS[name]} (the default).")
    return value


def whole(name: str, what: str, *, least: int = 0, most: float = math.inf) -> int:
    """Setting ``name`` as a whole number ``>= least`` and ``<= most`` (see :func:`number`)."""
    return int(number(name, what, least=least, whole=True, most=most))


MAX_THREADS = 1024  # threads a setting may ask of one process: more fail to start, or thrash


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")  # as a training spec's device field takes them


def device() -> str:
    """``GEOSEG_DEVICE``: ``cpu``, ``cuda`` or ``cuda:N`` as set (a CUDA device that torch finds
    in this process), ``auto`` resolved to ``cuda`` when torch finds a GPU, else ``cpu``."""
    wanted = device_setting()
    if wanted != "auto":
        missing = absent_device(wanted)
        if missing:
            raise SettingError(f"GEOSEG_DEVICE={wanted}: {missing}")
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_setting() -> str:
    """``GEOSEG_DEVICE`` as written (``auto``, ``cpu``, ``cuda``, ``cuda:N``), checked for its form
    only: whether a GPU is there is for the process that runs the model to say."""
    wanted = get("GEOSEG_DEVICE").strip().lower()
    if not DEVICE.fullmatch(wanted):
        raise SettingError(f"GEOSEG_DEVICE: received {get('GEOSEG_DEVICE')!r}; expected auto (CUDA "
                           "when present), cpu, cuda or cuda:N (N: a GPU index, e.g. cuda:0).")
    return wanted


def absent_device(wanted: str) -> str | None:
    """Why this process cannot run on ``wanted`` (``cpu``, ``cuda`` or ``cuda:N``): a CUDA device
    torch does not find here, which torch would report later, deep in a task, as an
    AssertionError; ``None`` when it can."""
    if not wanted.startswith("cuda"):
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(wanted.partition(":")[2] or 0) < count:
        return None
    if count:  # a Dask worker pinned to one GPU (CUDA_VISIBLE_DEVICES) sees it as cuda:0
        seen = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        return (f"torch finds {count} CUDA device(s) in this process on {os.uname().nodename}, "
                f"{seen} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): "
                "a process given one GPU, as a GPU worker is, sees it as cuda:0. Use 'cuda' (the "
                "process's own GPU) or an index it has.")
    return (f"torch finds no CUDA device (or a torch built without CUDA) in this process on "
            f"{os.uname().nodename}; expected a GPU it can use. Run where one is, or use cpu (or "
            "auto: CUDA when present, else the CPU).")


def resolve_device(value: object, what: str = "device") -> str:
    """``value`` (``None``, ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``) as a
    device torch takes: ``None`` and ``auto`` resolve through :func:`device`. Anything else is a
    :class:`~geoseg.errors.ParameterError` naming ``what``."""
    if value is None:
        return device()
    text = value if isinstance(value, str) else _torch_device_name(value)
    if text is None or not DEVICE.fullmatch(text.strip().lower()):
        raise ParameterError(
            f"{what}: received {value!r}; expected 'auto' (CUDA when present), 'cpu', 'cuda' or "
            "'cuda:N' (N: a GPU index, e.g. 'cuda:0'), or None for GEOSEG_DEVICE.")
    text = text.strip().lower()
    if text == "auto":
        return device()
    missing = absent_device(text)
    if missing:
        raise ParameterError(f"{what}={text!r}: {missing}")
    return text


def _torch_device_name(value: object) -> str | None:
    """``str(value)`` for a ``torch.device``, else ``None`` (torch is imported only if loaded)."""
    torch = sys.modules.get("torch")
    return str(value) if torch is not None and isinstance(value, torch.device) else None


def torch_threads() -> int:
    """Threads torch may use per process; 0 leaves torch's own default."""
    return whole("GEOSEG_TORCH_THREADS", "torch threads per process, 0: torch's default",
                 most=MAX_THREADS)


def batch_size() -> int:
    """Tiles per network call (``GEOSEG_BATCH_SIZE``)."""
    return whole("GEOSEG_BATCH_SIZE", "tiles per network call", least=1)


def region_bytes() -> int:
    """Bytes a task's region buffers may take (class scores, ids): bounds how far a task's
    region grows past one output chunk."""
    return whole("GEOSEG_REGION_BYTES", "bytes of a task's region buffers", least=1)


def tile_size(ndim: int = 2) -> int:
    """Default tile core per axis: ``GEOSEG_TILE`` for images, ``GEOSEG_VOLUME_TILE`` for volumes."""
    return whole("GEOSEG_TILE" if ndim == 2 else "GEOSEG_VOLUME_TILE", "tile core per axis", least=1)


def read_cache_bytes() -> int:
    """Bytes of decoded input chunks each process keeps for neighbouring windows (0: none)."""
    return whole("GEOSEG_READ_CACHE_BYTES", "bytes of decoded input chunks kept, 0: none")


def model_cache() -> int:
    """Models each process keeps loaded beyond those its running jobs hold (the lazy
    :func:`geoseg.segment` loads them on first use): the least recently used goes first."""
    return whole("GEOSEG_MODEL_CACHE", "models kept loaded that no job holds", least=1)


def inprocess_pixels() -> float:
    """Pixels (voxels) up to which a local CPU job runs on threads in this process: starting
    worker processes and loading the model in each costs more than it saves on such a job."""
    return number("GEOSEG_INPROCESS_PIXELS", "pixels; 0: always start worker processes")


def worker_wait() -> float:
    """Seconds a job waits for its running scheduler to have a worker (``GEOSEG_WORKER_WAIT``)."""
    return number("GEOSEG_WORKER_WAIT", "seconds to wait for a worker on a running scheduler",
                  above=True)


def retries() -> int:
    """Retries of a storage request that failed with a transient error (``GEOSEG_RETRIES``)."""
    return whole("GEOSEG_RETRIES", "retries of a storage request", most=100)


def retry_delay() -> float:
    """Seconds before the first retry of a storage request (``GEOSEG_RETRY_DELAY``)."""
    return number("GEOSEG_RETRY_DELAY", "seconds before the first retry", most=600)


def connect_timeout() -> float:
    """Seconds to wait for a connection to a store (``GEOSEG_CONNECT_TIMEOUT``)."""
    return number("GEOSEG_CONNECT_TIMEOUT", "seconds to wait for a connection", above=True)


def read_timeout() -> float:
    """Seconds to wait for the next bytes of a store's answer (``GEOSEG_READ_TIMEOUT``)."""
    return number("GEOSEG_READ_TIMEOUT", "seconds to wait for the next bytes", above=True)


def gpu_ids() -> list[str]:
    """GPUs a local cluster gives one worker process each: ``GEOSEG_GPUS`` (comma-separated ids,
    or ``none``) when set, else the GPUs torch counts, named as ``CUDA_VISIBLE_DEVICES`` names
    them. ``GEOSEG_DEVICE=cpu`` means none, ``GEOSEG_DEVICE=cuda:N`` the N-th of those torch
    counts. Counting calls ``torch.cuda.device_count()`` only."""
    device = get("GEOSEG_DEVICE").strip().lower()
    if device == "cpu":
        return []
    wanted = get("GEOSEG_GPUS").strip().lower()
    if wanted == "none":
        return []
    if wanted != "auto":
        return parse_gpu_ids(get("GEOSEG_GPUS"))
    visible = _visible_gpus()
    index = device.partition("cuda:")[2]
    number = whole_number(index)
    return visible[number : number + 1] if number is not None else visible


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
    return whole("GEOSEG_GPU_THREADS", "threads per GPU worker", least=1, most=MAX_THREADS)


def check_settings() -> None:
    """Parse every setting of this module now, so that ``geoseg validate`` and a job's start
    name a bad ``GEOSEG_*`` value before anything runs, not a task or a worker minutes later.
    ``GEOSEG_DEVICE`` is checked as written: whether its GPU is there is for the workers that
    run the model to say (:func:`absent_device`), which on a remote cluster are other machines."""
    for read in (torch_threads, batch_size, region_bytes, tile_size, lambda: tile_size(3),
                 read_cache_bytes, model_cache, inprocess_pixels, worker_wait, gpu_threads,
                 retries, retry_delay, connect_timeout, read_timeout):
        read()
    device_setting()
    if get("GEOSEG_GPUS").strip().lower() not in ("auto", "none"):
        parse_gpu_ids(get("GEOSEG_GPUS"))


def log_format() -> str:
    """``GEOSEG_LOG_FORMAT`` as given; :func:`geoseg.logs.log_format` checks it."""
    return get("GEOSEG_LOG_FORMAT")


def runs_dir() -> str | None:
    """``GEOSEG_RUNS_DIR``, or None when unset or empty."""
    return get("GEOSEG_RUNS_DIR") or None
