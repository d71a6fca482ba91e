"""Georeferencing carried from input to output, in the conventions xarray users expect.

Following rioxarray/CF: a scalar ``spatial_ref`` coordinate whose attributes hold
``crs_wkt`` and ``GeoTransform`` (GDAL order), ``x``/``y`` pixel-centre
coordinates for north-up grids, and the nodata value in ``attrs["nodata"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS


@dataclass(frozen=True)
class GeoRef:
    """CRS (as WKT), affine transform (rasterio order a, b, c, d, e, f) and nodata."""

    crs_wkt: str | None = None
    transform: tuple[float, ...] | None = None
    nodata: float | None = None

    @classmethod
    def from_crs(cls, crs: Any, transform: Any, nodata: float | None = None) -> GeoRef:
        wkt = CRS.from_user_input(crs).to_wkt() if crs else None
        affine = tuple(float(v) for v in tuple(transform)[:6]) if transform is not None else None
        return cls(wkt, affine, None if nodata is None else float(nodata))

    @property
    def affine(self) -> Affine | None:
        return Affine(*self.transform) if self.transform else None

    def spatial_ref_attrs(self) -> dict[str, Any]:
        """Attributes of the ``spatial_ref`` variable (empty when there is no CRS)."""
        attrs: dict[str, Any] = {}
        if self.crs_wkt:
            attrs.update(crs_wkt=self.crs_wkt, spatial_ref=self.crs_wkt)
        if self.transform:
            a, b, c, d, e, f = self.transform
            attrs["GeoTransform"] = " ".join(repr(v) for v in (c, a, b, f, d, e))
        return attrs

    @classmethod
    def from_spatial_ref_attrs(cls, attrs: dict[str, Any], nodata: float | None = None) -> GeoRef:
        wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref")
        transform = None
        if "GeoTransform" in attrs:
            c, a, b, f, d, e = (float(v) for v in str(attrs["GeoTransform"]).split())
            transform = (a, b, c, d, e, f)
        return cls(wkt, transform, nodata)

    def coords(self, height: int, width: int) -> dict[str, Any]:
        """``x``/``y`` pixel-centre coordinates (north-up grids only) and ``spatial_ref``."""
        coords: dict[str, Any] = {}
        if self.crs_wkt or self.transform:
            coords["spatial_ref"] = ((), np.int64(0), self.spatial_ref_attrs())
        t = self.affine
        if t is not None and t.b == 0 and t.d == 0:
            coords["x"] = ("x", t.c + t.a * (np.arange(width) + 0.5))
            coords["y"] = ("y", t.f + t.e * (np.arange(height) + 0.5))
        return coords

    def attrs(self) -> dict[str, Any]:
        """Attributes for a DataArray: CRS, transform and nodata in plain JSON types."""
        out: dict[str, Any] = {}
        if self.crs_wkt:
            out["crs"] = self.crs_wkt
        if self.transform:
            out["transform"] = list(self.transform)
        if self.nodata is not None:
            out["nodata"] = self.nodata
        return out
