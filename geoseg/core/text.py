"""Text received from files and users: what an error message shows of a value (one line,
bounded), and whole numbers written in it."""

from __future__ import annotations

import operator
from typing import Any


def brief(value: Any, width: int = 80) -> str:
    """``repr(value)`` on one line of at most ``width`` characters: a network's or an array's
    repr runs over many lines, which a one-line message must not."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def clipped(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters at a word's end, ``...`` saying so."""
    if len(text) <= width:
        return text
    cut = text[: width - 4]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + " ..."


def whole_number(text: str) -> int | None:
    """The number ``text`` writes in ASCII digits (at most 18: no overflow, and none of the
    thousands of digits ``int()`` refuses), else ``None``. ``str.isdigit()`` alone takes "²"
    and other digits ``int()`` cannot read."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def as_whole(value: Any) -> int | None:
    """``value`` as an ``int`` where it is a whole number (an int, a numpy integer, anything
    ``operator.index`` takes), else ``None``: a bool is not one (``True`` read as 1 turns
    ``chunks=True`` into one-pixel chunks; numpy's bool has no ``__index__``), nor a float,
    even a whole one."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def json_kind(value: Any) -> str:
    """The JSON kind of ``value`` as a message names it: "a string", "an object", "null"..."""
    kinds = ((type(None), "null"), (bool, "true or false"), (str, "a string"), (dict, "an object"),
             (list, "an array"), ((int, float), "a number"))
    return next((said for kind, said in kinds if isinstance(value, kind)), type(value).__name__)


_SHOWN_AS_IS = {"\n", "\t"}


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """``text`` with its control characters (C0, DEL, C1: a terminal's escape sequences) written
    as ``\\xNN`` escapes, newlines and tabs kept unless ``one_line`` (a table's cell, where a
    newline would draw a row of its own): names read from a file (a model's, a band's) cannot
    recolour, move or retitle the terminal they are printed to, nor forge a table's rows."""
    kept = frozenset() if one_line else _SHOWN_AS_IS
    if text.isprintable() or all(c.isprintable() or c in kept for c in text):
        return text
    return "".join(c if c.isprintable() or c in kept or ord(c) > 0x9F
                   else f"\\x{ord(c):02x}" for c in text)
