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


def redact_urls(spec: Any) -> Any:
    """Apply :func:`public_url` to every ``url``/``path`` entry of a (redacted) spec, at any depth."""
    if isinstance(spec, list):
        return [redact_urls(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    return {key: public_url(value) if key in ("url", "path") and isinstance(value, str) else redact_urls(value)
            for key, value in spec.items()}
