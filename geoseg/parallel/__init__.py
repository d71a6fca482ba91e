"""Parallel execution: region tasks, the lazy segment graph, clusters."""

from geoseg.parallel.segment import segment

__all__ = ["segment"]
