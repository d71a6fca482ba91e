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

_ESCAPE = re.compile(rb"\\[\s\S]?")  # an escape (or a trailing backslash): never a string's end
_NOT_MARKS = bytes(set(range(256)) - set(b'"[]{}'))
_QUOTE = ord('"')
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1
_BLOCK = 1 << 20  # marks summed at a time: a few MB of arrays whatever the document's size


def levels(data: bytes | str) -> int:
    """How deeply ``data`` nests arrays and objects (0 for a scalar), brackets inside strings not
    counted; a malformed document is measured as far as its brackets go. Bytes are read in the
    encodings ``json.loads`` accepts (UTF-8, -16 or -32)."""
    text = _utf8(data)
    if b"\\" in text:  # an escaped quote does not end its string: drop escapes first
        text = _ESCAPE.sub(b"", text)
    marks = np.frombuffer(text.translate(None, _NOT_MARKS), np.uint8)  # quotes and brackets
    quotes = level = deepest = 0
    for start in range(0, len(marks), _BLOCK):
        block = marks[start : start + _BLOCK]
        seen = np.cumsum(block == _QUOTE, dtype=np.int64) + quotes  # a bracket after an odd
        steps = np.where(seen % 2 == 1, 0, _STEP[block])  # number of quotes is in a string
        running = np.cumsum(steps, dtype=np.int64) + level
        deepest, level, quotes = max(deepest, int(running.max())), int(running[-1]), int(seen[-1])
    return deepest


def _utf8(data: bytes | str) -> bytes:
    """``data`` as UTF-8 bytes, decoded as ``json.loads`` would decode it; b"" for bytes that do
    not decode (``json.loads`` refuses them)."""
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(data).__name__}")
    encoding = json.detect_encoding(data)
    if encoding.startswith("utf-8"):
        return bytes(data)
    try:
        return data.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return b""


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``; raises :class:`~geoseg.errors.NestingError` (a ``ValueError``)
    for a document nested deeper than :data:`MAX_LEVELS`, before decoding it."""
    found = levels(data)
    if found > MAX_LEVELS:
        raise NestingError(f"nests arrays or objects {found} levels deep; expected at most "
                           f"{MAX_LEVELS}")
    return json.loads(data)
