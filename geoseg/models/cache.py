"""Per-process model cache: each worker process loads a model once, keyed by weights hash.

Tasks carry a :class:`~geoseg.models.model.ModelRef` (a URL and a hash), never
weights. The first task on a process to need a model loads it; the others, on
any thread, wait for that load and reuse it.
"""

from __future__ import annotations

import threading
from typing import Any

from geoseg.models.model import ModelRef, SegmentationModel

_lock = threading.Lock()
_models: dict[str, SegmentationModel] = {}
_loads: dict[str, int] = {}


def resolve(ref: Any) -> Any:
    """The segmenter behind a task's reference: loaded models come from the cache.

    Anything that is not a :class:`ModelRef` is taken to be a small segmenter
    that travels as itself (a classical method, a test stand-in).
    """
    if not isinstance(ref, ModelRef):
        return ref
    with _lock:
        model = _models.get(ref.sha256)
        if model is None:
            from geoseg.models.modelfile import load_model

            model = load_model(ref.url, storage_options=ref.storage_options, expected_sha256=ref.sha256)
            _models[ref.sha256] = model
            _loads[ref.sha256] = _loads.get(ref.sha256, 0) + 1
        return model


def load_counts() -> dict[str, int]:
    """How many times this process loaded each model (by weights hash)."""
    with _lock:
        return dict(_loads)


def clear() -> None:
    """Forget every cached model (frees memory; the next task reloads)."""
    with _lock:
        _models.clear()
        _loads.clear()
