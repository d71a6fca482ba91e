"""Remote storage: retries with backoff for transient errors, clear errors for the others.

Object stores and web servers fail now and then: connection resets, timeouts, HTTP 5xx,
S3 ``SlowDown`` throttling. Task reads (every :class:`~geoseg.io.sources.RasterSource`)
and writes (:class:`~geoseg.io.output.OutputTarget`) retry those with exponential backoff
and jitter: ``GEOSEG_RETRIES`` retries (default 4), the first after about
``GEOSEG_RETRY_DELAY`` seconds (default 0.5), each wait twice the one before, capped at
30 s. Permanent errors (a missing bucket or key, access denied, a request refused as bad, a
refused connection, storage options the S3 client refuses, bad data) are never retried: they fail in seconds. What fails for good becomes a geoseg error that names the URL in its public form
(no user info, no query), says what happened and what to check, and never carries storage
options: messages are scrubbed of their values, and the library's own exception (whose text
may hold a signed URL or request headers) is not chained.

Every request has a timeout, so nothing hangs: ``GEOSEG_CONNECT_TIMEOUT`` seconds to connect
(default 10) and ``GEOSEG_READ_TIMEOUT`` seconds for each next part of the answer (default 20);
an HTTP answer also has a deadline, ``2 * GEOSEG_READ_TIMEOUT`` seconds and one more for each
MiB its body declares (:func:`http_deadline`, which states the bandwidth it assumes), so that a
server trickling a byte at a time cannot hold a read for ever. A format probe or a metadata read
(:func:`read_start`) reads no more than it asks for, even from a server that ignores ``Range``
and sends an endless body, within the deadline of what has come so far.
:class:`RequestDefaults` puts them, read at each use, under fsspec's configuration, so every
filesystem a process makes (zarr's, GDAL's opener, a lease's) has them unless its storage
options say otherwise (``config_kwargs`` for S3, ``client_kwargs.timeout`` for HTTP). The
libraries underneath barely retry (botocore two attempts, s3fs one): this module's loop is the
one that does, so their retries cannot multiply it into minutes. An HTTP read that hangs or
trickles fails after at most ``(GEOSEG_RETRIES + 1) * (GEOSEG_CONNECT_TIMEOUT + 2 *
GEOSEG_READ_TIMEOUT + S)`` seconds plus the backoff, ``S`` the seconds the body's declared size
allows at 1 MiB/s (none for a small read). An S3 request that hangs fails after
``(GEOSEG_RETRIES + 1) * 2 * GEOSEG_READ_TIMEOUT`` seconds; botocore's read timeout applies to
each socket read, so an S3 answer trickling bytes is bounded by the store, not by geoseg.

``http://`` and ``https://`` are read-only: :func:`check_writable` refuses them as outputs.

GDAL reads remote GeoTIFFs through Python file objects (rasterio's opener), and cannot take
a Python exception raised inside a read: the read fails with an unrelated message, or the
process aborts. :class:`GuardedContainer` files therefore never raise into GDAL: they keep
the first failure and hand GDAL an empty read, and :func:`guarded_reads` raises that failure
once rasterio returns, so the retry loop sees the real cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import logging
import random
import re
import sys
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import fsspec
import fsspec.asyn
from rasterio.abc import FileContainer

from geoseg import config
from geoseg.core import redact
from geoseg.core.text import clipped
from geoseg.core.urls import credentials_refused, public_url
from geoseg.errors import (
    BucketNotFoundError,
    GeosegError,
    MissingExtraError,
    ParameterError,
    RangeRequestsError,
    RasterNotFoundError,
    ReadOnlyStorageError,
    StorageAccessError,
    StorageIOError,
    StorageUnavailableError,
)

T = TypeVar("T")
log = logging.getLogger("geoseg.io")

READ_ONLY_PROTOCOLS = ("http", "https")
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss")
PROBE_BLOCK = 2**16  # bytes fetched at once when sniffing a file's format
MIN_HTTP_RATE = 2**20  # bytes a second an HTTP answer must average (:func:`http_deadline`)
RANGE_PROBE = 16  # bytes asked for to learn whether an HTTP server answers Range requests
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF, either order
# the first bytes of images read whole (PNG, JPEG, GIF, BMP, WebP's RIFF)
WHOLE_READ_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF")
READ_BLOCK = 2**14  # read-ahead of remote files GDAL and tifffile read (what GDAL itself uses)
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_ERRNO = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "BandwidthLimitExceeded",
    }
)
_TRANSIENT_CLASSES = frozenset(
    {
        "ClientConnectionError",
        "ClientPayloadError",
        "ServerDisconnectedError",
        "HTTPClientError",
        "ResponseStreamingError",
        "IncompleteRead",
        "ProtocolError",
        "ChunkedEncodingError",
    }
)
# botocore's errors when it finds no credentials, or only part of them, anywhere it looks
_NO_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError"})
_DISK_ERRNO = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
_PERMANENT = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)
_GDAL_HTTP = re.compile(r"HTTP (?:response )?code:? *(\d{3})", re.IGNORECASE)
LIBRARY_ATTEMPTS = 2  # botocore's attempts at one request, inside each of geoseg's


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient storage errors."""

    retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5  # each wait is shortened by a random fraction of up to this

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (from 1): ``base_delay * 2**(retry - 1)``,
        at most ``max_delay``, less a random part of up to ``jitter`` of it."""
        full = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return full * (1.0 - self.jitter * (rng or random).random())

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The policy ``GEOSEG_RETRIES`` and ``GEOSEG_RETRY_DELAY`` ask for (read at call time)."""
        return cls(
            retries=config.retries(),
            base_delay=config.retry_delay(),
        )


