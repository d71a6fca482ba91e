"""Architectures by name, so a model file can say which network to build.

Other packages add architectures through the ``geoseg.models`` entry-point group:
each entry point names a module (imported, so its ``@register_architecture``
decorators run; the decorator is importable from here or from
:mod:`geoseg.models.registered`) or a class (registered under the entry point's name).
"""

from __future__ import annotations

import threading
import typing
from importlib import metadata
from typing import Any

from torch import nn

from geoseg.errors import ModelFileError
from geoseg.models.registered import ARCHITECTURES as _ARCHITECTURES
from geoseg.models.registered import register_architecture

ENTRY_POINT_GROUP = "geoseg.models"
_plugins_loaded = False  # set once every architecture is registered, never before
_loading = False  # this thread (holding the lock) is loading: a module it imports asked again
_load_lock = threading.RLock()  # a thread asking while another loads waits for the whole registry


def load_plugins() -> None:
    """Import the built-in architecture modules and every ``geoseg.models`` entry point, once;
    a broken plugin names itself. Thread-safe: no thread sees the registry half loaded."""
    global _plugins_loaded, _loading
    if _plugins_loaded:
        return
    with _load_lock:
        if _plugins_loaded or _loading:  # loaded meanwhile, or asked again while loading
            return
        _loading = True
        try:
            _load_architectures()
            _plugins_loaded = True
        finally:
            _loading = False


def _load_architectures() -> None:
    # importing the built-in architecture modules registers them (in geoseg.models.registered)
    from geoseg.models import deeplab, fcn, segnet, unet, unet3d  # noqa: F401
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:  # a third-party import error must say whose it is
            raise ModelFileError(f"geoseg.models plugin {entry.name!r} ({entry.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if isinstance(loaded, type) and issubclass(loaded, nn.Module):
            register_architecture(entry.name)(loaded)


def architectures() -> list[str]:
    """Names of every registered architecture, plugins included."""
    load_plugins()
    return sorted(_ARCHITECTURES)


def architecture_class(name: str) -> type[nn.Module]:
    """The class registered as ``name`` (plugins included)."""
    load_plugins()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise ModelFileError(
            f"Unknown architecture {name!r}; registered architectures: {', '.join(architectures())}."
        ) from None


def build_network(name: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate architecture ``name`` with keyword arguments ``config``."""
    cls = architecture_class(name)
    _check_numbers(name, cls, config)
    try:
        return cls(**config)
    except TypeError as exc:
        raise ModelFileError(f"Architecture {name!r} does not accept config {config}: {exc}") from None


def _check_numbers(name: str, cls: type, config: dict[str, Any]) -> None:
    """Refuse a config value of another type than a whole number where the architecture's
    ``__init__`` annotates ``int`` (``depth: "3"`` in a hand-edited file), which would fail
    deep in the constructor as a comparison of a string with an int."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - a plugin's annotations that do not resolve: not checked
        return
    for key, value in config.items():
        if hints.get(key) is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ModelFileError(f"Architecture {name!r} does not accept config {config}: "
                                 f"{key}={value!r} ({type(value).__name__}); expected a whole "
                                 "number.")
