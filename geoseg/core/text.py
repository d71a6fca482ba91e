"""What an error message shows of a value it received: one line, bounded."""

from __future__ import annotations

from typing import Any


def brief(value: Any, width: int = 80) -> str:
    """``repr(value)`` on one line of at most ``width`` characters: a network's or an array's
    repr runs over many lines, which a one-line message must not."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."