# --- which errors are worth retrying ---------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: a connection reset or timeout, HTTP 408/425/429/5xx, S3
    throttling. The first decisive error along the chain of causes decides; a missing object,
    access denied, bad data or any geoseg error is permanent."""
    for err in _chain(exc):
        verdict = _verdict(err)
        if verdict is not None:
            return verdict
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen and len(seen) < 16:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _verdict(err: BaseException) -> bool | None:
    """True (transient), False (permanent) or None (this error alone does not say)."""
    if isinstance(err, GeosegError) or refused(err) or type(err).__name__ in _NO_CREDENTIALS:
        return False
    if isinstance(err, _PERMANENT):  # unless its cause says otherwise: fsspec's HTTP info raises
        return False if err.__cause__ is None else None  # FileNotFoundError from a 503
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNO:
        return True
    status = http_status(err)
    if status is not None:
        return status in TRANSIENT_STATUS
    if _error_code(err) in _TRANSIENT_CODES:
        return True
    return True if {c.__name__ for c in type(err).__mro__} & _TRANSIENT_CLASSES else None


def refused(err: BaseException) -> bool:
    """Whether ``err`` is a refused connection: nothing listens at that host and port, which
    retrying will not change (a wrong endpoint, a stopped server)."""
    return isinstance(err, OSError) and err.errno == errno.ECONNREFUSED


def http_status(err: BaseException) -> int | None:
    """The HTTP status an error reports (aiohttp, botocore, requests, GDAL), if any."""
    status = getattr(err, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code if isinstance(code, int) else None
    if isinstance(getattr(response, "status_code", None), int):
        return int(response.status_code)
    if type(err).__module__.startswith("rasterio"):
        match = _GDAL_HTTP.search(str(err))
        return int(match.group(1)) if match else None
    return None


def _error_code(err: BaseException) -> str | None:
    response = getattr(err, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


# --- retrying ----------------------------------------------------------------------------------

_RETRYING: contextvars.ContextVar[bool] = contextvars.ContextVar("geoseg_retrying", default=False)


def call_with_retries(
    fn: Callable[..., T],
    *args: Any,
    url: str,
    storage_options: dict[str, Any],
    what: str = "Reading",
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)``, retried on transient errors; what still fails is translated
    (:func:`translate`). Calls nested inside another retried call run once: the outer loop
    retries them."""
    if _RETRYING.get():
        return fn(*args, **kwargs)
    policy = policy or RetryPolicy.from_env()
    token = _RETRYING.set(True)
    try:
        return _retry_loop(fn, args, kwargs, policy, sleep, url, storage_options, what)
    finally:
        _RETRYING.reset(token)


