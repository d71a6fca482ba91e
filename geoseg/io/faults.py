"""Reads and writes that fail for good, as geoseg errors naming the file and the chunk or window.

Storage failures are translated by :mod:`geoseg.io.remote`; what is left when a read fails is
data that does not decode (a truncated GeoTIFF, a garbage Zarr chunk, broken metadata), which
becomes :class:`~geoseg.errors.CorruptInputError`. A failed window read is probed chunk by
chunk, so the error names the chunks that do not decode, not only the window. Library
messages are scrubbed of secrets (:func:`geoseg.core.redact.scrub`) and never chained into what
travels from a worker to the client.

Processes that die are faults too: output chunks whose task kills every worker that runs it
become :class:`~geoseg.errors.WorkerCrashError` (:func:`crashed_chunks`), a scheduler lost
mid-run :class:`~geoseg.errors.ClusterLostError` (:func:`scheduler_lost`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from geoseg.core.urls import public_url
from geoseg.errors import (
    ClusterLostError,
    CorruptInputError,
    GeosegError,
    RasterNotFoundError,
    WorkerCrashError,
)
from geoseg.io import remote
from geoseg.tiling.plan import ceil_div

T = TypeVar("T")
MAX_PROBES = 64  # chunks of a failed window read again one by one to find the bad ones
SHOWN = 8  # bad chunks named in a message
AXES = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}
_LOCATED = "geoseg_located"  # set on an error that already names its chunk or window


def window_text(window: Sequence[slice]) -> str:
    """``"y 64:128, x 0:64"``."""
    names = AXES.get(len(window), tuple(f"axis {i}" for i in range(len(window))))
    return ", ".join(f"{n} {s.start}:{s.stop}" for n, s in zip(names, window))


def grid_text(index: Sequence[int]) -> str:
    """``"y 1, x 0"``: a chunk's place in the chunk grid."""
    names = AXES.get(len(index), tuple(f"axis {i}" for i in range(len(index))))
    return ", ".join(f"{n} {i}" for n, i in zip(names, index))


def located(exc: GeosegError, where: str) -> GeosegError:
    """``exc`` with ``where`` in front of its message (once: an error already located stays)."""
    if getattr(exc, _LOCATED, False):
        return exc
    moved = type(exc)(f"{where}: {exc}")
    setattr(moved, _LOCATED, True)
    return moved


def reading_windows(read: Callable[..., T], probe: Callable[..., Any]) -> Callable[..., T]:
    """Wrap a source's ``read(self, window)``: a failure becomes a geoseg error naming the
    window; one that is not a storage failure (undecodable data) also names the bad chunks,
    found by reading each chunk of the window with ``probe(self, chunk_window)``."""

    @functools.wraps(read)
    def wrapper(self: Any, window: tuple[slice, ...]) -> T:
        try:
            return read(self, window)
        except GeosegError as exc:
            error = located(exc, f"input window {window_text(window)}")
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a decoder raises: a corrupt input
            if _file_missing(exc):  # gone since it was opened, or not on this worker's disk
                error = not_visible(self, window)
            elif (whole := remote.whole_files_only(exc, self.url)) is not None:
                error = whole  # no chunk to blame, and each probe would fetch the whole file
            else:
                bad = failing_chunks(window, self.shape[1:], self.chunks, lambda w: probe(self, w))
                error = undecodable(self, window, exc, bad)
        raise bare(error)  # out of the except: nothing of the library's error travels with it

    return wrapper


def bare(error: GeosegError) -> GeosegError:
    """``error`` without the exceptions it was raised from or while handling: a worker sends
    its error to the client pickled, and a library's exception may not unpickle (rasterio's
    do not) or may quote a secret."""
    error.__cause__ = error.__context__ = None
    error.__suppress_context__ = True
    return error


def failing_chunks(window: Sequence[slice], shape: Sequence[int], chunks: Sequence[int],
                   read: Callable[[tuple[slice, ...]], Any]) -> list[tuple[int, ...]]:
    """Grid indexes of the chunks (up to :data:`MAX_PROBES` tried) of ``window`` whose read
    fails on its own."""
    spans = [range(s.start // c, ceil_div(s.stop, c)) for s, c in zip(window, chunks)]
    bad = []
    for index in itertools.islice(itertools.product(*spans), MAX_PROBES):
        block = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, shape))
        try:
            read(block)
        except Exception:  # noqa: BLE001 - a chunk that fails is what we are looking for
            bad.append(index)
    return bad


def _file_missing(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it came from) says a file does not exist: GDAL says so in
    its message only."""
    while exc is not None:
        if isinstance(exc, FileNotFoundError) or "No such file or directory" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def not_visible(source: Any, window: Sequence[slice]) -> RasterNotFoundError:
    """The error for an input that this process cannot find, though the job's client opened it."""
    error = RasterNotFoundError(
        f"input window {window_text(window)}: {public_url(source.url)} does not exist on "
        f"{socket.gethostname()}, where this task ran. Every worker reads the input itself: on a "
        "cluster, put it on a disk all workers mount at the same path, or in object storage "
        "(s3://, gs://, ...); if it was moved or deleted during the run, restore it and run again "
        "(a job keeps its finished chunks).")
    setattr(error, _LOCATED, True)
    return error


def undecodable(source: Any, window: Sequence[slice], exc: BaseException,
                bad: list[tuple[int, ...]]) -> CorruptInputError:
    """The error for a window of ``source`` that does not decode."""
    url = public_url(source.url)
    names = [_chunk_name(source, index) for index in bad[:SHOWN]]
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    which = f"; chunk(s) that fail on their own: {', '.join(names)}{more}" if bad else ""
    error = CorruptInputError(
        f"input window {window_text(window)}: cannot decode {url}{which} "
        f"({remote.reason(exc, source.storage_options)}). The file is corrupt or truncated: "
        "re-download or re-write it, then run again (a job keeps its finished chunks).")
    setattr(error, _LOCATED, True)
    return error


