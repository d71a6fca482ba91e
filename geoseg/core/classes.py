"""The classes a segmenter outputs: a name and a display colour each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its name and a display colour (RGB, 0-255)."""

    name: str
    color: tuple[int, int, int] = (128, 128, 128)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassInfo:
        return cls(str(data["name"]), tuple(int(c) for c in data.get("color", (128, 128, 128))))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "color": list(self.color)}
