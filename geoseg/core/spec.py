"""The base of every YAML spec geoseg reads: jobs, batches, training runs and sweeps.

A spec is a tree of frozen pydantic :class:`Section` s that refuse unknown keys. Its root is
a :class:`Document`, which :meth:`Document.from_dict` validates at once: every problem is
reported together, one line each, naming its key, what was received and what is expected
(storage options' values are never shown). Checks that span sections go in
:meth:`Document.check`. Every spec file is read by :func:`load_yaml`, so that all of them are
read the same careful way.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from geoseg import logs
from geoseg.errors import GeosegError, JobSpecError


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Document(Section):
    """The root of a spec file. Subclasses name what they are (``document``), their sections
    (``sections``, for the message when the file holds no mapping) and their ``error``."""

    document: ClassVar[str] = "spec"
    sections: ClassVar[str] = "sections"
    error: ClassVar[type[GeosegError]] = JobSpecError

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Self:
        """Validate plain data (a parsed YAML file); raises ``cls.error`` listing every problem."""
        source = source or cls.document
        if not isinstance(data, dict):
            raise cls.error(f"{source}: expected a mapping of {cls.sections}, received "
                            f"{type(data).__name__}.")
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise cls.error(format_errors(exc, source, cls)) from None
        spec.check(source)
        return spec

    def check(self, source: str) -> None:
        """Checks across sections, once each is valid; raise ``self.error`` naming ``source``."""


def format_errors(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line per problem: ``key: what was received; what is expected``."""
    lines = [f"{source}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {key}: {_describe(err, root)}")
    return "\n".join(lines)


def _describe(err: Any, root: type[BaseModel]) -> str:
    received = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(root, err["loc"][:-1]))
        return f"unknown key; allowed keys here: {allowed}."
    if err["type"] == "missing":
        return "required but missing."
    shown = "<hidden>" if "storage_options" in map(str, err["loc"]) else _short(received)
    expected = err["msg"].removeprefix("Value error, ").replace("Input should be ", "")
    return f"received {shown} ({type(received).__name__}); expected {expected}."


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``list[X]``, ``X | None``; None if there is none."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None




def load_yaml(path: str | Path, what: str, error: type[GeosegError]) -> Any:
    """The plain data of the spec file at ``path``, a ``what`` ("job spec", "batch spec", ...).

    Every spec geoseg reads comes through here, so that each is read as carefully as the
    others: ``yaml.safe_load`` (no tags, no code); its secrets (storage options, credentials in
    URLs) remembered at once, so that no message shows them (:func:`geoseg.logs.scrub`); every
    problem an ``error`` naming the file, a YAML error saying where but quoting no line (secrets
    live there)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"No {what} at {path}; give the path of a YAML file (see jobs/ for examples).")
    data = _parse_yaml(path, _read_text(path, what, error), error)
    logs.remember_secrets(logs.secrets_in(data))
    return data


def _read_text(path: Path, what: str, error: type[GeosegError]) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise error(
            f"{path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line {line} cannot be "
            f"decoded. Save the {what} as UTF-8 (most editors: File > Save with encoding).") from None
    except OSError as exc:
        raise error(f"Cannot read the {what} {path}: {exc.strerror or exc}. Check that the "
                    "file is readable (permissions) and try again.") from None


def _parse_yaml(path: Path, text: str, error: type[GeosegError]) -> Any:
    """The YAML document in ``text``; an error says where, but quotes no line (PyYAML's own
    message would show the offending lines, secrets included)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        context = f" ({exc.context}{_mark(exc.context_mark, ' at ')})" if exc.context else ""
        raise error(f"{path} is not valid YAML: {_mark(exc.problem_mark, '', ': ')}"
                    f"{exc.problem}{context}. Fix the spec (see jobs/ for examples).") from None
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML ({type(exc).__name__}).") from None


def _mark(mark: Any, before: str, after: str = "") -> str:
    return f"{before}line {mark.line + 1}, column {mark.column + 1}{after}" if mark is not None else ""
