"""Cheap looks at a URL for :meth:`Reader.guess_can_open`: whether it is a file, its first
bytes, whether a key inside it exists, a small JSON document in it.

Within one :func:`sharing` block (``open_source`` opens one around the guesses and the open),
each look is made at most once whichever readers ask, so asking every reader costs about
what one chain of format checks did: a file costs a stat and one small range request, a
Zarr store a few existence checks. Outside such a block nothing is kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import fsspec

from geoseg import budgets
from geoseg.core import jsontext
from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, NestingError
from geoseg.io import remote

HEAD_BYTES = 540  # enough for a NIfTI-2 header, a TIFF or image signature, a GDAL format's text
T = TypeVar("T")
_SHARED: ContextVar[dict[tuple[str, ...], Any] | None] = ContextVar("geoseg_probe", default=None)


@contextlib.contextmanager
def sharing() -> Iterator[None]:
    """Looks made inside are made once (per URL and key) and shared."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _once(key: tuple[str, ...], compute: Callable[[], T]) -> T:
    memo = _SHARED.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def location(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec filesystem and path of ``url`` (no trailing slash)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return fs, path.rstrip("/")


def is_file(url: str, storage_options: dict[str, Any]) -> bool:
    """Whether ``url`` is a file; a path ending ``.zarr`` is taken for a store without asking.
    Over HTTP every URL that exists is a file (a store's folder may be a page, or nothing)."""
    fs, path = location(url, storage_options)
    if path.endswith(".zarr"):
        return False
    return _once(("file", url), lambda: remote.isfile(fs, path))


def local_kind(url: str, storage_options: dict[str, Any]) -> str | None:
    """What a local path is when it is not a regular file: ``"a folder"``, ``"a FIFO (named
    pipe)"``, ``"a socket"``, ``"a device"``, a link loop; ``None`` for a regular file, a remote URL or a
    path that does not exist. Told by ``stat`` alone: opening a FIFO to look would block."""
    if not remote.is_local(url):
        return None
    try:
        mode = os.stat(location(url, storage_options)[1]).st_mode
    except OSError as exc:
        return "a symbolic link that leads back to itself" if exc.errno == errno.ELOOP else None
    return mode_kind(mode)


def mode_kind(mode: int) -> str | None:
    """What a ``stat`` mode says a path is when it is no regular file (see :func:`local_kind`)."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), None)


def special_file(path: str) -> str | None:
    """What the local ``path`` is when reading it could block or never end (a FIFO, a socket,
    a device such as /dev/zero; links followed), else ``None``: a regular file, a folder, a
    path that is not there."""
    try:
        kind = mode_kind(os.stat(path).st_mode)
    except OSError:
        return None
    return None if kind == "a folder" else kind


def head(url: str, storage_options: dict[str, Any]) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of the file ``url`` (one range request; on a remote
    store of its first :data:`~geoseg.io.remote.READ_BLOCK` bytes, kept for the reader that opens
    it, see :func:`first_block`); ``b""`` when ``url`` is not a file. Never more is read, nor for
    longer than its deadline, whatever the server sends (:func:`~geoseg.io.remote.read_start`)."""
    if not is_file(url, storage_options):
        return b""
    fs, path = location(url, storage_options)
    size = HEAD_BYTES if remote.is_local(url) else remote.READ_BLOCK
    return _once(("head", url), lambda: remote.read_start(fs, path, size))[:HEAD_BYTES]


def first_block(url: str) -> bytes | None:
    """The first :data:`~geoseg.io.remote.READ_BLOCK` bytes of the remote file ``url`` (all of a
    shorter file) as :func:`head` read them inside this :func:`sharing` block; ``None`` when it
    did not (or ``url`` is local)."""
    return None if remote.is_local(url) else (_SHARED.get() or {}).get(("head", url))


def has_key(url: str, storage_options: dict[str, Any], key: str) -> bool:
    """Whether ``url/key`` exists (a store's metadata document: ``zarr.json``, ``.zarray`` ...)."""
    memo = _SHARED.get() or {}
    if ("doc", url, key) in memo:  # already read by read_json
        return bool(memo["doc", url, key][0])
    fs, path = location(url, storage_options)
    return _once(("key", url, key), lambda: remote.exists(fs, f"{path}/{key}"))


def read_json(url: str, storage_options: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The JSON object stored at ``url/key``; ``None`` when it is absent or not a JSON object.
    Raises :class:`~geoseg.errors.CorruptInputError` for one nested too deeply to decode."""
    fs, path = location(url, storage_options)
    try:
        return _once(("doc", url, key), lambda: _document(fs, f"{path}/{key}"))[1]
    except NestingError as exc:
        raise CorruptInputError(f"The metadata of {public_url(url)} ({key}) {exc}, as no Zarr "
                                "metadata does: it is corrupt or hostile. Re-write it, or check "
                                "the URL.") from None


def _document(fs: Any, path: str) -> tuple[bool, dict[str, Any] | None]:
    """Whether ``path`` exists, and the JSON object it holds (``None``: none). A document over
    ``GEOSEG_MAX_METADATA_BYTES``, or a FIFO or device in its place, is refused unread; a remote
    one is read no further than the limit, whatever the server sends (an endless body, a trickle:
    :func:`~geoseg.io.remote.read_start`)."""
    kind = special_file(path) if remote.fs_is_local(fs) else None
    if kind is not None:
        raise CorruptInputError(f"Zarr metadata {public_url(path)} is {kind}, not a file: "
                                "reading it would block or never end. Check the URL.")
    what = f"Zarr metadata {public_url(path)}"
    try:
        if remote.fs_is_local(fs):  # a ranged read of a local file allocates all the range asks for
            budgets.check_metadata(os.stat(path).st_size, what)
            text = fs.cat_file(path)
        else:
            text = remote.read_start(fs, path, budgets.metadata_read_limit())
            budgets.check_metadata(len(text), what)
    except FileNotFoundError as exc:
        if remote.is_transient(exc):  # an unavailable web server's 503, not an absent key
            raise
        return False, None
    except NotADirectoryError:  # a "key" under a local file
        return False, None
    try:
        found = jsontext.loads(text)
    except NestingError:
        raise
    except (ValueError, UnicodeDecodeError):
        return True, None
    return True, found if isinstance(found, dict) else None
