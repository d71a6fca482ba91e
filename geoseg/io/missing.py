"""Input chunks a Zarr store lacks: an error naming them, or the fill value when that is meant.

Zarr reads a chunk its store lacks as the array's fill value, without a word: a chunk lost in
a copy or a sync looks like valid pixels. geoseg refuses that unless the fill is on purpose.
What a job does with absent chunks is ``input.missing_chunks``:

* ``error``: reading a window whose chunk is absent raises
  :class:`~geoseg.errors.CorruptInputError` naming the store and the chunk key;
* ``fill``: absent chunks read as the fill value (a writer that skips empty chunks, as
  zarr-python does by default, leaves them out on purpose); the job logs how many there are;
* ``auto`` (a job's default): ``fill`` when the array's fill value is the raster's declared
  nodata (absent chunks then read as nodata, which is what the store says), else ``error``.

Readers outside a job (:func:`geoseg.open_raster`, exports, reports) keep zarr's way, ``fill``:
a source's ``missing_chunks`` is set by :func:`geoseg.jobs.checks.with_missing_chunks`.

A read checks the storage keys of its window (one existence check each, concurrently;
keys found once are remembered per process). Before a job, :func:`count_missing` lists the
array's keys once, so ``validate`` reports absent chunks without reading a pixel.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, JobSpecError
from geoseg.io import remote
from geoseg.tiling.plan import ceil_div

MODES = ("auto", "error", "fill")
SHOWN = 8  # absent chunk keys named in a message
MAX_LISTED = 200_000  # storage chunks up to which a job lists the array's keys beforehand
MAX_REMEMBERED = 100_000  # chunk keys known present, per process
_present: set[tuple[str, str]] = set()


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise JobSpecError(f"input.missing_chunks: received {mode!r}; expected one of "
                           f"{', '.join(MODES)}.")
    return mode


def fills(mode: str, array: zarr.Array, nodata: float | None) -> bool:
    """Whether absent chunks read as the fill value (``True``) or are an error."""
    if check_mode(mode) != "auto":
        return mode == "fill"
    return fill_is_nodata(array.fill_value, nodata)


def fill_is_nodata(fill: Any, nodata: float | None) -> bool:
    """The array's fill value is the raster's nodata (NaN equal to NaN)."""
    if fill is None or nodata is None:
        return False
    try:
        fill, nodata = float(fill), float(nodata)
    except (TypeError, ValueError):
        return False
    return fill == nodata or (math.isnan(fill) and math.isnan(nodata))


def storage_grid(array: zarr.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shape of what the store holds as one object (a shard, else a chunk) and how many
    there are per axis."""
    unit = tuple(array.shards or array.chunks)
    return unit, tuple(ceil_div(n, u) for n, u in zip(array.shape, unit))


def window_keys(array: zarr.Array, index: Sequence[slice]) -> list[str]:
    """Store keys (with the array's path) of the objects a selection of ``array`` touches."""
    unit, _ = storage_grid(array)
    spans = [range(s.start // u, ceil_div(s.stop, u)) if s.stop > s.start else range(0)
             for s, u in zip(index, unit)]
    return [_full_key(array, array.metadata.encode_chunk_key(c)) for c in itertools.product(*spans)]


def _full_key(array: zarr.Array, key: str) -> str:
    path = array.store_path.path
    return f"{path}/{key}" if path else key


def absent(array: zarr.Array, keys: Sequence[str]) -> list[str]:
    """The ``keys`` the array's store lacks (checked concurrently; present ones remembered)."""
    store = array.store_path.store
    where = str(store)
    todo = [k for k in keys if (where, k) not in _present]
    if not todo:
        return []

    async def exist() -> list[bool]:
        return list(await asyncio.gather(*(_exists(store, k) for k in todo)))

    found = sync(exist())
    if len(_present) > MAX_REMEMBERED:
        _present.clear()
    _present.update((where, k) for k, ok in zip(todo, found) if ok)
    return [k for k, ok in zip(todo, found) if not ok]


async def _exists(store: Any, key: str) -> bool:
    """Whether ``store`` holds ``key``, without fetching it (:func:`geoseg.io.remote.exists_async`
    for a store on fsspec: fsspec's own HTTP ``exists`` is a GET, whose body the server sends
    until the client hangs up)."""
    fs = getattr(store, "fs", None)
    if fs is None:
        return bool(await store.exists(key))
    return await remote.exists_async(fs, f"{store.path.rstrip('/')}/{key}")


def refuse_absent(url: str, array: zarr.Array, index: Sequence[slice]) -> None:
    """Raise :class:`CorruptInputError` when a chunk the selection ``index`` touches is absent."""
    missing = absent(array, window_keys(array, index))
    if missing:
        raise missing_error(url, missing, array.fill_value)


def missing_error(url: str, missing: Sequence[str], fill: Any, total: int | None = None,
                  of: int | None = None) -> CorruptInputError:
    """The error for chunks ``missing`` from the store at ``url`` (``total`` of ``of`` in all,
    when counted)."""
    names = ", ".join(missing[:SHOWN])
    more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
    count = f"{total} of its {of} chunks are" if total is not None else "chunk(s)"
    return CorruptInputError(
        f"{public_url(url)}: {count} absent from the store ({names}{more}): they would "
        f"read as the fill value {_fill_text(fill)}, not as data. Restore them (copy the input "
        "again), or, if the store leaves out chunks on purpose (e.g. zarr's write_empty_chunks="
        "False), set input.missing_chunks: fill in the job spec.")


def _fill_text(fill: Any) -> str:
    return "(none declared)" if fill is None else str(np.asarray(fill).item())


def count_missing(array: zarr.Array) -> tuple[list[str], int] | None:
    """The storage keys the array's store lacks (in grid order) and how many it should hold,
    from one listing of its keys; ``None`` when it has more than :data:`MAX_LISTED` chunks or
    cannot be listed (a read checks its own chunks then)."""
    _, grid = storage_grid(array)
    expected = math.prod(grid)
    if expected > MAX_LISTED:
        return None
    store, path = array.store_path.store, array.store_path.path
    prefix = f"{path}/" if path else ""

    async def listing() -> set[str]:
        return {k async for k in store.list_prefix(prefix)}

    try:
        stored = sync(listing())
    except Exception:  # noqa: BLE001 - a store that cannot list (http): reads check instead
        return None
    keys = (_full_key(array, array.metadata.encode_chunk_key(c))
            for c in itertools.product(*map(range, grid)))
    return [k for k in keys if k not in stored], expected
