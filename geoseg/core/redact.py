"""Secrets kept out of what geoseg shows: messages, log records, run records and outputs.

:func:`scrub` is the one place messages lose their secrets: a URL's user info and query, the
values of storage options (:func:`remember_secrets`, which the spec loader calls) and of
credential environment variables (``AWS_SECRET_ACCESS_KEY``, ``AZURE_STORAGE_CONNECTION_STRING``,
...; not those holding the path of a credentials file). :func:`hide_named_secrets`
hides the credentials a spec names as such before it is recorded, :func:`public_urls` the user
info and query of every URL in it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from geoseg.core.urls import public_url, user_info

HIDE = "<hidden>"
NOT_SECRET = frozenset({"endpoint_url", "region_name", "region", "profile", "signature_version",
                        "addressing_style", "anon", "use_ssl"})  # storage options hiding nothing
# names of credentials: AWS_SECRET_ACCESS_KEY, API_TOKEN, Azure's AZURE_STORAGE_KEY and
# AZURE_STORAGE_CONNECTION_STRING (and the AccountKey=... and SharedAccessSignature=... inside)
SECRET_ENV = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|ACCOUNT_?KEY|"
                        r"STORAGE_KEY|CONNECTION_STRING|SAS|SIGNATURE|API_KEY|AUTH", re.IGNORECASE)
# names of variables holding the path of a credentials file (its contents are the secret)
PATH_ENV = re.compile(r"(_FILE|_PATH|_DIR)$|^GOOGLE_APPLICATION_CREDENTIALS$", re.IGNORECASE)
MIN_SECRET = 4  # shorter strings are not hidden: they would blank out ordinary words
MIN_ENV_SECRET = 8  # an environment variable named like a credential may hold "true" or "1"
# a scheme of at most 32 characters: an unbounded one made every long word a quadratic search
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^\s'\"<>]+")
_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=([\"']?)([^\s\"';]+)\2")  # NAME=value, shell
_secrets: set[str] = set()


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it stripped of user info, query and fragment, and every
    secret (``secrets``, those remembered, those in credential environment variables) hidden,
    as is and percent-encoded, longest first."""
    text = _URL.sub(_public_match, str(text))
    known = {*secrets, *_secrets, *env_secrets()}
    for secret in sorted({f for s in known for f in _forms(s)}, key=len, reverse=True):
        text = text.replace(secret, HIDE)
    return text


def _public_match(match: re.Match[str]) -> str:
    """A URL found in a message, made public; punctuation that ends the sentence is kept."""
    url = match.group(0)
    core = url.rstrip(".,;:)")
    return public_url(core) + url[len(core):]


def public_urls(data: Any) -> Any:
    """``data`` (plain data such as a dumped spec, at any depth) with every URL in its strings
    made public, as :func:`public_url` makes an input's: no user info, query or fragment."""
    if isinstance(data, dict):
        return {k: public_urls(v) for k, v in data.items()}
    if isinstance(data, list):
        return [public_urls(v) for v in data]
    if not isinstance(data, str):
        return data
    return public_url(data) if _URL.match(data) else _URL.sub(_public_match, data)  # one URL: whole


def remember_secrets(values: Iterable[str]) -> None:
    """Hide ``values`` from every message :func:`scrub` cleans in this process from now on."""
    _secrets.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET)


def secrets_in(data: Any, inside: bool = False, key: str = "") -> set[str]:
    """The secrets in a job spec (or any nested mapping; ``inside``: a storage options
    mapping itself): every string under a ``storage_options`` key (endpoints and regions
    excepted, and strings too short to hide), the user info and query values
    of every URL, and credentials named as such elsewhere (a cluster's ``env`` entry
    ``AWS_SECRET_ACCESS_KEY: ...``, a number there too, a prologue line ``export API_TOKEN=...``,
    a connection string's ``AccountKey=...``); not the path of a credentials file (``..._FILE``)."""
    if isinstance(data, dict):
        return {s for k, v in data.items()
                for s in secrets_in(v, inside or k == "storage_options", str(k))}
    if isinstance(data, (list, tuple)):
        return {s for v in data for s in secrets_in(v, inside, key if inside else "")}
    text = _as_text(data)
    if text is None:
        return set()
    if SECRET_ENV.search(key) and len(text) >= MIN_ENV_SECRET and not _is_path(key, text):
        return {text, *_named_values(text)}
    if not isinstance(data, str):  # a number elsewhere (a storage option's block size) hides nothing
        return set()
    if inside and key not in NOT_SECRET and len(data) >= MIN_SECRET:
        return {data, *_named_values(data)}
    return url_secrets(data) | _named_values(data)


