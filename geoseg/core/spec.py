"""The base of every YAML spec geoseg reads: jobs, batches, training runs and sweeps.

A spec is a tree of frozen pydantic :class:`Section` s that refuse unknown keys. Its root is
a :class:`Document`, which :meth:`Document.from_dict` validates at once: every problem is
reported together, one line each, naming its key, what was received and what is expected
(storage options' values are never shown). Checks that span sections go in
:meth:`Document.check`. Every spec file is read by :func:`load_yaml`, so that all of them are
read the same careful way.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from geoseg.core import redact
from geoseg.core.urls import credentials_refused, public_url
from geoseg.errors import GeosegError, JobSpecError


def _printable(name: str) -> str:
    """Refuse control characters in a name: it is printed in logs, tables and terminals, where
    escape codes would clear, recolour or retitle the screen, and newlines forge lines."""
    if not name.isprintable():
        raise ValueError("a name of printable characters (no control characters, escape codes "
                         "or line breaks)")
    return name


Name = Annotated[str, Field(min_length=1), AfterValidator(_printable)]  # a job's, a class's...


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_stray_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """``true`` where a number is expected is a slip, not 1: pydantic would take it as 1."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if not _mentions_numbers(annotation) or _takes_booleans(annotation):
            return value
        items = value if isinstance(value, list | tuple) else (value,)
        if any(isinstance(item, bool) for item in items):
            raise ValueError("numbers, not true or false")
        return value


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
    """One line per problem: ``key: what was received; what is expected``. A value that fits
    none of a field's alternatives (``int | tuple[int, ...]``) is one problem, its expectations
    joined by "or", not one line per alternative named by pydantic's type tags."""
    problems: dict[str, list[Any]] = {}
    models = _models_under(root)
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if not _type_tag(p, models)) or "(top level)"
        problems.setdefault(key, []).append(err)
    lines = [f"{source}: {len(problems)} problem(s):"]
    for key, errs in problems.items():
        said = [_describe(e, root, models) for e in errs]
        lines.append(f"  - {key}: {said[0] if len(said) == 1 else _alternatives(said)}")
    return "\n".join(lines)


def _type_tag(part: Any, models: dict[str, type[BaseModel]]) -> bool:
    """Whether a pydantic error location part names a union's alternative (``int``,
    ``tuple[int, ...]``, ``function-after[...]``, a section's class such as ``RangeSpec``),
    not a key or an index."""
    return isinstance(part, str) and (part in {"int", "float", "str", "bool", "none"}
                                      or part in models or "[" in part
                                      or part.startswith("function-"))


def _models_under(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every section class reachable from ``root``'s fields, by class name (pydantic names a
    union's model alternative so in error locations)."""
    found: dict[str, type[BaseModel]] = {}
    todo = [root]
    while todo:
        model = todo.pop()
        if model.__name__ not in found:
            found[model.__name__] = model
            todo.extend(m for f in model.model_fields.values() for m in _models_in(f.annotation))
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside ``annotation`` (``X``, ``list[X]``, ``dict[str, X | Y]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _alternatives(said: list[str]) -> str:
    """``received X (t); expected A.`` and ``... expected B.`` as one: ``expected A, or B.``
    (the value first received, as the first alternative saw it)."""
    received = said[0].split("; expected ", 1)[0]
    wanted = list(dict.fromkeys(s.split("; expected ", 1)[-1].rstrip(".") for s in said))
    return f"{received}; expected {', or '.join(wanted)}."


def _describe(err: Any, root: type[BaseModel], models: dict[str, type[BaseModel]]) -> str:
    received = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(root, err["loc"][:-1], models))
        return f"unknown key; allowed keys here: {allowed}." if allowed else "unknown key."
    if err["type"] == "missing":
        return "required but missing."
    shown = "<hidden>" if "storage_options" in map(str, err["loc"]) else _short(received)
    expected = err["msg"].removeprefix("Value error, ").replace("Input should be ", "")
    return f"received {shown} ({type(received).__name__}); expected {expected}."


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...],
                  models: dict[str, type[BaseModel]]) -> list[str]:
    """The keys of the section at ``loc``: from the last section class it names (a union's
    alternative), else from ``root``; none where ``loc`` leads to no section."""
    named = [i for i, part in enumerate(loc) if isinstance(part, str) and part in models]
    model: type[BaseModel] | None = models[loc[named[-1]]] if named else root
    for part in loc[named[-1] + 1:] if named else loc:
        if isinstance(part, int) or _type_tag(part, models):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []


