"""Instances at raster scale: one id per object across every chunk, tables and polygons.

- :func:`label`: connected components of a chunked mask (per class), ids contiguous from 1;
- :func:`instances_from_classes`, :func:`distance_watershed`: touching objects split by a
  seeded watershed in chunk + halo windows;
- :func:`object_table`, :func:`instance_polygons`: per-instance measurements and polygons,
  computed chunk by chunk;
- :func:`panoptic_quality`, :func:`match_scores`: instance scores against a truth.

Names load on first use, so a job that asks for no instances needs neither ``cc3d`` nor
the polygon libraries (``geopandas``, ``shapely``) on its machines.
"""

from geoseg._lazy import lazy_exports

_LAZY = {
    "label": "geoseg.instances.components",
    "PanopticScore": "geoseg.instances.panoptic",
    "match_scores": "geoseg.instances.panoptic",
    "panoptic_quality": "geoseg.instances.panoptic",
    "instance_polygons": "geoseg.instances.polygons",
    "write_polygons": "geoseg.instances.polygons",
    "object_table": "geoseg.instances.table",
    "write_table": "geoseg.instances.table",
    "distance_watershed": "geoseg.instances.watershed",
    "instances_from_classes": "geoseg.instances.watershed",
}
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
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
