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
