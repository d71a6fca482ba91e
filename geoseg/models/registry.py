"""Architectures by name, so a model file can say which network to build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from geoseg.errors import ModelFileError

_ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register_architecture(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``cls`` buildable as ``architecture: name``.

    The class must accept ``in_channels`` and ``num_classes`` keyword arguments
    and expose ``stride``, ``receptive_radius`` and ``spatial_dims``.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not cls:
            raise ValueError(f"architecture {name!r} is already registered to {_ARCHITECTURES[name]}")
        _ARCHITECTURES[name] = cls
        return cls

    return decorator


def architectures() -> list[str]:
    """Names of every registered architecture."""
    return sorted(_ARCHITECTURES)


def build_network(name: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate architecture ``name`` with keyword arguments ``config``."""
    try:
        cls = _ARCHITECTURES[name]
    except KeyError:
        raise ModelFileError(
            f"Unknown architecture {name!r}; registered architectures: {', '.join(architectures())}."
        ) from None
    try:
        return cls(**config)
    except TypeError as exc:
        raise ModelFileError(f"Architecture {name!r} does not accept config {config}: {exc}") from None
