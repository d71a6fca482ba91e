"""Secrets kept out of what geoseg shows: messages, log records, run records and outputs.

:func:`scrub` is the one place messages lose their secrets: a URL's user info and query, the
values of storage options (:func:`remember_secrets`, which the spec loader calls) and of
credential environment variables (``AWS_SECRET_ACCESS_KEY``, ...). :func:`hide_named_secrets`
hides the credentials a spec names as such before it is recorded, :func:`public_urls` the user
info and query of every URL in it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from geoseg.core.urls import public_url

HIDE = "<hidden>"
NOT_SECRET = frozenset({"endpoint_url", "region_name", "region", "profile", "signature_version",
                        "addressing_style", "anon", "use_ssl"})  # storage options hiding nothing
SECRET_ENV = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|ACCOUNT_KEY|"
                        r"SAS|SIGNATURE|API_KEY|AUTH", re.IGNORECASE)
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
    ``AWS_SECRET_ACCESS_KEY: ...``, a prologue line ``export API_TOKEN=...``)."""
    if isinstance(data, dict):
        return {s for k, v in data.items()
                for s in secrets_in(v, inside or k == "storage_options", str(k))}
    if isinstance(data, (list, tuple)):
        return {s for v in data for s in secrets_in(v, inside, key if inside else "")}
    if not isinstance(data, str):
        return set()
    if ((inside and key not in NOT_SECRET and len(data) >= MIN_SECRET)
            or (SECRET_ENV.search(key) and len(data) >= MIN_ENV_SECRET)):
        return {data}
    return url_secrets(data) | {m.group(3) for m in _ASSIGNMENT.finditer(data)
                                if SECRET_ENV.search(m.group(1)) and len(m.group(3)) >= MIN_ENV_SECRET}


def hide_named_secrets(data: Any, key: str = "") -> Any:
    """``data`` with credentials named as such hidden: the value of a key named like one, and
    the value in ``NAME=value`` when NAME is (shell lines such as a job script's prologue)."""
    if isinstance(data, dict):
        return {k: hide_named_secrets(v, str(k)) for k, v in data.items()}
    if isinstance(data, list):  # list items are named by nothing (Kubernetes ``secrets`` are names)
        return [hide_named_secrets(v) for v in data]
    if not isinstance(data, str):
        return data
    if SECRET_ENV.search(key) and len(data) >= MIN_ENV_SECRET:
        return HIDE
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}={HIDE}" if SECRET_ENV.search(m.group(1))
                           and len(m.group(3)) >= MIN_ENV_SECRET else m.group(0), data)


def url_secrets(url: str) -> set[str]:
    """The credentials a URL carries: its user info (each part) and its query's values."""
    found: set[str] = set()
    for match in _URL.finditer(url):
        rest = match.group(0).split("://", 1)[1]
        query = rest.partition("?")[2].split("#", 1)[0]
        found.update(v for pair in query.split("&") for v in pair.split("=", 1)[1:])
        authority = rest.split("?", 1)[0]
        if "@" in authority:
            info = authority.rsplit("@", 1)[0]
            found.update([info, *info.split(":", 1)])
    return {s for s in found if len(s) >= MIN_SECRET}


def env_secrets() -> set[str]:
    """Values of environment variables named like credentials (``AWS_SECRET_ACCESS_KEY``, ...)."""
    return {v for k, v in os.environ.items() if SECRET_ENV.search(k) and len(v) >= MIN_ENV_SECRET}


def _forms(secret: str) -> Iterator[str]:
    """A secret as it may appear: as is, percent-encoded, decoded, and each part of it a parser
    may quote on its own (split at ``/`` and ``:``)."""
    yield from (secret, quote(secret, safe=""), quote(secret), unquote(secret))
    yield from (part for part in re.split(r"[/:@]", secret) if len(part) >= 8 and part != secret)
