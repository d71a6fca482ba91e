"""JSON from files geoseg did not write (catalogs, run records, model headers, metadata),
its nesting measured before it is decoded.

Python's decoder recurses once per level of nesting. A hostile file nested a few thousand
levels deep exhausts the interpreter's stack: the decoder raises ``RecursionError`` at some
depth, and anything the garbage collector runs in that state (a finaliser, a weakref callback)
fails too and prints "Exception ignored in ..." lines on stderr. :func:`loads` refuses such a
document first, with an error that says so, and never lets the decoder near the limit.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from geoseg.errors import NestingError

MAX_LEVELS = 256  # of arrays and objects; STAC catalogs, run records and model headers use < 10

# A string, escapes included, up to its closing quote or the end of a truncated document.
# Possessive repeats never backtrack: one pass, whatever the quotes and backslashes.
_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1
_BLOCK = 1 << 20  # brackets summed at a time: memory stays a few MB whatever the document


def levels(data: bytes | str) -> int:
    """How deeply ``data`` nests arrays and objects (0 for a scalar), brackets inside strings not
    counted; a malformed document is measured as far as its brackets go."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    steps, level, deepest = _STEP[np.frombuffer(brackets, np.uint8)], 0, 0
    for start in range(0, len(steps), _BLOCK):
        running = np.cumsum(steps[start : start + _BLOCK], dtype=np.int64) + level
        deepest, level = max(deepest, int(running.max())), int(running[-1])
    return deepest


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``; raises :class:`~geoseg.errors.NestingError` (a ``ValueError``)
    for a document nested deeper than :data:`MAX_LEVELS`, before decoding it."""
    found = levels(data)
    if found > MAX_LEVELS:
        raise NestingError(f"nests arrays or objects {found} levels deep; expected at most "
                           f"{MAX_LEVELS}")
    return json.loads(data)