def _as_text(value: Any) -> str | None:
    """``value`` as a message shows it, when it may be a secret: a string, or a number (an
    unquoted ``AWS_SECRET_ACCESS_KEY: 98765432109876`` is read from YAML as an int, and a
    validation error quotes it); ``None`` for anything else (a bool is no secret)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _named_values(text: str) -> set[str]:
    """The values of ``NAME=value`` parts of ``text`` when NAME is a credential's: a shell line's
    ``export API_TOKEN=...``, a connection string's ``AccountKey=...;``."""
    return {m.group(3) for m in _ASSIGNMENT.finditer(text)
            if SECRET_ENV.search(m.group(1)) and len(m.group(3)) >= MIN_ENV_SECRET}


def hide_named_secrets(data: Any, key: str = "") -> Any:
    """``data`` with credentials named as such hidden: the value of a key named like one, and
    the value in ``NAME=value`` when NAME is (shell lines such as a job script's prologue)."""
    if isinstance(data, dict):
        return {k: hide_named_secrets(v, str(k)) for k, v in data.items()}
    if isinstance(data, list):  # list items are named by nothing (Kubernetes ``secrets`` are names)
        return [hide_named_secrets(v) for v in data]
    text = _as_text(data)
    if text is not None and SECRET_ENV.search(key) and len(text) >= MIN_ENV_SECRET:
        return HIDE  # a number too: an unquoted secret in YAML
    if not isinstance(data, str):
        return data
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}={HIDE}" if SECRET_ENV.search(m.group(1))
                           and len(m.group(3)) >= MIN_ENV_SECRET else m.group(0), data)


def url_secrets(url: str) -> set[str]:
    """The credentials a URL carries: its user info (each part; found as :func:`public_url`
    drops it, so that an ``@`` in a path is no secret) and its query's values."""
    found: set[str] = set()
    for match in _URL.finditer(url):
        info = user_info(match.group(0))
        rest = match.group(0).split("://", 1)[1][len(info):]
        query = rest.partition("?")[2].split("#", 1)[0]
        found.update(v for pair in query.split("&") for v in pair.split("=", 1)[1:])
        if info:
            found.update([info, *info.split(":", 1)])
    return {s for s in found if len(s) >= MIN_SECRET}


def env_secrets() -> set[str]:
    """Values of environment variables named like credentials (``AWS_SECRET_ACCESS_KEY``, ...),
    and the ``AccountKey=...`` inside them; not a path to a credentials file
    (``GOOGLE_APPLICATION_CREDENTIALS``), which is no secret, and which, hidden, took the
    folders of every path that shares them out of every message."""
    found: set[str] = set()
    for name, value in os.environ.items():
        if SECRET_ENV.search(name) and len(value) >= MIN_ENV_SECRET and not _is_path(name, value):
            found.update([value, *_named_values(value)])
    return found


def _is_path(name: str, value: str) -> bool:
    """Whether the environment variable ``name`` holds a path rather than a secret: that of an
    existing file or folder, or one looking like a path in a variable named for one
    (:data:`PATH_ENV`: ``..._FILE``, ``GOOGLE_APPLICATION_CREDENTIALS``)."""
    if PATH_ENV.search(name) and ("/" in value or os.sep in value) and not re.search(r"\s|[{}]", value):
        return True
    return os.path.exists(os.path.expanduser(value))


def _forms(secret: str) -> Iterator[str]:
    """A secret as it may appear: as is, percent-encoded, decoded, and each part of it a parser
    may quote on its own (split at ``/`` and ``:``)."""
    yield from (secret, quote(secret, safe=""), quote(secret), unquote(secret))
    yield from (part for part in re.split(r"[/:@]", secret) if len(part) >= 8 and part != secret)