def _retry_loop(
    fn: Callable[..., T],
    args: tuple,
    kwargs: dict,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    url: str,
    so: dict[str, Any],
    what: str,
) -> T:
    started = time.monotonic()
    for attempt in range(policy.retries + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # sorted into retry / translate below
            if not is_transient(exc):
                translated = translate(exc, url, so, what)
                if translated is exc:
                    raise
                raise translated from None
            if attempt == policy.retries:
                raise _gave_up(
                    exc, url, so, what, attempt + 1, time.monotonic() - started
                ) from None
            sleep(policy.delay(attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def retrying(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a method of an object with ``url`` and ``storage_options`` so that each call is
    retried on transient errors (:func:`call_with_retries`)."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
            return call_with_retries(
                method,
                self,
                *args,
                url=self.url,
                storage_options=self.storage_options,
                what=what,
                **kwargs,
            )

        wrapper.__geoseg_retrying__ = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


# --- clear errors ------------------------------------------------------------------------------


@contextlib.contextmanager
def storage_errors(url: str, storage_options: dict[str, Any] | None, what: str) -> Iterator[None]:
    """Turn storage errors raised inside into geoseg errors about ``url`` (:func:`translate`)."""
    try:
        yield
    except GeosegError:
        raise
    except Exception as exc:  # translate() keeps what it does not know
        translated = translate(exc, url, dict(storage_options or {}), what)
        if translated is exc:
            raise
        raise translated from None


def translate(
    exc: BaseException, url: str, storage_options: dict[str, Any], what: str
) -> BaseException:
    """A geoseg error for a storage failure (missing bucket or object, access denied, HTTP 400/401/
    403, exhausted retries, storage options the S3 client refuses); any other exception is
    returned unchanged."""
    if isinstance(exc, GeosegError):
        return exc
    if (said := credentials_refused(url, what)) is not None:  # read as part of the bucket name
        return StorageAccessError(said)
    if isinstance(exc, ImportError):  # fsspec's: the store's package is not installed
        return MissingExtraError(
            f"{what} {public_url(url)} failed: {str(exc).rstrip('.')}. Install it where geoseg "
            "runs, on the workers too (e.g. pip install gcsfs for gs://, adlfs for az://), or "
            "give a path or URL of a store whose package is installed.")
    if any(type(err).__name__ in _NO_CREDENTIALS for err in _chain(exc)):
        return _no_credentials(exc, url, storage_options, what)
    if (whole := whole_files_only(exc, url)) is not None:
        return whole
    if is_transient(exc):
        return _gave_up(exc, url, storage_options, what, 1, 0.0)
    if any(map(refused, _chain(exc))):
        return _connection_refused(exc, url, storage_options, what)
    if (client := next(filter(_making_client, _chain(exc)), None)) is not None:
        return _options_refused(client, url, storage_options, what)
    if any(_two_credentials(err) for err in _chain(exc)):
        return ParameterError(
            f"{what} {public_url(url)} failed: the URL carries credentials (user info) and its "
            "storage options an Authorization header, and the HTTP client takes one of them. "
            "Give one: the user info, or the header (storage_options client_kwargs headers).")
    if any(type(err).__name__ == "ParamValidationError" for err in _chain(exc)):
        return _parameters_refused(exc, url, storage_options, what)
    status = next((s for s in map(http_status, _chain(exc)) if s is not None), None)
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if isinstance(exc, PermissionError) or status in (401, 403) or code == errno.EROFS:
        return _access_denied(exc, url, storage_options, what)
    if status == 400:
        return _bad_request(exc, url, storage_options, what)
    if isinstance(exc, FileNotFoundError) or status == 404:
        return not_found(url, storage_options, what)
    if code in _DISK_ERRNO:
        return _disk_failed(exc, url, storage_options, what)
    if code == errno.ENAMETOOLONG:
        return ParameterError(
            f"{what} {clipped(public_url(url), 120)} failed: the path is too long for the file "
            f"system ({len(url)} characters; a file or folder name takes at most 255 bytes, a "
            "whole path 4096 on Linux). Give a shorter path.")
    return exc


def whole_files_only(exc: BaseException, url: str) -> RangeRequestsError | None:
    """The error for an HTTP server that ignored a ``Range`` request (fsspec says so with a
    ``ValueError``), if that is what ``exc`` is; else ``None``. Not a corrupt file: the file
    may be fine, but it cannot be read in parts from there."""
    if not any(isinstance(err, ValueError) and "support range requests" in str(err)
               for err in _chain(exc)):
        return None
    return whole_files(url)


def whole_files(url: str) -> RangeRequestsError:
    """The error for ``url`` on an HTTP server that sends whole files only."""
    return RangeRequestsError(
        f"{public_url(url)}: the HTTP server sends whole files only (it ignores Range requests), "
        "and geoseg reads a raster in parts, never whole. Serve it from a web server or object "
        "store that answers Range requests (nginx, Apache, S3, GCS and Azure do), or download it "
        "and give its local path.")


def whole_files_unsized(url: str) -> RangeRequestsError:
    """The error for ``url`` on an HTTP server that sends it whole, and of no declared size."""
    return RangeRequestsError(
        f"{public_url(url)}: the HTTP server ignores Range requests and sends the whole file "
        "without saying how long it is (no Content-Length), so geoseg cannot bound what reading "
        "it would take: the answer may never end. Serve it from a web server or object store "
        "that answers Range requests or declares the size (nginx, Apache, S3, GCS and Azure do), "
        "or download it and give its local path.")


def check_ranges(url: str, storage_options: dict[str, Any]) -> None:
    """Refuse an ``http(s)://`` TIFF (GeoTIFF, COG) whose server ignores ``Range`` requests,
    before anything opens it: a reader's first read starts at byte 0, which fsspec answers by
    downloading the whole file when the server sends all of it. One request for the first
    :data:`RANGE_PROBE` bytes; a whole-file answer (200, a longer body) is read no further than
    :data:`TIFF_MAGIC`'s bytes (the connection is then closed), and refused when they start a
    TIFF. An image read whole anyway (PNG, JPEG, ...) is refused too when that answer declares
    no size: nothing would bound the download (an endless body filled the memory). Other files,
    and error answers, go on to the reader, which names them."""
    if fsspec.utils.get_protocol(url) not in READ_ONLY_PROTOCOLS:
        return
    with storage_errors(url, storage_options, "Reading"):
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        whole = fsspec.asyn.sync(fs.loop, _whole_file_start, fs, path)
    if whole is None:
        return
    start, sized = whole
    if start.startswith(TIFF_MAGIC):
        raise whole_files(url)
    if not sized and start.startswith(WHOLE_READ_MAGIC):
        raise whole_files_unsized(url)


async def _whole_file_start(fs: Any, url: str) -> tuple[bytes, bool] | None:
    """The first bytes of ``url``, and whether the answer declares its size, when its server
    answers a request for :data:`RANGE_PROBE` bytes with a longer whole file; else ``None``.
    The rest of that body is never read."""
    async with _ranged_get(fs, url, RANGE_PROBE) as answer:
        size = answer.headers.get("Content-Length", "")
        if answer.status != 200 or (size.isdigit() and int(size) <= RANGE_PROBE):
            return None
        try:
            return await answer.content.readexactly(len(TIFF_MAGIC[0])), size.isdigit()
        except asyncio.IncompleteReadError as short:
            return short.partial, size.isdigit()


@contextlib.asynccontextmanager
async def _ranged_get(fs: Any, url: str, size: int) -> AsyncIterator[Any]:
    """The answer to a GET of the first ``size`` bytes of ``url`` with ``fs``'s session and
    options, its connection dropped when done: the rest of a whole or endless body is never
    read (nor drained)."""
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = {**(kwargs.pop("headers", None) or {}), "Range": f"bytes=0-{size - 1}"}
    async with session.get(fs.encode_url(url), headers=headers, **kwargs) as answer:
        try:
            yield answer
        finally:
            answer.close()


def read_start(fs: Any, path: str, size: int) -> bytes:
    """The first ``size`` bytes of the file ``path`` on ``fs`` (all of a shorter file), never
    more whatever the server does. fsspec's ``cat_file`` asks an HTTP server for the range but
    reads the whole answer: a server that ignores ``Range`` and sends an endless body filled
    the memory, and one that trickles a byte at a time under a huge ``Content-Length`` held the
    read for ever. Over HTTP this is one streamed request, read no further than ``size`` bytes
    (the connection is then dropped), and held to the deadline of what has come so far and one
    more :data:`MIN_HTTP_RATE` of bytes (:func:`http_deadline`, counted from the request): a
    steady answer goes on, a trickle stops, and :class:`StorageUnavailableError` names the URL
    and the setting to raise."""
    if size <= 0:
        return b""
    if not _is_http(fs):
        return bytes(fs.cat_file(path, start=0, end=size))
    return fsspec.asyn.sync(fs.loop, _read_start, fs, path, size)


async def _read_start(fs: Any, url: str, size: int) -> bytes:
    """:func:`read_start` over HTTP: the request and its body within their deadline."""
    read = config.read_timeout()
    asked = asyncio.get_running_loop().time()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(asked + _paced_deadline(read, size, 0)) as clock:
            return await _first_bytes(fs, url, size, got, lambda come: clock.reschedule(
                asked + _paced_deadline(read, size, come)))
    except TimeoutError:
        if not clock.expired():  # a socket timeout (no byte for GEOSEG_READ_TIMEOUT): transient
            raise
    come = sum(map(len, got))
    seconds = asyncio.get_running_loop().time() - asked
    raise StorageUnavailableError(
        f"Reading {public_url(url)} failed: the server sent {come:,} of the first {size:,} bytes "
        f"asked for in {seconds:.1f} s, past the deadline of such a read (2 * "
        "GEOSEG_READ_TIMEOUT, and a second for each MiB come and one more); it trickles its "
        "answer or hangs. Check the server and the network; over a slow link raise "
        "GEOSEG_READ_TIMEOUT.")


def _paced_deadline(read: float, size: int, come: int) -> float:
    """Seconds from the request a read of ``size`` bytes may take once ``come`` have come."""
    return http_deadline(read, min(size, come + MIN_HTTP_RATE))


async def _first_bytes(
    fs: Any, url: str, size: int, got: list[bytes], came: Callable[[int], None]
) -> bytes:
    """Up to ``size`` bytes from the start of ``url`` (one request for them), collected in
    ``got`` as they come, ``came`` told the count; an answer that ignores the range is read no
    further."""
    async with _ranged_get(fs, url, size) as answer:
        if answer.status == 416:  # nothing at or past byte 0: an empty file
            return b""
        fs._raise_not_found_for_status(answer, url)
        come = 0
        while come < size and (part := await answer.content.read(size - come)):
            got.append(part)
            come += len(part)
            came(come)
        return b"".join(got)


def exists(fs: Any, path: str) -> bool:
    """``fs.exists(path)``; over HTTP a HEAD request instead of fsspec's GET (which starts a
    download, and calls an unavailable server's 503 a missing file)."""
    if not _is_http(fs):
        return bool(fs.exists(path))
    try:
        fs.info(path)
    except FileNotFoundError as exc:
        if is_transient(exc):
            raise
        return False
    return True


async def exists_async(fs: Any, path: str) -> bool:
    """:func:`exists` for an asynchronous filesystem (a zarr store's), the same way: a HEAD
    over HTTP, whose 503 is raised (to be retried), not taken for a missing file."""
    if not _is_http(fs):
        return bool(await fs._exists(path))
    try:
        await fs._info(path)
    except FileNotFoundError as exc:
        if is_transient(exc):
            raise
        return False
    return True


def isfile(fs: Any, path: str) -> bool:
    """``fs.isfile(path)``; over HTTP, where every URL is a file, whether it exists (HEAD)."""
    return exists(fs, path) if _is_http(fs) else bool(fs.isfile(path))


def _is_http(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in READ_ONLY_PROTOCOLS


def not_found(
    url: str, storage_options: dict[str, Any] | None, what: str = "Reading"
) -> GeosegError:
    """The error for a URL that names nothing: the bucket is missing, or the object in it."""
    bucket = _missing_bucket(url, dict(storage_options or {}))
    public = public_url(url)
    if bucket is not None:
        return _bucket_missing(url, bucket, what)
    if _writing(what) or "output" in what:
        return RasterNotFoundError(
            f"{what} {public} failed: a folder or object it needs is missing. "
            "Check that the URL's parent location exists and is writable."
        )
    return RasterNotFoundError(
        f"No raster at {public}: nothing exists at that path. Check the URL (spelling, folder, "
        "file extension) and, for remote stores, the storage_options (endpoint, credentials)."
    )


def require_bucket(url: str, storage_options: dict[str, Any] | None, what: str) -> None:
    """Raise :class:`BucketNotFoundError` when ``url`` is on an object store without its bucket."""
    bucket = _missing_bucket(url, dict(storage_options or {}))
    if bucket is not None:
        raise _bucket_missing(url, bucket, what)


def _bucket_missing(url: str, bucket: str, what: str) -> BucketNotFoundError:
    return BucketNotFoundError(
        f"{what} {public_url(url)} failed: the bucket {bucket!r} does not exist (or not at "
        "this endpoint). Check the bucket name in the URL, and the endpoint and region in "
        "storage_options (client_kwargs.endpoint_url, region_name); create the bucket first if "
        "it is new."
    )


def _writing(what: str) -> bool:
    """Whether an operation named ``what`` ("Reading", "Writing", "Creating output", ...) writes:
    "Reading output" (a command that only reads one) does not."""
    return not what.startswith("Reading") and (what.startswith(("Writing", "Creating"))
                                                or "output" in what)


def _missing_bucket(url: str, storage_options: dict[str, Any]) -> str | None:
    """The URL's bucket if it is on an object store and that bucket does not exist."""
    if fsspec.utils.get_protocol(url) not in OBJECT_STORES:
        return None
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    bucket = path.split("/", 1)[0]
    try:
        return None if fs.exists(bucket) else bucket
    except Exception:  # noqa: BLE001 - the bucket cannot even be checked: say nothing about it
        return None


def disk_full(url: str, what: str, left: int, said: BaseException) -> StorageIOError:
    """The error for a write to ``url`` that failed (``said``) where the disk had only ``left``
    bytes left: a library that met the full disk said so in other words (GDAL's)."""
    return StorageIOError(f"{what} {public_url(url)} failed: the disk is full ({left:,} bytes "
                          f"left there; {reason(said, {})}). To fix: free space there (or raise "
                          "the quota), or choose another location, then run again.")


def _disk_failed(
    exc: BaseException, url: str, so: dict[str, Any], what: str
) -> StorageIOError:
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    fix = ("free space there (or raise the quota), or choose another location, then run again"
           if full else "check the disk or the mount, then run again")
    said = "the disk is full or over its quota" if full else "an input/output error"
    return StorageIOError(f"{what} {public_url(url)} failed: {said} ({reason(exc, so)}). "
                          f"To fix: {fix}.")


def _access_denied(
    exc: BaseException, url: str, so: dict[str, Any], what: str
) -> StorageAccessError:
    if fsspec.utils.get_protocol(url) in ("file", "local"):
        said = ("its file system is mounted read-only" if getattr(exc, "errno", None) == errno.EROFS
                else "permission denied")
        advice = ("The folder is read-only or not writable by this user: check its permissions "
                  "and mount, or choose another location." if _writing(what) else "This user may "
                  "not read or write it: check its permissions and its folder's.")
        return StorageAccessError(f"{what} {public_url(url)} failed: {said} ({reason(exc, so)}). "
                                  f"{advice}")
    if fsspec.utils.get_protocol(url) in READ_ONLY_PROTOCOLS:
        return StorageAccessError(
            f"{what} {public_url(url)} failed: access denied ({reason(exc, so)}). Check that the "
            "server serves this URL to you: the address, and any headers or credentials it needs "
            "(storage_options client_kwargs, e.g. headers or auth)."
        )
    action = (
        "write (s3:PutObject, s3:DeleteObject)"
        if _writing(what)
        else "read (s3:GetObject, s3:ListBucket)"
    )
    return StorageAccessError(
        f"{what} {public_url(url)} failed: access denied ({reason(exc, so)}). Check the "
        "credentials (storage_options key/secret or token, a profile, or the AWS_* / GOOGLE_* "
        f"environment variables) and that they may {action} at this location."
    )


def _bad_request(exc: BaseException, url: str, so: dict[str, Any], what: str
                 ) -> StorageAccessError:
    """The store refused the request itself as bad (HTTP 400). S3 answers so, without a body
    to a HEAD, a session token that is expired or not its own (s3fs: ``OSError`` EINVAL)."""
    cause = next((err for err in _chain(exc) if http_status(err) == 400), exc)
    http = fsspec.utils.get_protocol(url) in READ_ONLY_PROTOCOLS
    said = (f"{what} {public_url(url)} failed: the {'server' if http else 'store'} refused the "
            f"request as bad (HTTP 400; {reason(cause, so)}).")
    if http:
        return StorageAccessError(
            f"{said} Check the URL (an expired or altered signature in its query?) and any "
            "headers or credentials the server needs (storage_options client_kwargs).")
    return StorageAccessError(
        f"{said} Check the credentials: a session token (storage_options token, "
        "AWS_SESSION_TOKEN) may have expired, or not go with the key and secret: renew it, or "
        "drop it for long-term keys. Check too the endpoint (client_kwargs.endpoint_url, "
        "AWS_ENDPOINT_URL) and the region (client_kwargs.region_name, AWS_REGION).")


def _parameters_refused(exc: BaseException, url: str, so: dict[str, Any], what: str
                        ) -> ParameterError:
    """botocore's refusal of a request it would not even send (a bucket or key name S3 does
    not allow)."""
    said = redact.scrub(reason(exc, so), redact.url_secrets(url))
    return ParameterError(
        f"{what} {public_url(url)} failed: the S3 client refused the request as malformed "
        f"({clipped(said, 300)}). Check the bucket name in the URL (3 to 63 lowercase letters, "
        "digits, dots and hyphens) and the key.")


def _two_credentials(err: BaseException) -> bool:
    """aiohttp's refusal of a URL's user info beside an Authorization header."""
    return isinstance(err, ValueError) and "Cannot combine AUTHORIZATION header" in str(err)


def _making_client(err: BaseException) -> bool:
    """Whether ``err`` was raised while s3fs made its botocore client from the storage options
    (``S3FileSystem.set_session``: an unknown profile, an option or a value botocore does not
    take), not by a request to the store."""
    return not isinstance(err, OSError) and any(
        frame.f_code.co_name == "set_session" and frame.f_globals.get("__name__") == "s3fs.core"
        for frame, _ in traceback.walk_tb(err.__traceback__))


def _options_refused(err: BaseException, url: str, so: dict[str, Any], what: str
                     ) -> ParameterError:
    """The storage options could not make an S3 client (:func:`_making_client`); the error
    names the option or profile, never a value that may be secret."""
    said = (f"{what} {public_url(url)} failed: its storage options could not make an S3 client "
            f"({reason(err, so)}).")
    if type(err).__name__ == "ProfileNotFound":
        name = getattr(err, "kwargs", {}).get("profile")
        where = "storage_options profile" if so.get("profile") else "AWS_PROFILE"
        return ParameterError(
            f"{said} The profile {name!r} ({where}) is in none of the AWS configuration files. "
            "Give the name of a profile in ~/.aws/credentials or ~/.aws/config (or the files "
            "AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE name), or drop the profile and "
            "give key and secret.")
    return ParameterError(
        f"{said} An option has a name s3fs or botocore does not know, or a value it does not "
        "take: check its spelling and value. Top-level options are s3fs's (key, secret, token, "
        "profile, anon, endpoint_url, ...), config_kwargs botocore.config.Config's "
        "(connect_timeout, read_timeout, retries, s3, ...), client_kwargs the client's "
        "(endpoint_url, region_name, ...).")


def _no_credentials(exc: BaseException, url: str, so: dict[str, Any], what: str
                    ) -> StorageAccessError:
    """The store could not be asked at all: no credentials were found (botocore looks in
    storage_options, the environment, the profile files and the instance metadata)."""
    return StorageAccessError(
        f"{what} {public_url(url)} failed: no credentials were found for it ({reason(exc, so)}). "
        "Give them in storage_options (key and secret, or profile), in the AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY environment variables or in ~/.aws/credentials; for a public "
        "bucket, set storage_options anon: true."
    )


def _gave_up(
    exc: BaseException, url: str, so: dict[str, Any], what: str, attempts: int, seconds: float
) -> StorageUnavailableError:
    cause = next((err for err in _chain(exc) if _verdict(err)), exc)  # the 503, not its wrapper
    return StorageUnavailableError(
        f"{what} {public_url(url)} failed {attempts} time(s) in {seconds:.1f} s with transient "
        f"errors (last: {reason(cause, so)}). The store may be overloaded or unreachable: check "
        "the endpoint and the network, try again later, or allow more retries (GEOSEG_RETRIES, "
        "GEOSEG_RETRY_DELAY)."
    )


def _connection_refused(
    exc: BaseException, url: str, so: dict[str, Any], what: str
) -> StorageUnavailableError:
    errors = list(_chain(exc))
    cause = next((e for e in errors if hasattr(e, "host") and refused(e)), None)  # aiohttp's
    cause = cause or next(e for e in errors if refused(e))
    where = (f"{cause.host}:{cause.port}" if hasattr(cause, "host") else _endpoint(url, so))
    return StorageUnavailableError(
        f"{what} {public_url(url)} failed: the storage server at {where} refused the connection "
        f"({reason(cause, so)}); nothing listens there, so geoseg did not retry. Check "
        f"{_endpoint_setting(url)}, that the server is running, and any proxy or firewall in "
        "between."
    )


def _endpoint(url: str, so: dict[str, Any]) -> str:
    """The endpoint ``url`` is served from, in public form."""
    client = so.get("client_kwargs") if isinstance(so.get("client_kwargs"), dict) else {}
    endpoint = client.get("endpoint_url") or so.get("endpoint_url")
    if isinstance(endpoint, str):
        return public_url(endpoint)
    host = urllib.parse.urlsplit(public_url(url)).netloc
    return host or public_url(url)


def _endpoint_setting(url: str) -> str:
    if fsspec.utils.get_protocol(url) in OBJECT_STORES:
        return ("the endpoint's host and port (storage_options client_kwargs.endpoint_url, or "
                "AWS_ENDPOINT_URL)")
    return "the URL's host and port"


def reason(exc: BaseException, storage_options: dict[str, Any] | None = None) -> str:
    """A short description of ``exc`` for messages: its type and text (an HTTP error: its status
    and reason only), URLs in their public form, storage option values hidden."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and hasattr(exc, "message"):
        text = f"HTTP {status} {getattr(exc, 'message', '')}".strip()
    else:
        text = str(exc) or type(exc).__name__
    text = redact.scrub(text, redact.secrets_in(storage_options or {}, inside=True))
    return f"{type(exc).__name__}: {text[:300]}"


def is_local(url: str) -> bool:
    """Whether ``url`` is a local path (plain, or ``file://``)."""
    return fsspec.utils.get_protocol(url) in ("file", "local")


def fs_protocols(fs: Any) -> tuple[str, ...]:
    """The protocols an fsspec filesystem answers to (``("file", "local")``, ``("http",)``)."""
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def fs_is_local(fs: Any) -> bool:
    """Whether ``fs`` is the local disk."""
    return "file" in fs_protocols(fs)


def zarr_options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """zarr's ``storage_options`` keyword for ``url``: none for a local path. Storage options
    are for remote stores; fsspec, and so every other reader, ignores them on a local path,
    where zarr refuses them (and the refusal read as a corrupt file)."""
    if not storage_options or is_local(url):
        return {}
    return {"storage_options": storage_options}


def local_options_ignored(url: str, storage_options: dict[str, Any] | None, what: str) -> None:
    """Warn that ``storage_options`` given with the local path ``url`` (``what``: "input",
    "output") are ignored: a spec shared by local and remote runs may well carry them, so they
    are not an error, but a user who expected them to act is told."""
    if storage_options and is_local(url):
        log.warning("%s %s is a local path, so its storage_options are ignored: they apply to "
                    "remote URLs only (s3://, gs://, https://, ...).", what, public_url(url))


def check_writable(url: str) -> None:
    """Refuse an output URL whose protocol cannot be written (``http``, ``https``), or outside
    the allowed places (:func:`geoseg.io.allow.check_output_url`)."""
    protocol = fsspec.utils.get_protocol(url)
    if protocol in READ_ONLY_PROTOCOLS:
        raise ReadOnlyStorageError(
            f"Output {public_url(url)}: {protocol}:// is read-only in geoseg (HTTP has no "
            "standard way to write objects). Write to a local path or a writable store (s3://, "
            "gs://, az://, ...), then publish it over HTTP if you need to."
        )
    from geoseg.io import allow  # here: importing the geoseg.io package from remote would cycle

    allow.check_output_url(url)  # no '..', allowed schemes and buckets only


# --- GDAL reading through Python files -----------------------------------------------------------

_FAILURES: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "geoseg_gdal_failures", default=None
)


@contextlib.contextmanager
def guarded_reads() -> Iterator[None]:
    """Raise, on leaving, the first failure a :class:`GuardedContainer` file hid from GDAL inside,
    whether or not rasterio noticed (an empty read may even go unnoticed)."""
    failures: list[BaseException] = []
    token = _FAILURES.set(failures)
    try:
        yield
    except Exception:
        if not failures:
            raise
    finally:
        _FAILURES.reset(token)
    if failures:
        raise failures[0]  # as it was: its cause tells whether a retry may help


def _hide(exc: BaseException) -> None:
    failures = _FAILURES.get()
    if failures is not None:
        failures.append(exc)


class GuardedContainer(FileContainer):
    """An fsspec filesystem as rasterio's opener: files read ahead ``READ_BLOCK`` bytes (16 KiB,
    like GDAL's own), and no call lets an exception reach GDAL (see :func:`guarded_reads`)."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def open(self, path: str, mode: str = "rb", **kwds: Any) -> GuardedFile:
        try:
            return GuardedFile(self.fs.open(path, mode, block_size=READ_BLOCK, **kwds))
        except Exception as exc:
            _hide(exc)
            raise

    def isfile(self, path: str) -> bool:
        return bool(self._quietly(self.fs.isfile, path, default=False))

    def isdir(self, path: str) -> bool:
        return bool(self._quietly(self.fs.isdir, path, default=False))

    def ls(self, path: str) -> list[str]:
        """The names in a folder, or none where the store will not list it: a web server without
        an index page (HTTP 403/404) or a bucket readable without s3:ListBucket still serves its
        files. Only a transient failure is kept, to be retried."""
        try:
            names = self.fs.ls(path, detail=False)
        except Exception as exc:  # noqa: BLE001 - listing is optional: GDAL only looks for sidecars
            if is_transient(exc):
                _hide(exc)
            return []
        return [str(n).rstrip("/").rsplit("/", 1)[-1] for n in names]

    def mtime(self, path: str) -> int:
        modified = self._quietly(self.fs.modified, path, default=None)
        return int(modified.timestamp()) if modified is not None else 0

    def size(self, path: str) -> int:
        return int(self._quietly(self.fs.size, path, default=0) or 0)

    def rm(self, path: str) -> None:
        raise StorageAccessError(f"geoseg opens {path} read-only")

    @staticmethod
    def _quietly(fn: Callable[..., Any], path: str, *, default: Any, **kwargs: Any) -> Any:
        try:
            return fn(path, **kwargs)
        except NotImplementedError:
            return default
        except Exception as exc:  # noqa: BLE001 - a missing sidecar file is normal; others are kept
            if not isinstance(exc, FileNotFoundError) or is_transient(exc):
                _hide(exc)
            return default


class GuardedFile:
    """A file whose failing reads return ``b""`` and leave their error for :func:`guarded_reads`."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def read(self, size: int = -1) -> bytes:
        try:
            return self._f.read(size)
        except Exception as exc:  # noqa: BLE001 - GDAL must not see it; raised after the read
            _hide(exc)
            return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


# --- request timeouts ---------------------------------------------------------------------------


def request_options(protocol: str) -> dict[str, Any]:
    """Storage options geoseg gives every filesystem of ``protocol``, as the settings ask now:
    S3 connect and read timeouts with botocore's retries down to ``LIBRARY_ATTEMPTS``; for HTTP
    an aiohttp client whose socket connect and read have timeouts, and each answer a deadline
    (:func:`http_deadline`). Others: none."""
    if protocol not in ("s3", "s3a", "http", "https"):
        return {}
    connect, read = config.connect_timeout(), config.read_timeout()
    if protocol in ("s3", "s3a"):
        _one_s3fs_attempt()
        retries = {"mode": "standard", "total_max_attempts": LIBRARY_ATTEMPTS}
        return {"config_kwargs": {"connect_timeout": connect, "read_timeout": read,
                                  "retries": retries}}
    return {"get_client": functools.partial(_http_client, connect=connect, read=read)}


def http_deadline(read: float, size: int = 0) -> float:
    """Seconds an HTTP answer may take, from the request to its last byte: ``2 * read`` (40 s
    by default), and a second more for each :data:`MIN_HTTP_RATE` bytes of the body its
    ``Content-Length`` declares (``size``). The socket timeouts alone reset at every byte, so a
    server sending one byte a second held a read for ever.

    A fixed deadline would fail the largest requests geoseg makes at ordinary bandwidth: a
    model file is read whole (hundreds of MB; up to ``GEOSEG_MAX_MODEL_BYTES``), a stored chunk
    in one request (a few MiB, 64 MiB for the largest chunks tools write, up to
    ``GEOSEG_MAX_CHUNK_BYTES``). The assumption is that a working server sends at least
    1 MiB/s on average: a 500 MB model then has 40 s + about 8 minutes. Over a slower link,
    raise ``GEOSEG_READ_TIMEOUT``, which adds ``2 * MIN_HTTP_RATE`` bytes of allowance a second."""
    return 2 * read + max(size, 0) / MIN_HTTP_RATE


def _one_s3fs_attempt() -> None:
    """s3fs retries timeouts and throttling five times on its own, and knows no option for it:
    the loop here retries instead (its class is loaded, since a filesystem is being made)."""
    s3fs = sys.modules.get("s3fs")
    if s3fs is not None:
        s3fs.S3FileSystem.retries = 1


async def _http_client(*, connect: float, read: float, **kwargs: Any) -> Any:
    """fsspec's HTTP client, with socket timeouts and a deadline for each answer
    (:func:`http_deadline`) unless ``client_kwargs`` brings its own timeout."""
    import aiohttp

    if "timeout" not in kwargs:
        kwargs["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        kwargs.setdefault("response_class", _deadline_response(read))
    return aiohttp.ClientSession(**kwargs)


@functools.cache
def _deadline_response(read: float) -> type:
    """aiohttp's response class, each answer held to :func:`http_deadline` from its request:
    its status and headers within ``2 * read`` seconds, its body (``read()``, as fsspec and
    zarr read one) by then plus the time its declared size allows; a body of no declared size
    (chunked) by then plus the time what has come so far allows, and one MiB more."""
    import aiohttp

    class DeadlineResponse(aiohttp.ClientResponse):
        _asked = 0.0

        async def start(self, connection: Any) -> Any:
            self._asked = asyncio.get_running_loop().time()
            return await asyncio.wait_for(super().start(connection), http_deadline(read))

        async def read(self) -> bytes:
            if self.content_length is None:  # chunked: no size declared
                return await self._paced(asyncio.ensure_future(super().read()))
            left = self._asked + http_deadline(read, self.content_length)
            left -= asyncio.get_running_loop().time()
            return await asyncio.wait_for(super().read(), max(left, 0.0))

        async def _paced(self, body: asyncio.Future[bytes]) -> bytes:
            """A body of undeclared size, held to the deadline of what has come so far and one
            more :data:`MIN_HTTP_RATE` of bytes: a steady stream goes on, a trickle stops."""
            loop = asyncio.get_running_loop()
            while True:
                come = self.content.total_bytes + MIN_HTTP_RATE
                left = self._asked + http_deadline(read, come) - loop.time()
                if left <= 0:
                    body.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await body
                    raise TimeoutError
                done, _ = await asyncio.wait({body}, timeout=min(left, 1.0))
                if done:
                    return body.result()

    return DeadlineResponse


class RequestDefaults(MutableMapping):
    """fsspec's configuration of one protocol (``fsspec.config.conf[protocol]``) over
    :func:`request_options`, computed at each use: what the user configured for fsspec, and
    what a caller passes, still win."""

    def __init__(self, protocol: str, configured: dict[str, Any]) -> None:
        self.protocol, self.configured = protocol, configured

    def _merged(self) -> dict[str, Any]:
        return {**request_options(self.protocol), **self.configured}

    def __getitem__(self, key: str) -> Any:
        return self._merged()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def __setitem__(self, key: str, value: Any) -> None:
        self.configured[key] = value

    def __delitem__(self, key: str) -> None:
        del self.configured[key]


def install_request_defaults() -> None:
    """Give every S3 and HTTP filesystem this process makes geoseg's timeouts (idempotent)."""
    for protocol in ("s3", "s3a", "http", "https"):
        current = fsspec.config.conf.get(protocol)
        if not isinstance(current, RequestDefaults):
            fsspec.config.conf[protocol] = RequestDefaults(protocol, dict(current or {}))


install_request_defaults()
