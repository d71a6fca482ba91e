"""URLs as they may be shown: in logs, errors, run records and outputs."""

from __future__ import annotations

import re

# A URL's first part (before any '/', '?' or '#') when it names a host: a name or an IPv6 address
# in brackets, and a port of digits at most
_HOST_PORT = re.compile(r"(?:[A-Za-z0-9._~%-]*|\[[0-9A-Za-z:.%_~-]*\])(?::[0-9]{1,5})?")


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment (where signed URLs keep their secrets).

    A plain path (or a Windows drive letter) is returned as is. It never fails, and it errs
    on the safe side: a password holding ``/``, ``?`` or ``@`` is dropped whole
    (:func:`user_info` says how user info is told from a path); then the query and the
    fragment go.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or len(scheme) <= 1:
        return url
    rest = rest[_user_info_end(scheme, rest):]
    return f"{scheme}://{rest.split('#', 1)[0].split('?', 1)[0]}"


def user_info(url: str) -> str:
    """The user info of ``url`` (``user:password``, without the ``@``); ``""`` when it has none.

    A password may hold ``/``, ``?`` and ``@`` (it should be percent-encoded, but is not always),
    so the end of the host cannot be found first. The rule, safe for the password: user info
    runs to the URL's last ``@`` (all of it is dropped, whatever it holds), and there is user
    info when the URL's first part, up to its first ``/``,

    - holds an ``@`` (``user:pass@host``; a password holding ``?`` or ``@``), or
    - holds a ``:`` that is no port of a host (``host:8443``), and an ``@`` follows (a password
      holding ``/``: ``user:pa/ss@host``); on an object store (``s3://``, ``gs://``, ...), whose
      bucket names hold no ``:``, any ``:`` there.

    Otherwise an ``@`` is in the path and is kept: ``gs://bucket/a@2x.tif``,
    ``s3://bucket/2024-01-01T10:00:00/scene@10m.tif``, ``https://host:8443/t/a@2x.png``.
    What the rule cannot tell apart, it reads so: a user name holding ``/``
    (``https://dom/user:pw@host``) reads as a path, as does a password of at most five digits
    before a ``/``, ``?`` or ``#`` outside object stores (``https://admin:1234/x@host``: host
    ``admin``, port 1234); a URL whose first part holds an ``@`` in its query
    (``https://host?mail=a@b``) loses all before that ``@``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or len(scheme) <= 1:
        return ""
    return rest[:max(_user_info_end(scheme, rest) - 1, 0)]


def _user_info_end(scheme: str, rest: str) -> int:
    """Where the host begins in ``rest``, the URL after ``scheme://``: just past its user info
    (:func:`user_info` says how it is found), or 0 when it has none."""
    last = rest.rfind("@")
    if last < 0:
        return 0
    first = rest.split("/", 1)[0]
    if "@" in first:
        return last + 1
    host = re.split(r"[?#]", first, maxsplit=1)[0]
    store = scheme.rsplit("::", 1)[-1].lower() in _CREDENTIALS_GO
    if ":" in first and (store or not _HOST_PORT.fullmatch(host)):
        return last + 1
    return 0


# Object stores whose bucket names hold neither '@' nor ':', and whose fsspec filesystems take no
# credentials from a URL (s3fs, gcsfs, ossfs would send user info as part of the bucket name);
# for each, where credentials go instead. Azure is not here: adlfs reads ``container@account``.
_CREDENTIALS_GO = {
    "s3": "storage_options (key and secret, or profile: NAME), the AWS_ACCESS_KEY_ID and "
          "AWS_SECRET_ACCESS_KEY environment variables, or a profile (AWS_PROFILE, "
          "~/.aws/credentials)",
    "gs": "storage_options (token: the path of a service-account JSON file) or the "
          "GOOGLE_APPLICATION_CREDENTIALS environment variable",
    "oss": "storage_options (key and secret)",
}
_CREDENTIALS_GO |= {"s3a": _CREDENTIALS_GO["s3"], "gcs": _CREDENTIALS_GO["gs"]}


def credentials_in(url: str) -> str | None:
    """The scheme of the part of ``url`` (each part of a chained ``simplecache::s3://...`` URL)
    that carries credentials as user info on an object store that cannot take them there
    (``s3://KEY:SECRET@bucket/key``); ``None`` when no part does.

    A bucket name holds neither ``@`` nor ``:``: user info is an ``@`` in the bucket part, or a
    ``:`` there with an ``@`` further on (a secret holding ``/``). An ``@`` in a key
    (``s3://bucket/a@2x.tif``) is not user info, and ``http(s)://user:password@host`` is left
    alone: fsspec's HTTP client sends it as basic authentication."""
    for part in url.split("::"):
        scheme, sep, rest = part.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in _CREDENTIALS_GO:
            continue
        rest = rest.split("?", 1)[0].split("#", 1)[0]
        bucket = rest.split("/", 1)[0]
        if "@" in bucket or (":" in bucket and "@" in rest):
            return scheme
    return None


def credentials_refused(url: str, what: str) -> str | None:
    """The message refusing ``url`` (``what``: "Input", "Output", ...) when it carries credentials
    as user info where they cannot go (:func:`credentials_in`); ``None`` when it does not. The
    URL is shown without them."""
    scheme = credentials_in(url)
    if scheme is None:
        return None
    return (f"{what} {public_url(url)}: received a URL with credentials in it (user info before "
            f"'@', not shown); expected {scheme}://bucket/path without them: geoseg does not take "
            f"credentials from {scheme}:// URLs (the store would read them as part of the bucket "
            "name). Remove them from the URL and give them in "
            f"{_CREDENTIALS_GO[scheme]} instead.")
