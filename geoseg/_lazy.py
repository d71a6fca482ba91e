"""Lazy re-exports for package ``__init__`` files (PEP 562).

A package lists its public names once, as a table name -> defining submodule, and gets a
module-level ``__getattr__`` and ``__dir__`` that import the submodule on first access::

    _LAZY = {"segment": "geoseg.parallel.segment"}
    __getattr__, __dir__ = lazy_exports(__name__, _LAZY)

so importing the package (or a light sibling module) never loads torch or dask by itself.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` resolving ``table``'s names lazily."""

    def __getattr__(name: str) -> Any:
        try:
            where = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(where), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__
