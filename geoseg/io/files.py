"""Single files geoseg writes (scores, report pages, pictures, model files, run records, tables,
exported GeoTIFFs and NIfTI), each checked before any work: an allowed place (the outputs' own
rules, :mod:`geoseg.io.allow`), no file replaced without ``--overwrite``, never a folder, and a
folder there that takes files; then written whole or not at all (:func:`staged_file`,
:func:`write_whole`)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from geoseg import budgets
from geoseg.core import redact
from geoseg.core.processes import pid_namespace, process_gone
from geoseg.core.urls import public_url
from geoseg.errors import (
    GeosegError,
    OutputExistsError,
    OutputLocationError,
    RasterNotFoundError,
    StorageAccessError,
)
from geoseg.io import remote
from geoseg.io.allow import overlapping
from geoseg.io.readers.probe import special_file
from geoseg.io.remote import check_writable, translate

# a folder in which a file is written before it is renamed into place (left behind only by a
# process killed meanwhile), and the names earlier versions gave it
STAGING_PREFIX = ".geoseg-staged-"
STAGING_PREFIXES = (STAGING_PREFIX, ".geoseg-export-")
# a staging folder nothing has changed in for this long is left over, whoever made it
STALE_STAGING_SECONDS = 24 * 3600
# after the prefix, a staging folder's name says who writes in it: "<pid>@<host>-<random>"
_OWNER = re.compile(r"(\d+)@(.+)-[^-]*")


def small_file(url: str, what: str, error: type[GeosegError], advice: str,
               storage_options: dict[str, Any] | None = None) -> bytes:
    """The bytes of a small document geoseg reads whole (a run record, scores, a catalog), measured
    before they are read: a local file by ``stat`` (a FIFO or device in its place refused as
    ``error``, unread: reading it would block or never end), a remote one read no further than
    ``GEOSEG_MAX_METADATA_BYTES`` allows. ``what`` names it in the refusals, ``advice`` ends
    the one for its size; a file that is not there raises :class:`FileNotFoundError`."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    local = remote.fs_is_local(fs)
    kind = special_file(path) if local else None
    if kind is not None:
        raise error(f"{what} is {kind}, not a file: reading it would block or never end. "
                    "Give the path of a file.")
    data = None if local else fs.cat_file(path, start=0, end=budgets.metadata_read_limit())
    n_bytes = os.stat(path).st_size if local else len(data)
    budgets.check(n_bytes, budgets.MAX_METADATA_BYTES,
                  f"{what} holds {budgets.size(n_bytes)} or more", advice)
    return fs.cat_file(path) if local else data


def new_file(url: str, overwrite: bool) -> None:
    """Refuse a file path outside the places outputs may go (``http``, ``..``, a scheme or
    bucket not allowed), where something already is unless ``overwrite``, or that is a folder:
    geoseg replaces no file it was not asked to."""
    check_writable(url)
    fs, path = fsspec.core.url_to_fs(url)
    if fs.isdir(path):
        raise OutputExistsError(f"{redact.scrub(url)} is a folder; give a file path to write.")
    if fs.exists(path) and not overwrite:
        raise OutputExistsError(f"{redact.scrub(url)} already exists; nothing was written. Give "
                                "--overwrite to replace it, or another path.")


def writable_file(url: str, overwrite: bool, option: str) -> None:
    """:func:`new_file`, and a file that can be made there: its folder exists and takes files.
    ``option`` names the command-line option that gave ``url``."""
    new_file(url, overwrite)
    fs, path = fsspec.core.url_to_fs(url)
    if not remote.fs_is_local(fs):
        return  # object stores: no folders to make, and their rights show when writing
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        said = ("a file, not a folder" if os.path.exists(folder) else "a folder that does not exist")
        raise OutputLocationError(f"{option} {redact.scrub(url)}: received a path in {said} "
                                  f"({folder}); expected a file in an existing folder. Create the "
                                  "folder first, or give another path.")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path)
                                                   and not os.access(path, os.W_OK)):
        raise StorageAccessError(f"{option} {redact.scrub(url)}: received a path geoseg may not "
                                 "write (permission denied); expected a writable place. Give "
                                 "another path.")


