"""Per-process model cache: each worker process loads a model once per device (``GEOSEG_DEVICE``
when it loads), keyed by weights hash. Models a running job holds stay; of the others (loaded
by the lazy :func:`geoseg.segment`), the ``GEOSEG_MODEL_CACHE`` most recently used stay.

Tasks carry a :class:`~geoseg.models.model.ModelRef` (a URL and a hash), never
weights. The first task on a process to need a model loads it; the others, on
any thread, wait for that load and reuse it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

from geoseg import config
from geoseg.errors import ModelFileError
from geoseg.models.header import IN_MEMORY, ModelRef
from geoseg.models.model import BUILT_IN_MEMORY, LOADED, SegmentationModel
from geoseg.models.modelfile import load_model

_lock = threading.Lock()
# by URL, weights hash and device, least recently used first
_models: OrderedDict[tuple[str, str, str], SegmentationModel] = OrderedDict()
_loads: dict[str, int] = {}
_holds: dict[str, int] = {}  # worker plugins (jobs) holding each model


def resolve(ref: Any) -> Any:
    """The segmenter behind a task's reference: loaded models come from the cache.

    A reference with its own ``resolve()`` (a wrapper's) resolves itself; anything
    else that is not a :class:`ModelRef` is a small segmenter that travels as
    itself (a classical method, a test stand-in).
    """
    if not isinstance(ref, ModelRef):
        return ref.resolve() if callable(getattr(ref, "resolve", None)) else ref
    if ref.url.startswith(IN_MEMORY):
        return _built_in_memory(ref)
    # a file's: by where it is and its weights, and by device: the one the model was placed on,
    # else GEOSEG_DEVICE (which may change); one this process already holds is used as it is
    device = config.resolve_device(ref.device, "the model's device")
    key = (ref.url, ref.sha256, str(torch.device(device)))
    for held in (ref.held, LOADED.get(key)):
        if held is not None and str(held.device) == key[2] and held.holds_weights(ref.sha256):
            return held
    with _lock:
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
            return model
        model = load_model(ref.url, storage_options=ref.storage_options, device=device,
                           expected_sha256=ref.sha256)
        _models[key] = model
        _loads[ref.sha256] = _loads.get(ref.sha256, 0) + 1
        unheld = [k for k in _models if k[1] not in _holds]
        evicted = [_models.pop(k) for k in unheld[:max(0, len(unheld) - config.model_cache())]]
    _free(evicted)
    return model


def _built_in_memory(ref: ModelRef) -> SegmentationModel:
    """The model an in-memory reference names, while its weights are still those it names."""
    name = ref.url.removeprefix(IN_MEMORY).rpartition("#")[0]
    model = ref.held if ref.held is not None else BUILT_IN_MEMORY.get(ref.url)
    if model is None:
        raise ModelFileError(
            f"model {name!r} was built in memory (or its weights changed since it was read) in "
            "another process, so this worker cannot load it. Save it with "
            "geoseg.save_model(model, path) and load it with geoseg.load_model(path) before "
            "computing on a cluster.")
    if not model.holds_weights(ref.sha256):
        raise ModelFileError(
            f"model {name!r} was built in memory and its weights changed after geoseg.segment() "
            f"made this result (weights sha256 {ref.sha256[:12]}...): those weights are kept "
            "nowhere. Call geoseg.segment() again with the model as it is now, or save each "
            "version with geoseg.save_model(model, path) and segment with the file.")
    return model


def hold(ref: ModelRef) -> Any:
    """Load (or reuse) the model behind ``ref`` and count one more holder of it: a job's
    worker plugin holds its models while the job runs (:func:`release` lets go)."""
    with _lock:  # held before it is loaded: another thread's load never drops it meanwhile
        _holds[ref.sha256] = _holds.get(ref.sha256, 0) + 1
    try:
        return resolve(ref)
    except BaseException:
        with _lock:
            left = _holds.get(ref.sha256, 0) - 1
            if left > 0:
                _holds[ref.sha256] = left
            else:
                _holds.pop(ref.sha256, None)
        raise


def release(sha256: str) -> None:
    """One holder less of the model with weights ``sha256``; the last one frees it (and the GPU
    memory torch kept for it), so jobs sharing a cluster and a model never free it under each
    other."""
    with _lock:
        left = _holds.get(sha256, 0) - 1
        if left > 0:
            _holds[sha256] = left
            return
        _holds.pop(sha256, None)
        freed = [_models.pop(k) for k in [k for k in _models if k[1] == sha256]]
    _free(freed)


def _free(models: list[SegmentationModel]) -> None:
    """Let go of ``models`` this cache dropped, the GPU memory torch kept for them included."""
    if any(model.device.type == "cuda" for model in models):
        models.clear()  # the last references: the weights' blocks go back to torch's allocator...
        torch.cuda.empty_cache()  # ...which hands them back to the GPU, for other processes


def holds() -> dict[str, int]:
    """How many worker plugins (jobs) hold each model now (by weights hash)."""
    with _lock:
        return dict(_holds)


def loaded() -> set[str]:
    """The weights hashes of the models this process holds now."""
    with _lock:
        return {sha256 for _, sha256, _ in _models}


def load_counts() -> dict[str, int]:
    """How many times this process loaded each model (by weights hash)."""
    with _lock:
        return dict(_loads)


def clear() -> None:
    """Forget every cached model (frees memory; the next task reloads)."""
    with _lock:
        _models.clear()
        _loads.clear()
        BUILT_IN_MEMORY.clear()
