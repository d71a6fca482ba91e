"""The table of architectures by name and the decorator that fills it.

A leaf of its own: each architecture module registers its classes here, and
:mod:`geoseg.models.registry` imports those modules to fill the table, so
neither imports the other round a loop.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from geoseg.errors import ModelConfigError

ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register_architecture(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``cls`` buildable as ``architecture: name``.

    The class must accept ``in_channels`` and ``num_classes`` keyword arguments
    and expose ``stride``, ``receptive_radius`` and ``spatial_dims``.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
            raise ModelConfigError(f"architecture {name!r} is already registered to {ARCHITECTURES[name]}")
        ARCHITECTURES[name] = cls
        return cls

    return decorator