def _chunk_name(source: Any, index: tuple[int, ...]) -> str:
    try:
        return str(source.chunk_name(index))
    except Exception:  # noqa: BLE001 - the metadata itself may be what fails
        return f"chunk ({grid_text(index)})"


@contextlib.contextmanager
def metadata_errors(url: str, storage_options: dict[str, Any]) -> Iterator[None]:
    """Opening ``url``'s metadata: what is not a storage failure nor a geoseg error (a broken
    ``zarr.json``, a header that does not parse) becomes :class:`CorruptInputError`."""
    try:
        yield
    except (GeosegError, MemoryError, ImportError):
        raise
    except OSError as exc:
        if exc.errno is not None:  # the operating system's failure, not the file's content
            raise
        raise _bad_metadata(url, storage_options, exc) from None
    except Exception as exc:  # noqa: BLE001 - whatever a metadata parser raises
        raise _bad_metadata(url, storage_options, exc) from None


def _bad_metadata(url: str, storage_options: dict[str, Any],
                  exc: BaseException) -> GeosegError:
    if (whole := remote.whole_files_only(exc, url)) is not None:
        return whole
    translated = remote.translate(exc, url, storage_options, "Reading")
    if translated is not exc:  # no credentials, access denied, a refused connection...
        return translated  # the store's answer, not the file's content
    return CorruptInputError(
        f"Cannot read the metadata of {public_url(url)} "
        f"({remote.reason(exc, storage_options)}): it is corrupt, truncated or not what its name "
        f"says. Re-download or re-write it{_zarr_hint(url)}, or check the URL.")


def _zarr_hint(url: str) -> str:
    """Which documents to rewrite, for a URL that names a Zarr store (or a folder, which may be
    one); a file's name (``scene.tif``) needs no such hint."""
    name = public_url(url).rstrip("/").rsplit("/", 1)[-1].lower()
    if name.endswith(".zarr") or "." not in name:
        return " (for Zarr: its zarr.json, .zarray or .zattrs)"
    return ""


def locating(where: Callable[..., str]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a method of an output so that a geoseg error raised inside starts with
    ``where(*args)``: the array and chunk it was writing."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
            try:
                return method(self, *args, **kwargs)
            except GeosegError as exc:
                error = located(exc, where(*args, **kwargs))
            raise bare(error)

        return wrapper

    return decorate


def output_chunk(name: str, region: Sequence[slice], *_: Any) -> str:
    """``"output classes chunk y 0:64, x 0:64"``."""
    return f"output {name} chunk {window_text(region)}"


def manifest_entry(key: str, *_: Any) -> str:
    """``"output manifest entry of chunk 0.1"``."""
    return f"output manifest entry of chunk {key}"


def crashed_chunks(chunks: Sequence[tuple[str, Sequence[slice]]], deaths: int,
                   not_retried: int = 0) -> WorkerCrashError:
    """The error for output chunks (``(key, region)``) whose task killed ``deaths`` worker
    processes in a row, the last time running alone; ``not_retried`` other chunks lost with
    crashed workers were left for a rerun."""
    names = [f"chunk {key} ({window_text(region)})" for key, region in chunks[:SHOWN]]
    more = f" and {len(chunks) - SHOWN} more" if len(chunks) > SHOWN else ""
    return WorkerCrashError(
        f"output {', '.join(names)}{more}: every worker process that ran it died ({deaths} in a "
        f"row, the last running it alone); {_others_written(not_retried)}. A worker dies so "
        "when it runs out of memory (raise the workers' memory limit: cluster.jobqueue.memory, "
        "fewer threads_per_worker; or lower inference.batch_size / inference.tile, "
        "GEOSEG_BATCH_SIZE, GEOSEG_TILE, or output.chunks), or on a crash in native code. Rerun "
        "with --debug to keep the workers' logs; a rerun computes only the chunks not written.")


def _others_written(not_retried: int) -> str:
    """What became of the chunks not named: all written, unless some were lost with the crashed
    workers and left to a rerun (then those were not written, however many others were)."""
    if not not_retried:
        return "every other chunk was written"
    return (f"{not_retried} other chunk(s) lost with the crashed workers were not retried: "
            "like the chunks named, they are not written (geoseg status OUTPUT counts the chunks "
            "that are)")


def workers_gone(address: str, waited: float, done: int, total: int) -> ClusterLostError:
    """The error for a run whose scheduler at ``address`` had no worker left for ``waited``
    seconds (``GEOSEG_WORKER_WAIT``): they all left, and none joined."""
    return ClusterLostError(
        f"Every Dask worker of the scheduler at {public_url(address)} left during the run, and "
        f"none joined in {waited:g} s (GEOSEG_WORKER_WAIT); {done} of {total} chunk(s) this run "
        "computed were written and kept. Start workers (dask worker ADDRESS, deploy/README.md), "
        "or raise GEOSEG_WORKER_WAIT for a cluster that takes longer to scale back up, then run "
        "the job again: it computes only the chunks not written.")


def scheduler_lost(address: str, done: int, total: int) -> ClusterLostError:
    """The error for a run whose client lost the scheduler at ``address``."""
    return ClusterLostError(
        f"Lost the Dask scheduler at {public_url(address)} during the run ({done} of "
        f"{total} chunk(s) this run computed were written and kept). Check that the scheduler is "
        "running (it may have been killed, run out of memory or hit its walltime), then run the "
        "job again: it computes only the chunks not written.")