def refuse_over_read(url: str, option: str, read: Sequence[tuple[str | None, str]]) -> None:
    """Refuse a file ``url`` (given by the command-line ``option``) that is one of the places
    the command reads (``(place, what it is)``), lies inside one or holds one, even with
    --overwrite: writing it would replace a run record, or put a file into a store it scores."""
    for place, what in read:
        if place and overlapping(url, None, place, None):
            raise OutputExistsError(
                f"{option} {public_url(url)}: received the {what} {public_url(place)} this "
                "command reads, or a path inside it or holding it; expected a file outside it. "
                "Nothing was written: give another path.")


def check_creatable(url: str, what: str, *, store: bool = False) -> None:
    """Refuse, before any long work, a ``url`` no file can be written at: outside the allowed
    places (:func:`geoseg.io.remote.check_writable`), locally under a file or in a folder
    that takes no new files, or a local folder (or a link to one) where a file is to go.
    ``store``: ``url`` is a store (a Zarr folder), which may be there. ``what`` names the
    setting that gave it."""
    try:
        check_writable(url)
        probe_local_folder(url)
        if not store:
            _refuse_folder(url)
    except GeosegError as exc:
        raise type(exc)(f"{what}: {exc}") from None


def _refuse_folder(url: str) -> None:
    if fsspec.utils.get_protocol(url) not in ("file", "local"):
        return
    path = fsspec.core.strip_protocol(url)
    if os.path.isdir(path):
        link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise OutputExistsError(f"Cannot write {public_url(url)}: it is a folder{link}; expected "
                                "the path of a file. Choose another path. Nothing was written.")


def same_file(a: str, b: str) -> bool:
    """Whether two URLs or paths name one file (local paths compared once resolved)."""
    fa, pa = fsspec.core.url_to_fs(a)
    fb, pb = fsspec.core.url_to_fs(b)
    if type(fa) is not type(fb):
        return False
    if remote.fs_is_local(fa):
        return os.path.realpath(pa) == os.path.realpath(pb)
    return pa.rstrip("/") == pb.rstrip("/")


def write_whole(url: str, content: bytes | str | Callable[[IO[bytes]], None], *,
                storage_options: dict[str, Any] | None = None, what: str = "Writing",
                exclusive: bool = False) -> None:
    """Write ``content`` (bytes, text as UTF-8, or a function writing into a binary file) at
    ``url``, whole or not at all (:func:`staged_file`), its folder created if needed: a failure
    part-way (a full disk) leaves the file that was there, or none, never a truncated one.
    ``exclusive``: never replace a file there. A storage failure is a geoseg error saying
    ``what`` failed on ``url``."""
    so = dict(storage_options or {})
    with remote.storage_errors(url, so, what):
        fs, path = fsspec.core.url_to_fs(url, **so)
        if not remote.fs_is_local(fs):  # made whole in memory, then one put: nothing
            buffer = io.BytesIO()  # staged on the local disk, whose space is not the store's
            _put(buffer, content)
            if exclusive and fs.exists(path):
                raise _existing(url)
            _retried(fs.pipe_file, path, buffer.getvalue(), url=url, options=so, what=what)
            return
        with staged_file(url, so, overwrite=not exclusive) as staged, open(staged, "wb") as file:
            _put(file, content)


def _put(file: IO[bytes], content: bytes | str | Callable[[IO[bytes]], None]) -> None:
    if callable(content):
        content(file)
    else:
        file.write(content.encode() if isinstance(content, str) else content)


def probe_local_folder(dest: str) -> None:
    """Refuse, before any work, a local ``dest`` under a file, or whose nearest existing folder
    does not take new files (read-only, no permission, or a special file system such as
    ``/proc``): a scratch folder is made there and removed at once. Its missing folders may be
    made later. Remote destinations are not probed (that would write)."""
    if fsspec.utils.get_protocol(dest) not in ("file", "local"):
        return
    path = Path(fsspec.core.strip_protocol(dest))
    _refuse_dangling(dest, path)
    existing = next(p for p in (path.parent, *path.parent.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise OutputLocationError(
            f"Cannot write {public_url(dest)}: {existing} is a file, not a folder; expected a path "
            "inside a folder. Choose another path. Nothing was written.")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".geoseg-probe-"))
    except OSError as exc:
        raise unwritable(exc, dest, existing) from None


