"""Instances at raster scale: one id per object across every chunk, tables and polygons.

- :func:`label`: connected components of a chunked mask (per class), ids contiguous from 1;
- :func:`instances_from_classes`, :func:`distance_watershed`: touching objects split by a
  seeded watershed in chunk + halo windows;
- :func:`object_table`, :func:`instance_polygons`: per-instance measurements and polygons,
  computed chunk by chunk;
- :func:`panoptic_quality`, :func:`match_scores`: instance scores against a truth.
"""

from geoseg.instances.components import label
from geoseg.instances.panoptic import PanopticScore, match_scores, panoptic_quality
from geoseg.instances.polygons import instance_polygons, write_polygons
from geoseg.instances.table import object_table, write_table
from geoseg.instances.watershed import distance_watershed, instances_from_classes

__all__ = [
    "PanopticScore",
    "distance_watershed",
    "instance_polygons",
    "instances_from_classes",
    "label",
    "match_scores",
    "object_table",
    "panoptic_quality",
    "write_polygons",
    "write_table",
]
