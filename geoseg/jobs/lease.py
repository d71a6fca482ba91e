"""Leases: at most one run writes an output at a time, across processes and machines.

A lease is a small JSON object beside the output (``OUT.zarr.lease``) naming its
owner (host, process id and a random id) and when it expires. A run takes it
before writing and renews it while it writes; another run finding it held leaves
the output alone; an expired lease (its owner died) is taken over. Beside, not
inside, the output: replacing an output must not remove its lease.

How atomic taking it is depends on the store:

- local files: created with a hard link (exclusive, and the object is complete
  the moment it appears); an expired lease is taken over under a swap guard
  (``OUT.zarr.lease.swap``, created exclusively): its holder checks that the lease
  is still the expired one it read and replaces it with ``os.replace``;
- S3 (s3fs): conditional writes: ``If-None-Match: *`` to create, ``If-Match``
  with the ETag read to take over or renew (AWS S3, MinIO and moto support them);
- any other fsspec store: best effort (write, read back, check the owner).

Releasing reads the lease and deletes it if it is still this owner's. Clocks of
the machines sharing an output are assumed to agree to well under the lease's
length. Leases hold no credentials: only the owner, the batch name, the
output's public URL and times.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import fsspec

from geoseg import logs
from geoseg.core import jsontext
from geoseg.core.processes import pid_namespace, process_gone
from geoseg.core.text import clipped, whole_number
from geoseg.core.urls import public_url
from geoseg.errors import (
    LeaseLostError,
    OutputBusyError,
    OutputLocationError,
    ParameterError,
    StorageUnavailableError,
)
from geoseg.io import remote
from geoseg.io.readers.probe import mode_kind

SUFFIX = ".lease"
GUARD_STALE = 30.0  # seconds after which a swap guard is taken to be a dead process's
# the most of a lease object ever read: a lease takes a few hundred bytes of JSON, so one that
# is larger is no geoseg lease; reading no further bounds time and memory, whatever is there
MAX_LEASE_BYTES = 64 * 1024


def new_owner_id() -> str:
    """``host-pid-random``: unique to this process and this run."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


NAME_MAX_BYTES = 255  # a file or folder name, at most (ext4, XFS, btrfs, APFS, NTFS)
GUARD_SUFFIX = ".swap"  # the swap guard beside a local lease: its longest name


def check_name_lengths(output_url: str) -> None:
    """Refuse (:class:`OutputLocationError`) a local output whose path holds a name longer than
    a file system takes, counting the lease and swap guard made beside it
    (``OUT.zarr.lease.swap``): found before a run, not as ``[Errno 36] File name too long``
    once it has begun. Remote outputs have no such limit per name."""
    if not remote.is_local(output_url):
        return
    path = fsspec.core.strip_protocol(output_url).rstrip("/")
    names = [*Path(path).parts[:-1], Path(path).name + SUFFIX + GUARD_SUFFIX]
    longest = max(names, key=_name_bytes)
    if _name_bytes(longest) <= NAME_MAX_BYTES:
        return
    which = (f"its own name with {SUFFIX + GUARD_SUFFIX!r} appended, for the lease kept beside "
             "it" if longest == names[-1] else "a folder in its path")
    raise OutputLocationError(
        f"The output {clipped(public_url(output_url), 120)} needs a name of "
        f"{_name_bytes(longest)} bytes ({which}: {clipped(longest, 60)!r}); a file system takes "
        f"at most {NAME_MAX_BYTES} bytes per file or folder name. Use a shorter output name: a "
        "shorter output.url (a job) or output.url_template (a batch; or shorter input names).")


def _name_bytes(name: str) -> int:
    return len(os.fsencode(name))


def lease_url(output_url: str) -> str:
    """Where the lease on ``output_url`` lives: beside it, with ``.lease`` appended. A local
    output's path is resolved first (symbolic links in its folders followed), so that runs
    reaching one output by two paths take one lease."""
    if remote.is_local(output_url):
        return os.path.realpath(fsspec.core.strip_protocol(output_url).rstrip("/")) + SUFFIX
    return output_url.rstrip("/") + SUFFIX