def _refuse_dangling(dest: str, path: Path) -> None:
    """Refuse a ``path`` that leads through a link to nothing: itself a link into a folder that
    is not there, or under a link to a folder that is not there (an unmounted share). Writing
    through it would make those folders on this disk."""
    for part in (path, *path.parents):
        if not os.path.lexists(part):
            continue
        if not part.is_symlink():
            return
        target = Path(os.path.realpath(part))
        needed = target.parent if part == path else target
        if needed.is_dir():
            return
        said = "is a file, not a folder" if needed.exists() else "does not exist"
        raise OutputLocationError(
            f"Cannot write {public_url(dest)}: the link {part} leads to {target}, but {needed} "
            f"{said} (an unmounted share?); expected a link into an existing folder. Mount or "
            "create it, or choose another path. Nothing was written.")


def unwritable(exc: OSError, dest: str, folder: Path | str) -> GeosegError:
    """The geoseg error for a local ``dest`` that could not be written because of ``exc``."""
    translated = translate(exc, dest, {}, "Writing")
    if isinstance(translated, GeosegError) and not isinstance(translated, RasterNotFoundError):
        return translated
    if os.path.isdir(fsspec.core.strip_protocol(dest)):
        return OutputExistsError(f"Cannot write {public_url(dest)}: it is a folder; expected the "
                                 "path of a file. Give a file's path. Nothing was written.")
    if os.path.lexists(folder) and not os.path.isdir(folder):
        return OutputLocationError(f"Cannot write {public_url(dest)}: {folder} is a file, not a "
                                   "folder; expected a path inside a folder. Choose another path. "
                                   "Nothing was written.")
    return OutputLocationError(
        f"Cannot write {public_url(dest)}: the folder {folder} does not take new files "
        f"({exc.strerror or exc}); expected a writable folder on an ordinary disk. Choose another "
        "path. Nothing was written.")


@contextlib.contextmanager
def staged_file(dest: str, options: dict[str, Any] | None = None,
                overwrite: bool = True) -> Iterator[Path]:
    """A local scratch path named like ``dest``; it becomes ``dest`` only if the block succeeds.

    Local destinations are staged in their own folder (so the final move is a rename on one
    disk), a symbolic link's in its target's, and the new file takes the permissions of the one
    it replaces (its other hard links keep the old content); remote ones in the system's
    temporary folder, then uploaded with fsspec. Unless ``overwrite``, a ``dest`` that exists is
    refused, and one that appeared meanwhile (another export to the same name) is kept and this
    one refused: locally by a hard link, which no existing file survives being the target of;
    remotely by a last look before the upload, which is retried as chunk writes are.
    Staging folders that killed processes left in the same folder are removed first
    (:func:`sweep_staging_leftovers`).
    """
    fs, path = fsspec.core.url_to_fs(dest, **(options or {}))
    local = isinstance(fs, LocalFileSystem)
    if local:  # a link's target is written (and replaced), not the link
        _refuse_dangling(dest, Path(path))
        path = os.path.realpath(path)
    if not overwrite and fs.exists(path):
        raise _existing(dest)
    folder = Path(path).parent if local else None
    try:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        sweep_staging_leftovers(folder or Path(tempfile.gettempdir()))
        scratch = tempfile.TemporaryDirectory(dir=folder, prefix=f"{STAGING_PREFIX}{_owner()}-")
    except OSError as exc:
        if not local:
            raise
        raise unwritable(exc, dest, folder) from None
    with scratch as scratch_path:
        staged = Path(scratch_path) / Path(path).name
        yield staged
        if local:
            _publish(staged, path, dest, folder, overwrite)
        else:
            _upload(fs, staged, path, dest, dict(options or {}), overwrite)


def _retried(fn: Callable[..., Any], *args: Any, url: str, options: dict[str, Any],
             what: str = "Writing") -> Any:
    """``fn(*args)`` on the store of ``url``, retried on transient errors as chunk writes are
    (``GEOSEG_RETRIES``, :func:`geoseg.io.remote.call_with_retries`); what still fails is a
    geoseg error saying ``what`` failed on ``url``."""
    return remote.call_with_retries(fn, *args, url=url, storage_options=options, what=what)


