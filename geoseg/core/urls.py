"""URLs as they may be shown: in logs, errors, run records and outputs."""

from __future__ import annotations


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment (where signed URLs keep their secrets).

    A plain path (or a Windows drive letter) is returned as is. It never fails, and it errs
    on the safe side: user info is everything before the last ``@`` when that part has a
    ``:`` or no ``/`` (so a password holding ``/``, ``?`` or ``@`` is dropped whole, while
    ``gs://bucket/a@2.tif`` keeps its path); then the query and the fragment go.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or len(scheme) <= 1:
        return url
    info, at, after = rest.rpartition("@")
    if at and (":" in info or "/" not in info):
        rest = after
    return f"{scheme}://{rest.split('#', 1)[0].split('?', 1)[0]}"


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
