"""The classes a segmenter outputs: a name and a display colour each, the check that no name
is given twice (model files and training specs both name classes by it), and a class list
short enough for a message."""

from __future__ import annotations

import reprlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from geoseg.errors import ModelConfigError


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its name and a display colour (RGB, 0-255)."""

    name: str
    color: tuple[int, int, int] = (128, 128, 128)

    def __post_init__(self) -> None:
        """Refuse a name that is no string, or a colour that is not three integers in 0..255,
        here rather than when a model file is written or a swatch drawn."""
        if not isinstance(self.name, str):
            raise ModelConfigError(
                f"ClassInfo: name: received {type(self.name).__name__} {reprlib.repr(self.name)}; "
                "expected the class name, a string, e.g. ClassInfo('water').")
        object.__setattr__(self, "color", _color(self.color, self.name))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassInfo:
        name = str(data["name"])
        return cls(name, data.get("color", (128, 128, 128)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "color": list(self.color)}


def is_label_dtype(dtype: Any) -> bool:
    """Whether pixels of ``dtype`` are labels: integer class ids, or booleans read as 0 and 1."""
    import numpy as np

    dtype = np.dtype(dtype)
    return dtype == bool or np.issubdtype(dtype, np.integer)


def default_color(index: int) -> tuple[int, int, int]:
    """The colour of class ``index`` of an output that names none, the same in quicklooks,
    reports and exported colour maps: hues a golden angle apart, distinct for any class count."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.65, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def _color(value: Any, name: str) -> tuple[int, int, int]:
    """``value`` as an RGB triple, refused unless it is one: what a file says is drawn as is
    (swatches, colour maps), so a colour of another length or range would fail only there."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(map(_is_byte, value)):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise ModelConfigError(
        f"class {name!r}: received colour {reprlib.repr(value)}; expected three integers in "
        "0..255 (red, green, blue), e.g. [128, 128, 128]. Give the class such a colour.")


def _is_byte(value: Any) -> bool:
    """An integer (or a float with an integer value; NumPy's too) in 0..255; not a bool."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return float(value).is_integer() and 0 <= value <= 255


def repeated_names(names: Sequence[Hashable]) -> dict[Any, list[int]]:
    """Each name (or id) given more than once, in the order first given, with the (0-based)
    positions it is given at: one pass, however many classes (model files, specs, scored
    labels, ensembles, methods' class names, decodings' interior classes)."""
    positions: dict[Any, list[int]] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, []).append(i)
    return {name: at for name, at in positions.items() if len(at) > 1}


def describe_repeats(repeats: dict[str, list[int]], most: int = 5) -> str:
    """``'water' is given 2 times (classes 0 and 3)``, for at most ``most`` names."""
    said = [f"{reprlib.repr(name)} is given {len(at)} times (classes {_positions(at, most)})"
            for name, at in list(repeats.items())[:most]]
    more = len(repeats) - most
    return "; ".join(said) + (f"; and {more} more name(s) are given more than once" if more > 0 else "")


def _positions(at: list[int], most: int) -> str:
    if len(at) > most:
        return ", ".join(map(str, at[:most])) + ", ..."
    return f"{', '.join(map(str, at[:-1]))} and {at[-1]}"


def short_list(names: list[str], most: int = 8) -> str:
    """The first ``most`` of ``names``, comma-separated, and how many more there are: a message
    about an output of 256 classes should not list them all."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
