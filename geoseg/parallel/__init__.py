"""Parallel execution: the lazy segment graph (lazy.py), store-to-store jobs (executor.py),
region tasks, worker plugins and clusters."""

from geoseg._lazy import lazy_exports

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "segment": "geoseg.parallel.lazy",
}

__all__ = [
    "segment",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
