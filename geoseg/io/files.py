"""Single files the command line writes beside outputs (scores, report pages, pictures), each
checked before any work: an allowed place (the outputs' own rules, :mod:`geoseg.io.allow`), no
file replaced without ``--overwrite``, never a folder, and a folder there that takes files."""

from __future__ import annotations

import os

import fsspec

from geoseg.core import redact
from geoseg.errors import OutputExistsError, OutputLocationError, StorageAccessError
from geoseg.io.remote import check_writable


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


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
    if not _is_local(fs):
        return  # object stores: no folders to make, and their rights show when writing
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputLocationError(f"{option} {redact.scrub(url)}: received a path in a folder that "
                                  f"does not exist ({folder}); expected a file in an existing "
                                  "folder. Create the folder first, or give another path.")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path)
                                                   and not os.access(path, os.W_OK)):
        raise StorageAccessError(f"{option} {redact.scrub(url)}: received a path geoseg may not "
                                 "write (permission denied); expected a writable place. Give "
                                 "another path.")


def same_file(a: str, b: str) -> bool:
    """Whether two URLs or paths name one file (local paths compared once resolved)."""
    fa, pa = fsspec.core.url_to_fs(a)
    fb, pb = fsspec.core.url_to_fs(b)
    if type(fa) is not type(fb):
        return False
    if _is_local(fa):
        return os.path.realpath(pa) == os.path.realpath(pb)
    return pa.rstrip("/") == pb.rstrip("/")