MAX_LEASE_SECONDS = 7 * 24 * 3600.0  # the longest lease a run or batch takes (lease_seconds)
CLOCK_SKEW = 3600.0  # how far ahead of this machine's clock another's may be


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease object says: who holds it and until when (seconds since the epoch)."""

    owner: str
    created: float
    expires: float
    batch: str = ""
    output: str = ""
    pid_namespace: str = ""  # the owner's (Linux); "" where unknown (another system, older leases)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires

    def owner_gone(self) -> bool:
        """Whether the owner is a process of this machine that no longer exists (killed, or
        crashed without releasing): its lease need not be waited out. Only a process of this
        PID namespace can be looked up: containers sharing a host name (``--network host``)
        each number their processes from 1, so another's pid says nothing here."""
        host, _, rest = self.owner.rpartition("-")[0].rpartition("-")
        pid = whole_number(rest) or 0
        if host != socket.gethostname() or pid <= 0 or pid == os.getpid() \
                or self.pid_namespace not in ("", pid_namespace()):  # "": a lease of before
            return False
        return process_gone(pid)

    def stale(self) -> bool:
        """Expired, held by a process of this machine that is gone, or expiring later than any
        lease geoseg takes (``expires: 9999-...``, written by hand or by another tool), which
        would otherwise keep every run off the output for ever."""
        beyond = self.expires - time.time() > MAX_LEASE_SECONDS + CLOCK_SKEW
        return self.expired() or self.owner_gone() or beyond

    def until(self) -> str:
        """When it expires, as people read it (UTC)."""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires))

    def to_bytes(self) -> bytes:
        return json.dumps({"owner": self.owner, "batch": self.batch, "output": self.output,
                           "pid_namespace": self.pid_namespace,
                           "created": _iso(self.created), "expires": _iso(self.expires),
                           "renewed": _iso(time.time())}, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        """The record in ``data``; an unreadable object counts as an expired lease of nobody."""
        try:
            raw = jsontext.loads(data)
            return cls(str(raw["owner"]), _epoch(raw["created"]), _epoch(raw["expires"]),
                       str(raw.get("batch", "")), str(raw.get("output", "")),
                       str(raw.get("pid_namespace", "")))
        except (ValueError, KeyError, TypeError):
            return cls("unreadable lease", 0.0, 0.0)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


Token = Any  # what a store compares to decide that a lease is unchanged since it was read


class LeaseStore(Protocol):
    """The four operations a lease needs from where it is stored."""

    def create(self, data: bytes) -> Token | None:
        """Write ``data`` if no lease exists; its token, or ``None`` if one exists."""

    def read(self) -> tuple[bytes, Token] | None:
        """The lease's bytes and token, or ``None`` if there is none."""

    def swap(self, data: bytes, token: Token) -> Token | None:
        """Replace the lease with ``data`` if it is still the one ``token`` was read from."""

    def delete(self, token: Token) -> None:
        """Delete the lease if it is still the one ``token`` was read from."""


class LocalStore:
    """Lease files on a local (or POSIX network) filesystem; the token is the file's bytes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def create(self, data: bytes) -> Token | None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        try:
            os.link(tmp, self.path)  # fails if the lease exists; the new one is complete at once
        except FileExistsError:
            return None
        except OSError as exc:  # a filesystem without hard links: exclusive create instead
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return self._create_exclusive(data)
        finally:
            os.unlink(tmp)
        return data

    def _create_exclusive(self, data: bytes) -> Token | None:
        try:
            with open(self.path, "xb") as f:
                f.write(data)
        except FileExistsError:
            return None
        return data

    def read(self) -> tuple[bytes, Token] | None:
        """The lease's first bytes (:func:`read_local_lease`), also its token; ``None`` if there
        is none."""
        data = read_local_lease(self.path)
        return None if data is None else (data, data)

    def swap(self, data: bytes, token: Token) -> Token | None:
        """Replace the lease read as ``token`` by ``data``, under the swap guard: only its
        holder replaces a lease, so the check and the (atomic) replace see the same one, and
        the lease never goes absent meanwhile (a plain create would slip into such a gap)."""
        if not self._take_guard():
            return None  # another process is taking it over right now
        return self._replace_guarded(data, token)

    def renew(self, data: bytes, token: Token) -> Token | None:
        """Rewrite this owner's lease in place, under the swap guard as :meth:`swap`: a
        takeover landing between the check and the replace would otherwise be overwritten,
        and two runs would write. A guard another swap holds now is an error, not a loss:
        the renewal is retried (until the lease expires)."""
        if not self._take_guard():
            raise OutputBusyError(f"{self.path}: another process is replacing this lease now; "
                                  "the renewal is tried again")
        return self._replace_guarded(data, token)

    def _replace_guarded(self, data: bytes, token: Token) -> Token | None:
        """Replace the lease by ``data`` if it still holds ``token``, then drop the guard."""
        try:
            current = self.read()
            if current is None or current[1] != token:
                return None
            os.replace(self._write_tmp(data), self.path)
            return data
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._guard)

    @property
    def _guard(self) -> str:
        return self.path + GUARD_SUFFIX

    def _take_guard(self) -> bool:
        """Create the swap guard exclusively; a guard left by a process that died while
        swapping (older than :data:`GUARD_STALE` seconds) is cleared first. Two processes
        clearing the same dead guard at the same instant could both get one: that needs a
        process to die within the microseconds a swap lasts, then two takers at once."""
        for _ in range(2):
            try:
                with open(self._guard, "xb"):
                    return True
            except FileExistsError:
                try:
                    age = time.time() - os.stat(self._guard).st_mtime
                except FileNotFoundError:
                    continue
                if age < GUARD_STALE:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._guard)
        return False

    def delete(self, token: Token) -> None:
        """Under the swap guard, as :meth:`renew`: a takeover landing between the check and the
        unlink would lose its new lease. A guard held now means the lease is being replaced:
        it is left to the process replacing it."""
        if not self._take_guard():
            return
        try:
            current = self.read()
            if current is not None and current[1] == token:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._guard)

    def _write_tmp(self, data: bytes) -> str:
        """``data`` in a new file beside the lease, whose name is short whatever the lease's
        (the lease's own name with a long suffix would pass the file system's limit first)."""
        tmp = os.path.join(os.path.dirname(self.path), f".geoseg-lease-{uuid.uuid4().hex[:16]}.tmp")
        with open(tmp, "xb") as f:
            f.write(data)
        return tmp


def read_local_lease(path: str) -> bytes | None:
    """At most :data:`MAX_LEASE_BYTES` + 1 bytes of the local lease file at ``path``, ``None``
    if there is none. More than a lease holds (someone's file at its path) reads as the
    unreadable lease it is (:meth:`LeaseRecord.from_bytes`: expired, taken over), never whole.
    Opened without blocking and checked once open: a FIFO, device or folder there (which would
    hang or fail every run) raises :class:`OutputLocationError` naming the path, unread."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise _not_a_lease(path, "a folder") from None
    try:
        kind = mode_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _not_a_lease(path, kind)
        data = _read_at_most(fd, MAX_LEASE_BYTES + 1)
    finally:
        os.close(fd)
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd`` (fewer at its end)."""
    parts, left = [], limit
    while left > 0:
        part = os.read(fd, left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _not_a_lease(path: str, kind: str) -> OutputLocationError:
    """The error for a lease path holding ``kind`` (a FIFO, a device, a folder), not a file."""
    return OutputLocationError(
        f"The lease path {path} is {kind}, not a file: geoseg keeps the output's lease there "
        "(a small JSON file beside the output), and reading this would block or fail, so no run "
        "can take the lease or tell who holds it. Nothing was read or written. Remove it (or "
        "move it elsewhere), then run the command again.")


class _FsspecStore:
    """A lease object at ``path`` in an fsspec store; subclasses say how it is written."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path

    def read(self) -> tuple[bytes, Token] | None:
        raise NotImplementedError

    def delete(self, token: Token) -> None:
        """Remove the lease only while it still holds ``token`` (not one a newer run took over)."""
        current = self.read()
        if current is not None and current[1] == token:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)


class S3Store(_FsspecStore):
    """Lease objects in S3, written with conditional requests; the token is the ETag."""

    def create(self, data: bytes) -> Token | None:
        try:
            return self.fs.pipe_file(self.path, data, mode="create")["ETag"]
        except FileExistsError:
            return None
        except OSError as exc:
            return _precondition_failed(exc)

    def read(self) -> tuple[bytes, Token] | None:
        from s3fs.utils import FileExpired  # here, not at import: s3fs brings botocore (0.3 s)

        for _ in range(10):  # s3fs reads with If-Match on the ETag it saw: retry if it changed
            self.fs.invalidate_cache(self.path)
            try:
                with self.fs.open(self.path, "rb", block_size=MAX_LEASE_BYTES + 1,
                                  cache_type="none") as f:  # one ranged GET, never the whole
                    return f.read(MAX_LEASE_BYTES + 1), f.details["ETag"]
            except FileNotFoundError:
                return None
            except FileExpired:
                continue
        raise StorageUnavailableError(f"the lease {self.path} kept changing while it was read "
                                      "(another run renewing it); try again later")

    def swap(self, data: bytes, token: Token) -> Token | None:
        try:
            return self.fs.pipe_file(self.path, data, IfMatch=token)["ETag"]
        except FileNotFoundError:
            return None
        except OSError as exc:
            return _precondition_failed(exc)

    renew = swap


def _precondition_failed(exc: OSError) -> None:
    """Return (``None``: not written) on a failed condition (412, or 409 for two conditional
    writes at once); raise anything else."""
    if exc.errno != errno.EINVAL and "ConditionalRequestConflict" not in str(exc):
        raise exc


class BestEffortStore(_FsspecStore):
    """Any other fsspec store: check, write, read back. Two runs at the same instant may both
    believe they hold the lease; use local files or S3 where that matters."""

    def create(self, data: bytes) -> Token | None:
        if self.read() is not None:
            return None
        return self._write_checked(data)

    def read(self) -> tuple[bytes, Token] | None:
        self.fs.invalidate_cache(self.path)
        try:
            data = self.fs.cat_file(self.path, start=0, end=MAX_LEASE_BYTES + 1)
        except FileNotFoundError:
            return None
        return data, data

    def swap(self, data: bytes, token: Token) -> Token | None:
        current = self.read()
        if current is None or current[1] != token:
            return None
        return self._write_checked(data)

    renew = swap

    def _write_checked(self, data: bytes) -> Token | None:
        self.fs.pipe_file(self.path, data)
        time.sleep(0.05)  # let a competing write land before reading back
        current = self.read()
        return data if current is not None and current[0] == data else None


def store_for(url: str, storage_options: dict[str, Any] | None = None) -> LeaseStore:
    """The lease store that suits where ``url`` is."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if "file" in protocols or "local" in protocols:
        return LocalStore(path)
    if protocols & {"s3", "s3a"}:
        return S3Store(fs, path)
    return BestEffortStore(fs, path)


class Lease:
    """The lease on one output, as seen by one owner.

    ``acquire`` takes it (or takes over an expired one); ``renewing`` keeps it
    alive in a background thread while a job writes and releases it at the end,
    also when the job fails. ``holder`` is the record of whoever held it when
    ``acquire`` last failed.
    """

    def __init__(self, output_url: str, storage_options: dict[str, Any] | None = None, *,
                 owner: str, seconds: float, batch: str = "") -> None:
        if not 0 < seconds <= MAX_LEASE_SECONDS:
            raise ParameterError(f"a lease lasts a positive number of seconds up to "
                                 f"{MAX_LEASE_SECONDS:g} (a week); received {seconds}. Give "
                                 "seconds in that range (a batch spec's lease_seconds).")
        check_name_lengths(output_url)
        self.url = lease_url(output_url)
        self.output = public_url(output_url)
        self.owner, self.seconds, self.batch = owner, seconds, batch
        self.holder: LeaseRecord | None = None
        self.lost = threading.Event()
        self._storage_options = dict(storage_options or {})
        self._store = store_for(self.url, storage_options)
        self._token: Token | None = None
        self._created = 0.0

    @property
    def held(self) -> bool:
        return self._token is not None and not self.lost.is_set()

    def _record(self, created: float | None = None) -> LeaseRecord:
        now = time.time()
        return LeaseRecord(self.owner, now if created is None else created, now + self.seconds,
                           self.batch, self.output, pid_namespace())

    def acquire(self, wait: float = 0.0, poll: float = 1.0) -> bool:
        """Take the lease, waiting up to ``wait`` seconds for another owner to release it."""
        deadline = time.monotonic() + wait
        while True:
            if self._try_acquire():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(poll, left))

    def _try_acquire(self) -> bool:
        for _ in range(5):  # the lease may change between looking and acting; look again
            record = self._record()
            token = self._store.create(record.to_bytes())
            if token is not None:
                self._token, self._created, self.holder = token, record.created, None
                return True
            current = self._store.read()
            if current is None:
                continue
            self.holder = LeaseRecord.from_bytes(current[0])
            if not self.holder.stale():
                return False
            _warn_if_oversized(current[0], public_url(self.url))
            token = self._store.swap(record.to_bytes(), current[1])
            if token is not None:
                self._token, self._created = token, record.created
                return True
        return False

    def renew(self) -> bool:
        """Push the expiry ``seconds`` ahead; ``False`` (and ``lost`` set) if it is not ours.
        Raises what the store raises when it cannot tell now (unreachable, or on a local disk
        another process replacing the lease this instant): the renewal thread tries again."""
        if self._token is None or self.lost.is_set():
            return False
        data = self._record(self._created).to_bytes()
        renew = getattr(self._store, "renew", self._store.swap)
        token = renew(data, self._token)
        if token is None:
            self.lost.set()
            return False
        self._token = token
        return True

    def release(self) -> None:
        """Delete the lease if it is still ours; a no-op if it is not held. A store that fails
        raises a geoseg storage error (unreachable, access denied, ...) naming the lease."""
        if self._token is not None:
            with remote.storage_errors(self.url, self._storage_options, "Releasing the lease"):
                self._store.delete(self._token)
        self._token = None

    def release_quietly(self) -> None:
        """:meth:`release` while another error is on its way to the user: a failure to release
        is logged (scrubbed), never put in that error's place; the lease expires by itself."""
        try:
            self.release()
        except Exception as exc:  # noqa: BLE001 - the error already raised is the one to show
            logs.log.warning(f"the lease on {self.output} could not be released "
                             f"({remote.reason(exc, self._storage_options)}); it expires by itself "
                             f"within {self.seconds:g} s")

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another run has taken the lease over."""
        if self.lost.is_set():
            raise LeaseLostError(_lost(self.output, self.seconds))

    def fence(self) -> Fence:
        """What this run's tasks call before each write (:attr:`OutputTarget.fence`)."""
        return Fence(self.url, self.owner, self.output, self.seconds, self._storage_options)

    @contextlib.contextmanager
    def renewing(self) -> Iterator[Lease]:
        """Renew every third of the lease's length while the block runs; release at the end. When
        the block fails, its error is the one raised: a failure to release too is only logged."""
        stop = threading.Event()
        thread = threading.Thread(target=self._renew_until, args=(stop,), daemon=True,
                                  name=f"lease-renewal {self.output}")
        thread.start()
        failed = True
        try:
            yield self
            failed = False
        finally:
            stop.set()
            thread.join()
            if failed:
                self.release_quietly()
            else:
                self.release()

    def _renew_until(self, stop: threading.Event) -> None:
        """Renew every third of the lease's length until ``stop``. A store that fails is tried
        again until the lease would have expired (then it counts as lost); the first failure of
        a streak is logged, why included, as is the renewal that ends it: the run's error once
        the lease is lost can only say that it expired."""
        expires, failing = time.time() + self.seconds, False
        while not stop.wait(self.seconds / 3):
            try:
                if not self.renew():
                    return
            except Exception as exc:  # noqa: BLE001 - no answer from the store: retry until expiry
                if not failing:
                    logs.log.warning(f"the lease on {self.output} could not be renewed "
                                     f"({remote.reason(exc, self._storage_options)}); trying "
                                     f"again every {self.seconds / 3:g} s until it expires at "
                                     f"{time.strftime('%H:%M:%S UTC', time.gmtime(expires))}")
                failing = True
                if time.time() >= expires:
                    self.lost.set()
                    return
                continue
            if failing:
                logs.log.info(f"the lease on {self.output} is renewed again")
            expires, failing = time.time() + self.seconds, False


def _warn_if_oversized(data: bytes, path: str) -> None:
    """Say so when the object about to be replaced as a stale lease is larger than any lease:
    someone's file at the lease path, not a lease, which the run replaces."""
    if len(data) > MAX_LEASE_BYTES:
        logs.log.warning(f"the lease file {path} holds more than {MAX_LEASE_BYTES // 1024} KiB, "
                         "more than any lease: it is no geoseg lease, so it counts as an expired "
                         "one of nobody, and this run replaces it")


def _lost(output: str, seconds: float) -> str:
    return (f"The lease on {output} was taken over by another run (it expired: this run could "
            f"not renew it in time); stopped writing, and the output is that run's now (geoseg "
            f"status shows it). In a batch, raise lease_seconds (now {seconds:g}) if jobs stall "
            "longer than a third of it, then run it again.")


@dataclass(frozen=True)
class Fence:
    """A run's check, made by its tasks on the workers before each write, that the lease on
    the output is still its own: a run that lost it while tasks were in flight (stalled, then
    taken over) must write nothing into the next owner's output, nor mark anything done there.
    One small read of the lease object per write."""

    url: str
    owner: str
    output: str
    seconds: float
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self) -> None:
        current = self._lease_bytes()
        if current is None or LeaseRecord.from_bytes(current).owner != self.owner:
            raise LeaseLostError(_lost(self.output, self.seconds))

    def _lease_bytes(self) -> bytes | None:
        """The lease's first bytes, as :meth:`LocalStore.read` reads them (bounded, a FIFO
        refused unread), or one ranged GET from byte 0 (no size asked first); ``None`` if there
        is none. A lease is small: more than :data:`MAX_LEASE_BYTES` is never read."""
        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        if remote.fs_is_local(fs):
            return read_local_lease(path)
        try:
            return fs.cat_file(path, start=0, end=MAX_LEASE_BYTES + 1)
        except FileNotFoundError:
            return None


@contextlib.contextmanager
def taken(output_url: str, storage_options: dict[str, Any] | None, *, seconds: float,
          refused: str) -> Iterator[Lease]:
    """A lease of a new owner on ``output_url``, renewed while the block runs and released at
    its end. When another run holds it, :class:`OutputBusyError` names that run and until when,
    then says ``refused``: what was not done and what to do."""
    lease = Lease(output_url, storage_options, owner=new_owner_id(), seconds=seconds)
    with remote.storage_errors(lease_url(output_url), dict(storage_options or {}),
                               "Taking the lease"):  # no credentials, an unreachable store...
        acquired = lease.acquire()
    if not acquired:
        holder = lease.holder
        until = holder.until() if holder else "?"
        raise OutputBusyError(f"Another run is writing {lease.output} (lease held by "
                              f"{holder.owner if holder else 'unknown'}, until {until}); {refused}")
    with lease.renewing():
        yield lease


def read_lease(output_url: str,
               storage_options: dict[str, Any] | None = None) -> LeaseRecord | None:
    """The lease on ``output_url`` as it is now, or ``None`` if there is none."""
    current = store_for(lease_url(output_url), storage_options).read()
    return None if current is None else LeaseRecord.from_bytes(current[0])
