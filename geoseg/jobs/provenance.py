"""Provenance: how an output was made, stored with it. Never holds credentials."""

from __future__ import annotations

import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PACKAGES = ("geoseg", "dask", "distributed", "zarr", "xarray", "rasterio", "fsspec", "numpy", "torch",
            "safetensors", "pydantic")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment (where signed URLs keep their secrets)."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path, or a Windows drive letter
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_urls(spec: dict[str, Any]) -> dict[str, Any]:
    """Apply :func:`public_url` to every ``url``/``path`` entry of a (redacted) spec."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            out[key] = redact_urls(value)
        elif key in ("url", "path") and isinstance(value, str):
            out[key] = public_url(value)
        else:
            out[key] = value
    return out
