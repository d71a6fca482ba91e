"""Instances at raster scale: one id per object across every chunk, tables and polygons."""