def _mentions_numbers(annotation: Any) -> bool:
    if annotation is int or annotation is float:
        return True
    return any(_mentions_numbers(arg) for arg in typing.get_args(annotation))


def _takes_booleans(annotation: Any) -> bool:
    """Whether ``true``/``false`` is a meaning of the field (``bool``, ``Any``, a model, a mapping)."""
    if annotation is bool or annotation is Any or annotation is dict:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    origin = typing.get_origin(annotation)
    if origin is dict or origin is typing.Literal:
        return origin is dict or any(isinstance(a, bool) for a in typing.get_args(annotation))
    return any(_takes_booleans(arg) for arg in typing.get_args(annotation))


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
    URLs) remembered at once, so that no message shows them (:func:`geoseg.core.redact.scrub`); every
    problem an ``error`` naming the file, a YAML error saying where but quoting no line (secrets
    live there); a key given twice in one mapping refused; the document bounded in size once
    its aliases are expanded, and in depth (:data:`MAX_VALUES`, :data:`MAX_LEVELS`); a URL that
    cannot be parsed refused before a library parses it and quotes its user info."""
    path = Path(path)
    if not path.is_file():
        raise error(_not_a_file(path, what))
    data = _parse_yaml(path, _read_text(path, what, error), what, error)
    redact.remember_secrets(redact.secrets_in(data))
    _check_urls(data, str(path), error)
    return data


def _not_a_file(path: Path, what: str) -> str:
    """Why ``path``, which is no regular file, cannot be a ``what``."""
    if path.is_dir():
        found = f"{path} is a directory, not a {what}"
    elif path.exists():
        found = f"{path} is not a regular file (a pipe, socket or device?), so not a {what}"
    else:
        found = f"No {what} at {path}"
    return f"{found}; give the path of a YAML file (see jobs/ for examples)."


PATH_KEYS = frozenset({"url", "path", "runs_dir", "glob", "catalog", "url_template", "report",
                       "ca_file", "cert", "key"})  # a job's or batch's; the last three: cluster.tls files
PATH_LISTS = frozenset({"urls"})


def relative_to_spec(data: Any, folder: Path, keys: frozenset[str] = PATH_KEYS) -> Any:
    """``data`` with every relative local path under one of ``keys`` (``url``, ``path``,
    ``runs_dir``, ``glob``, ...) or in a list under :data:`PATH_LISTS` joined to ``folder``,
    the spec file's folder, as an absolute normalised path: a spec means the same files
    wherever it is run from. URLs with a scheme, ``builtin:`` models and absolute paths are
    kept; so is everything under ``storage_options``."""
    return _join(data, Path(folder), keys | PATH_LISTS, "")


def _join(data: Any, folder: Path, keys: frozenset[str], key: str) -> Any:
    if isinstance(data, dict):
        return {k: v if k == "storage_options" else _join(v, folder, keys, str(k))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_join(v, folder, keys, key if key in PATH_LISTS else "") for v in data]
    if isinstance(data, str) and key in keys and _relative_local(data):
        return os.path.abspath(folder / data)  # normalised: no '..' left to refuse
    return data


def _relative_local(text: str) -> bool:
    return bool(text) and "://" not in text and ":" not in text.split("/", 1)[0] \
        and not Path(text).expanduser().is_absolute() and not text.startswith("~")


def _check_urls(data: Any, source: str, error: type[GeosegError], key: str = "") -> None:
    """Refuse a URL with credentials where its store cannot take them (``s3://KEY:SECRET@...``,
    :func:`~geoseg.core.urls.credentials_in`), and one that cannot be parsed (a secret with ``/``
    in its user info, a port that is not a number), before any library parses it and quotes
    part of it."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k != "storage_options":
                _check_urls(v, source, error, f"{key}.{k}" if key else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _check_urls(v, source, error, f"{key}.{i}")
    elif isinstance(data, str) and "://" in data:
        refused = credentials_refused(data, key)
        if refused is not None:
            raise error(f"{source}: {refused}")
        try:
            urlsplit(data).port  # noqa: B018 - parsing is the check
        except ValueError:
            raise error(
                f"{source}: {key}: received a URL that cannot be parsed ({public_url(data)} "
                "with its user info hidden); expected scheme://bucket/path. Put credentials in "
                "storage_options (key, secret, token) rather than in the URL, or percent-encode "
                "'/' and ':' in them (%2F, %3A).") from None


BINARY_KINDS = {  # first bytes of files given as a spec by mistake -> what they are
    b"II*\x00": "a TIFF (GeoTIFF) raster", b"MM\x00*": "a TIFF (GeoTIFF) raster",
    b"II+\x00": "a BigTIFF raster", b"MM\x00+": "a BigTIFF raster",
    b"\x1f\x8b": "gzip-compressed data (a .nii.gz volume?)", b"\x89HDF": "an HDF5/NetCDF file",
    b"PK\x03\x04": "a zip archive", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image",
}


def _binary_kind(path: Path) -> str | None:
    """What ``path`` holds when its first bytes say it is a raster or archive, not text."""
    with path.open("rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in BINARY_KINDS.items() if head.startswith(magic)), None)


def _read_text(path: Path, what: str, error: type[GeosegError]) -> str:
    try:
        kind = _binary_kind(path)
        if kind is not None:
            raise error(
                f"{path} is {kind}, not a {what}: a {what} is a YAML text file (see jobs/ for "
                "examples). Name this file in the spec instead (input.url in a job spec).")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise error(
                f"{path}: received a {what} of {size:,} bytes; expected at most {MAX_BYTES:,} "
                f"(specs are a few kilobytes). Check that {path.name} is the spec you meant; list "
                "many inputs with a glob or a catalog rather than one by one.")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise error(
            f"{path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line {line} cannot be "
            f"decoded. Save the {what} as UTF-8 (most editors: File > Save with encoding).") from None
    except OSError as exc:
        raise error(f"Cannot read the {what} {path}: {exc.strerror or exc}. Check that the "
                    "file is readable (permissions) and try again.") from None


MAX_BYTES = 4 * 2**20  # of a spec file: its parsing time and memory stay bounded
MAX_VALUES = 100_000  # values (scalars, lists, mappings) of a spec with its aliases expanded
MAX_LEVELS = 100  # levels of nesting; real specs have a few hundred values and under ten levels


def _parse_yaml(path: Path, text: str, what: str, error: type[GeosegError]) -> Any:
    """The YAML document in ``text``; an error says where, but quotes no line (PyYAML's own
    message would show the offending lines, secrets included)."""
    try:
        return _bounded_load(path, text, what, error)
    except yaml.MarkedYAMLError as exc:
        context = f" ({exc.context}{_mark(exc.context_mark, ' at ')})" if exc.context else ""
        raise error(f"{path} is not valid YAML: {_mark(exc.problem_mark, '', ': ')}"
                    f"{exc.problem}{context}. Fix the spec (see jobs/ for examples).") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not take: said where
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        raise error(f"{path} is not valid YAML: line {line}, column {column}: character "
                    f"U+{code:04X} ({exc.reason}); YAML takes printable characters only, "
                    "tabs and line breaks. Remove it (pasted from a terminal?) and try "
                    "again.") from None
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML ({type(exc).__name__}).") from None
    except _TooDeep:
        raise error(_too_deep(path, f"over {MAX_LEVELS} levels", what)) from None


def _bounded_load(path: Path, text: str, what: str, error: type[GeosegError]) -> Any:
    """``yaml.safe_load(text)``, composed only up to :data:`MAX_VALUES` values, its aliases
    expanded only once the composed document is measured (:func:`_measure`): a few hundred
    bytes of aliases of aliases ("billion laughs") would otherwise expand into billions of
    values, which reading, validating and scrubbing the spec all walk."""
    loader = _SpecLoader(text, path, what, error)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        values, levels = _measure(root)
        if values > MAX_VALUES:
            raise error(_too_many(path, f"{values:,}", what, aliases=loader.aliases))
        if levels > MAX_LEVELS:
            raise error(_too_deep(path, f"{levels} levels", what))
        return loader.construct_document(root)
    finally:
        loader.dispose()


class _SpecLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping, which PyYAML
    takes silently, the last one winning (a second ``output:`` would override the first);
    numbers YAML 1.1 reads other than they look (:func:`_sexagesimal`, :func:`_octal`); and a
    value that cannot be built (``!!int abc``), saying where. ``2024-02-03`` stays text (no
    date is a spec value) and ``1e3`` is a number, as in YAML 1.2 (YAML 1.1 reads it as text)."""

    def __init__(self, text: str, path: Path, what: str, error: type[GeosegError]) -> None:
        super().__init__(text)
        self.path, self.what, self.error = path, what, error  # for its refusals
        self._checked: set[yaml.Node] = set()
        self._levels = 0
        self._values = 0  # nodes composed, aliases not counted
        self.aliases = False  # whether the document holds an alias (*name)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """PyYAML composes a node inside its parent's composition, one level of Python's stack
        per level of nesting: stop past :data:`MAX_LEVELS`, long before the recursion limit
        (where anything the garbage collector runs fails too, and prints on stderr); and past
        :data:`MAX_VALUES` values, before a huge document is all composed."""
        if self.check_event(yaml.AliasEvent):
            self.aliases = True
        else:
            self._values += 1
        if self._values > MAX_VALUES:
            raise _too_many_values(self)
        self._levels += 1
        try:
            if self._levels > MAX_LEVELS:
                raise _TooDeep
            return super().compose_node(parent, index)
        finally:
            self._levels -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value that its tag's constructor cannot build (``!!int abc``, ``!!bool maybe``, a
        date that does not exist, an integer of thousands of digits) as a YAML error at
        ``node``, not the constructor's bare ValueError or KeyError."""
        try:
            return super().construct_object(node, deep=deep)
        except GeosegError:
            raise  # a refusal of a value inside this one, already saying where
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise _yaml_refusal(self, node, _unbuildable(node, exc)) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """YAML 1.1's integer, refused where a plain scalar reads as another number than it
        looks (``0100`` is 64, ``1:30`` is 90); one tagged and quoted (``!!int "0755"``) asks
        for YAML 1.1's reading, and gets it."""
        text, value = str(self.construct_scalar(node)), super().construct_yaml_int(node)
        if node.style is not None:
            return value
        if ":" in text:
            raise _yaml_refusal(self, node, _sexagesimal(text, value))
        if _OCTAL.fullmatch(text) and value != int(text.replace("_", ""), 10):
            raise _yaml_refusal(self, node, _octal(text, value))
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node))
        if ":" in text and node.style is None:
            raise _yaml_refusal(self, node, _sexagesimal(text, super().construct_yaml_float(node)))
        return super().construct_yaml_float(node)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Check a mapping's own keys before merge keys (``<<: *base``) add the keys they merge,
        which the mapping's own may override; a merged mapping is flattened here first too."""
        if node not in self._checked:
            self._checked.add(node)
            _check_unique_keys(self, node)
        super().flatten_mapping(node)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_SpecLoader.add_constructor(_INT, _SpecLoader.construct_yaml_int)
