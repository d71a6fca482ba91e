"""See and score a result: raster-scale evaluation, quicklooks, HTML run reports, runs compared.

Above the jobs layer: imports of matplotlib happen only where a picture is drawn.
"""

from __future__ import annotations

from geoseg.report.eval import ClassMap, Labels, evaluate, instance_scores, open_labels

__all__ = ["ClassMap", "Labels", "evaluate", "instance_scores", "open_labels"]
