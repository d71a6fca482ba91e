"""Lazy re-exports for package ``__init__`` files (PEP 562).

A package lists its public names once, as a table name -> defining submodule, and gets a
module-level ``__getattr__`` and ``__dir__`` that import the submodule on first access::

    _LAZY = {"segment": "geoseg.parallel.lazy"}
    __getattr__, __dir__ = lazy_exports(__name__, _LAZY)

so importing the package (or a light sibling module) never loads torch or dask by itself.
A subpackage or submodule not yet imported is imported on access too, so ``import geoseg``
then ``geoseg.io.open_source(...)`` works as it did when ``geoseg`` imported ``geoseg.io``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` resolving ``table``'s names lazily."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            return _submodule(package, name)
        value = getattr(importlib.import_module(table[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__


def _submodule(package: str, name: str) -> Any:
    """``package.name`` imported, if it is a module; else the usual AttributeError."""
    if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
        return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
