"""Parallel execution: the lazy segment graph (lazy.py), store-to-store jobs (executor.py),
region tasks, worker plugins and clusters."""

from geoseg.parallel.lazy import segment

__all__ = ["segment"]
