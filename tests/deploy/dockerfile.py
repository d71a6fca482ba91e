"""Read a Dockerfile's instructions (continuations joined, comments dropped) and resolve its
ARG defaults, enough to check what it installs and runs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

ARG_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs in order."""
    joined, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        word, _, rest = line.strip().partition(" ")
        pairs.append((word.upper(), rest.strip()))
    return pairs


def args(path: Path) -> dict[str, str]:
    """Every ``ARG NAME=default``."""
    found = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            found[name] = default
    return found


def words(text: str, path: Path) -> list[str]:
    """An exec-form (JSON) or shell-form argument list, ARG defaults substituted."""
    defaults = args(path)
    text = ARG_REFERENCE.sub(lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)), text)
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def entrypoint(path: Path) -> list[str]:
    """The image's ENTRYPOINT (the last one)."""
    (*_, last) = [rest for word, rest in instructions(path) if word == "ENTRYPOINT"]
    return words(last, path)