_SpecLoader.add_constructor(_FLOAT, _SpecLoader.construct_yaml_float)
_SpecLoader.yaml_implicit_resolvers = {  # no dates: 2024-02-03 stays text, as a name means it
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SpecLoader.add_implicit_resolver(  # 1e3, 1.5e-3, .5E3: numbers in YAML 1.2, text in YAML 1.1
    _FLOAT, re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))

_OCTAL = re.compile(r"[-+]?0[0-7_]+")  # 0100: 64 in YAML 1.1, 100 in YAML 1.2 (007: 7 in both)


def _yaml_refusal(loader: _SpecLoader, node: yaml.Node, problem: str) -> GeosegError:
    """``problem`` with ``node``'s value as the error of a spec that is not valid YAML,
    naming the file, line and column."""
    return loader.error(f"{loader.path} is not valid YAML: {_mark(node.start_mark, '', ': ')}"
                        f"{problem}. Fix the spec (see jobs/ for examples).")


def _too_many_values(loader: _SpecLoader) -> GeosegError:
    return loader.error(_too_many(loader.path, f"over {MAX_VALUES:,}", loader.what, aliases=False))


def _sexagesimal(text: str, value: float) -> str:
    """Why ``1:30``, which YAML 1.1 reads as the base-60 number 90, is refused: a reader sees
    a time, a ratio or a name."""
    return (f"received {_clip(text)}, which YAML 1.1 reads as the base-60 number {value:g}; "
            f"write {value:g} if that number is meant, or quote it (\"{_clip(text)}\") if a "
            "time or a name is meant")


