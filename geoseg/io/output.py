"""The output store: a Zarr v3 group of class ids (and probabilities), georeferenced.

Layout (readable by ``xarray.open_zarr`` and rioxarray)::

    OUT.zarr/
      classes        (y, x) uint8/uint16, fill value = nodata class
      probabilities  (class, y, x) float16, NaN where the input had no data (optional)
      spatial_ref    scalar; attrs crs_wkt, GeoTransform
      x, y           pixel-centre coordinates (north-up inputs)
      attrs["geoseg"]  classes, colours, nodata, model, provenance

Tasks write whole chunks through :class:`OutputTarget`, so no two tasks touch
the same chunk and no lock is needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import zarr

from geoseg.errors import OutputExistsError
from geoseg.io.georef import GeoRef


@dataclass(frozen=True)
class OutputTarget:
    """Where tasks write; small and picklable. Storage options are never printed."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def open_group(self, mode: str = "r+") -> zarr.Group:
        kwargs: dict[str, Any] = {"storage_options": self.storage_options} if self.storage_options else {}
        return zarr.open_group(self.url, mode=mode, **kwargs)

    def finalize(self, attrs: dict[str, Any]) -> None:
        """Merge ``attrs`` into the group's ``geoseg`` attributes and consolidate metadata,
        so ``xarray.open_zarr`` opens the output in one read."""
        group = self.open_group()
        group.attrs["geoseg"] = {**group.attrs["geoseg"], **attrs}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(group.store)

    def write(self, name: str, region: tuple[slice, ...], data: np.ndarray) -> None:
        """Write ``data`` at ``region`` (spatial slices) of array ``name``."""
        array = self.open_group()[name]
        lead = (slice(None),) * (array.ndim - len(region))
        array[lead + region] = data


def output_exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return bool(fs.exists(path.rstrip("/")))


def remove_output(url: str, storage_options: dict[str, Any] | None = None) -> None:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if fs.exists(path.rstrip("/")):
        fs.rm(path.rstrip("/"), recursive=True)


def create_output(
    url: str,
    *,
    shape: tuple[int, int],
    chunks: tuple[int, int],
    georef: GeoRef,
    class_names: list[str],
    class_dtype: str,
    nodata_class: int,
    probabilities: bool = False,
    attrs: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> OutputTarget:
    """Create the output group with empty arrays; refuse an existing one unless ``overwrite``."""
    if output_exists(url, storage_options):
        if not overwrite:
            raise OutputExistsError(
                f"Output {url} already exists; nothing was written. Choose another output URL, "
                "or pass --overwrite (overwrite: true) to replace it."
            )
        remove_output(url, storage_options)
    target = OutputTarget(url, dict(storage_options or {}))
    group = target.open_group(mode="w-")
    group.attrs["geoseg"] = {"class_names": class_names, "nodata_class": nodata_class, **(attrs or {})}
    _create_arrays(group, shape, chunks, class_dtype, nodata_class, len(class_names), probabilities)
    write_georef(group, georef, shape)
    return target


def _create_arrays(group: zarr.Group, shape: tuple[int, int], chunks: tuple[int, int], class_dtype: str,
                   nodata_class: int, n_classes: int, probabilities: bool) -> None:
    grid = {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"}
    group.create_array("classes", shape=shape, chunks=chunks, dtype=class_dtype, fill_value=nodata_class,
                       dimension_names=["y", "x"], attributes={**grid, "nodata": nodata_class})
    if probabilities:
        group.create_array("probabilities", shape=(n_classes, *shape), chunks=(n_classes, *chunks),
                           dtype="float16", fill_value=np.nan, dimension_names=["class", "y", "x"],
                           attributes=grid)


def write_georef(group: zarr.Group, georef: GeoRef, shape: tuple[int, int]) -> None:
    """Add ``spatial_ref`` and ``x``/``y`` coordinate arrays for an image of ``shape``."""
    coords = georef.coords(*shape)
    if "spatial_ref" in coords:
        ref = group.create_array("spatial_ref", shape=(), dtype="int64", dimension_names=[],
                                 attributes=georef.spatial_ref_attrs())
        ref[()] = 0
    for name in ("y", "x"):
        if name in coords:
            values = np.asarray(coords[name][1])
            arr = group.create_array(name, shape=values.shape, dtype="float64", dimension_names=[name],
                                     chunks=values.shape)
            arr[:] = values
