"""What every record geoseg writes carries: when, with which packages, as plain JSON."""

from __future__ import annotations

import math
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

PACKAGES = ("geoseg", "dask", "distributed", "zarr", "xarray", "rasterio", "fsspec", "numpy",
            "torch", "safetensors", "pydantic")


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Python, the platform and the version of each package a result depends on."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def plain(value: Any) -> Any:
    """``json.dumps(..., default=plain)``: numpy scalars and arrays as plain numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a record")


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN and infinite float, however deep in dicts, lists and tuples, as
    ``None``: strict JSON has neither (a never-improved best score of -inf is stored as null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value