def _octal(text: str, value: int) -> str:
    """Why ``0100``, which YAML 1.1 reads as the octal number 64 (YAML 1.2 as 100), is refused."""
    decimal = (text[0] if text[0] in "+-" else "") + text.lstrip("+-").lstrip("0_").replace("_", "")
    return (f"received {_clip(text)}, which YAML 1.1 reads as the octal number {value}; write "
            f"{decimal} (no leading zero) if that is the number meant, or quote it "
            f"(\"{_clip(text)}\") if a name or a code is meant")


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unbuildable(node: yaml.Node, exc: Exception) -> str:
    """Why ``node``'s value cannot be built as its tag says, quoting at most 40 characters."""
    tag = node.tag.removeprefix("tag:yaml.org,2002:")
    text = node.value if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
    if tag == "int" and "digits" in str(exc):
        return (f"received an integer of {len(text):,} characters; expected at most 4,300 digits "
                "(a spec's numbers have a few). Write the number meant, or quote it if text is")
    return (f"received {_clip(text)}, which is not a valid {tag} ({_clip(str(exc), 60)}). Write "
            "the value as the tag says, or quote it (and drop the tag) if text is meant")


class _TooDeep(Exception):
    """Raised by :class:`_SpecLoader` where a document nests deeper than :data:`MAX_LEVELS`."""