def _upload(fs: Any, staged: Path, path: str, dest: str, options: dict[str, Any],
            overwrite: bool) -> None:
    """Upload ``staged`` to ``path`` on the store ``fs`` (``dest``), each request retried;
    unless ``overwrite``, after a last look for a file that appeared meanwhile."""
    if not overwrite and _retried(fs.exists, path, url=dest, options=options, what="Reading"):
        raise _appeared(dest)
    _retried(fs.put_file, str(staged), path, url=dest, options=options)


def sweep_staging_leftovers(folder: Path) -> list[str]:
    """Remove the staging folders in ``folder`` that processes killed while writing left behind
    (:func:`staged_file` removes its own), and return their names; a folder that cannot be read
    or removed is left, quietly. A staging folder's name carries its writer's pid and host
    (:func:`_owner`). One is left over when it was made on this host (the same host name and
    process namespace) by a process that no longer runs, or, whoever made it (another host,
    an earlier version), when neither it nor anything in it changed for
    :data:`STALE_STAGING_SECONDS` (a day). Another writer's folder is so never removed while
    it writes: on this host its process runs, elsewhere it changes files there (a pid reused
    by another process keeps a folder until it is a day old, which errs on the safe side)."""
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(STAGING_PREFIXES)]
    except OSError:
        return removed
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False) and _left_over(entry):
                shutil.rmtree(entry.path)
                removed.append(entry.name)
    return removed


def _left_over(entry: os.DirEntry) -> bool:
    owner = _OWNER.fullmatch(entry.name[len(STAGING_PREFIX):])
    if (entry.name.startswith(STAGING_PREFIX) and owner is not None
            and owner.group(2) == _host()):
        return process_gone(int(owner.group(1)))
    return time.time() - _last_change(entry) > STALE_STAGING_SECONDS


def _last_change(entry: os.DirEntry) -> float:
    """When the folder ``entry``, or a file in it, last changed."""
    with os.scandir(entry.path) as inside:
        times = [e.stat(follow_symlinks=False).st_mtime for e in inside]
    return max([entry.stat(follow_symlinks=False).st_mtime, *times])


def _owner() -> str:
    """``<pid>@<host>``: who writes in a staging folder (:func:`sweep_staging_leftovers`)."""
    return f"{os.getpid()}@{_host()}"


def _host() -> str:
    """This host's name (only letters, digits, dots and dashes kept), and its process namespace
    where the system tells it: containers sharing a host name do not share pids."""
    name = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "localhost"
    namespace = re.sub(r"\D", "", pid_namespace())
    return f"{name}.ns{namespace}" if namespace else name


def _publish(staged: Path, path: str, dest: str, folder: Path | None, overwrite: bool) -> None:
    """Move ``staged`` to ``path``: replacing what is there when ``overwrite`` (the new file
    takes the old one's permissions), else never."""
    try:
        if overwrite:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(staged, stat.S_IMODE(os.stat(path).st_mode))
            os.replace(staged, path)
            return
        try:
            os.link(staged, path)  # FileExistsError when another export got there first
        except FileExistsError:
            raise _appeared(dest) from None
        except OSError:  # a file system without hard links: the last look, then the rename
            if os.path.lexists(path):
                raise _appeared(dest) from None
            os.replace(staged, path)
    except OutputExistsError:
        raise
    except OSError as exc:
        raise unwritable(exc, dest, folder) from None


def _existing(dest: str) -> OutputExistsError:
    return OutputExistsError(f"{public_url(dest)} already exists; nothing was written. Choose "
                             "another path, or pass --overwrite (overwrite=True) to replace it.")


def _appeared(dest: str) -> OutputExistsError:
    return OutputExistsError(
        f"{public_url(dest)} was written by something else while geoseg wrote it (another command "
        "writing the same name?); it was kept, and what geoseg wrote discarded. Choose another "
        "path, or pass --overwrite (overwrite=True) to replace it.")