def _check_unique_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    first: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            earlier = first.setdefault(key, key_node)
        except TypeError:
            continue  # unhashable: the constructor refuses it, saying where
        if earlier is not key_node:
            raise yaml.constructor.ConstructorError(
                None, None, f"received the key {_short(key, 40)} a second time (first on line "
                f"{earlier.start_mark.line + 1}); expected each key once in a mapping: keep the "
                "one you mean and delete the other", key_node.start_mark)


def _too_many(path: Path, values: str, what: str, aliases: bool) -> str:
    """The message for a document of ``values`` values, over :data:`MAX_VALUES`."""
    if aliases:
        return (f"{path}: received YAML of {values} values once its aliases (*name) are "
                f"expanded; expected at most {MAX_VALUES:,} (a {what} has a few hundred). "
                "Repeat less through aliases of large anchors (&name), or write the values out.")
    return (f"{path}: received YAML of {values} values; expected at most {MAX_VALUES:,} (a {what} "
            f"has a few hundred). Check that {path.name} is the spec you meant; list many inputs "
            "with a glob or a catalog rather than one by one.")


def _too_deep(path: Path, levels: str, what: str) -> str:
    return (f"{path}: received YAML nested {levels} deep; expected at most {MAX_LEVELS} (a {what} "
            "has under ten). Flatten the nesting.")


def _measure(root: yaml.Node) -> tuple[int, int]:
    """(values, levels) of the document composed at ``root`` once its aliases are expanded.

    An alias is composed as the very node its anchor names, so each node is measured once,
    from its children's measures (memoised, iteratively: no recursion limit), and the cost is
    that of the text, however large the expansion. An alias inside its own anchor's value
    would expand without end: a composer error at the anchor."""
    measured: dict[yaml.Node, tuple[int, int]] = {}
    open_nodes: set[yaml.Node] = set()  # on the path from the root: entered, not yet measured
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        children = _children(node)
        if leaving:
            open_nodes.discard(node)
            measured[node] = (1 + sum(measured[c][0] for c in children),
                              1 + max((measured[c][1] for c in children), default=0))
        elif node in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "received an alias (*name) inside the value of its own anchor (&name), "
                "which would repeat without end; expected aliases of values complete before them",
                node.start_mark)
        elif node not in measured:
            open_nodes.add(node)
            stack.append((node, True))
            stack.extend((child, False) for child in children)
    return measured[root]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _mark(mark: Any, before: str, after: str = "") -> str:
    return f"{before}line {mark.line + 1}, column {mark.column + 1}{after}" if mark is not None else ""
