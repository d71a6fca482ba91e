"""Whether an output still holds what its run recorded, checked cheaply before it is read in
full (exports, the instance stage) or resumed (a rerun recomputes what was lost).

``geoseg verify`` re-hashes every task region: a full read. This check costs one listing of the
manifest and one of the ``classes`` array. An absent object alone is no fault (a chunk of the
fill value, the no-data class, is never stored), so a recorded region that lacks one is hashed
again and compared with its recorded sha256: a region whose objects are all absent as the fill
values it would read (no read), one that lacks some of them as read. A chunk deleted from
storage reads as no-data and no longer matches. Bytes changed in place are left to
``geoseg verify``.

Over HTTP, from a server that does not list folders (most static web servers), nothing can be
listed: a manifest of at most :data:`UNLISTED_READS` regions is then read region by region (one
small GET each), a larger one is not checked, and lost chunks are not looked for (each absent
object would cost a request); a debug log says so. Such an output is not called damaged for
what could not be seen: ``geoseg verify`` over a listing store remains the full check.

Nothing here enumerates a grid before it is bounded: the array metadata is first checked
against what the run recorded (:func:`layout_changed`: an edited ``zarr.json`` can declare any
shape or chunks), and the task regions it describes against ``GEOSEG_MAX_TASKS``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from zarr.core.sync import sync

from geoseg.budgets import check_tasks
from geoseg.core.urls import public_url
from geoseg.errors import CorruptOutputError
from geoseg.io import remote
from geoseg.io.output import (
    MANIFEST_DONE,
    MANIFEST_SHA,
    OutputTarget,
    chunk_checksum,
    geoseg_attrs,
)
from geoseg.tiling import Layout
from geoseg.tiling.plan import ceil_div, n_regions

SHOWN = 10  # region keys a message names at most
UNLISTED_READS = 256  # manifest entries read one by one where the store cannot list them
log = logging.getLogger(__name__)
LAYOUT_FIX = ("The array's zarr.json was changed or replaced since the run (its metadata, not "
              "the bytes of its chunks): restore the zarr.json (and the group's, which "
              "consolidates it) from a copy, or run the job again with --overwrite")


def damage(target: OutputTarget, attrs: dict, nothing: str) -> str | None:
    """Why the complete output at ``target`` cannot be read as its run wrote it, as a message
    that ends with ``nothing`` (``"nothing was exported"``) and the fix; ``None`` if it can.
    Array metadata changed since the run is named as such, before any chunk is listed."""
    url, listed = public_url(target.url), _listable(target)
    done = target.done_keys() if listed else _read_done(target, attrs)
    problem = None if done is None else _unrecorded(attrs, done)
    changed = None if problem else layout_changed(target, attrs)
    if changed is not None:
        return f"{url}: {changed}; {nothing}. {LAYOUT_FIX}."
    problem = problem or (_lost(target, done) if listed and done is not None else None)
    if problem is None:
        return None
    return (f"{url} is damaged: {problem}; {nothing}, as those regions would read as no-data. "
            f"`geoseg verify {url}` names every changed region. To fix: run its job again (the "
            "same spec, without --overwrite), which recomputes only the missing regions and keeps "
            "the rest, or restore the output from a copy.")


def damage_found(target: OutputTarget, attrs: dict) -> str | None:
    """A manifest that records fewer task regions than the run planned, or regions whose
    ``classes`` objects are gone from storage; ``None`` for neither. Raises
    :class:`CorruptOutputError` for array metadata changed since the run (:func:`checked_grid`)."""
    if not _listable(target):
        done = _read_done(target, attrs)
        return None if done is None else _unrecorded(attrs, done)
    done = target.done_keys()
    return _unrecorded(attrs, done) or _lost(target, done)


def _listable(target: OutputTarget) -> bool:
    """Whether the store of ``target`` lists folders: every store but an HTTP server that does
    not (a folder's URL answers 403 or 404, or a page without the group's entries)."""
    fs, path = fsspec.core.url_to_fs(target.url, **target.storage_options)
    if "http" not in remote.fs_protocols(fs):
        return True
    try:
        entries = fs.ls(path.rstrip("/") + "/", detail=False)
    except Exception:  # noqa: BLE001 - a folder the server will not list
        return False
    return any(e.rstrip("/").rsplit("/", 1)[-1] in ("zarr.json", ".zgroup") for e in entries)


def _read_done(target: OutputTarget, attrs: dict) -> set[str] | None:
    """Keys of the regions the manifest records, read entry by entry from a store that cannot
    list it; ``None`` (not checked, said in a debug log) past :data:`UNLISTED_READS` regions."""
    manifest = target.open_group(mode="r")[MANIFEST_DONE]
    url, entries = public_url(target.url), math.prod(manifest.shape)
    if entries > UNLISTED_READS:
        log.debug(f"{url}: its server does not list folders, and its manifest of {entries} task "
                  f"regions is more than {UNLISTED_READS} reads; it was not checked")
        return None
    log.debug(f"{url}: its server does not list folders: its manifest was read entry by entry, "
              "and lost chunks were not looked for")
    recorded = np.asarray(manifest[...])
    return {".".join(map(str, index)) for index in np.argwhere(recorded).tolist()}


def _unrecorded(attrs: dict, done: set[str]) -> str | None:
    planned = int(attrs.get("n_chunks", 0))
    if len(done) >= planned:
        return None
    return (f"its manifest records {len(done)} of the {planned} task region(s) its run "
            "planned, though the output is marked complete")


def _lost(target: OutputTarget, done: set[str]) -> str | None:
    changed = lost_regions(target, done)
    if not changed:
        return None
    return (f"{len(changed)} task region(s) lost stored chunks since their run recorded them "
            f"({', '.join(changed[:SHOWN])}{', ...' if len(changed) > SHOWN else ''})")


def lost_regions(target: OutputTarget, done: Container[str],
                 absent: dict[str, int] | None = None) -> list[str]:
    """Keys of the task regions in ``done`` (recorded in the manifest) with a ``classes``
    object gone from storage, whose bytes no longer hash to the recorded sha256; ``absent``
    is :func:`absent_objects` when the caller has listed it already."""
    task, chunks, shards = target.stored_layout()
    group = target.open_group(mode="r")
    arrays = {name: group[name] for name in ("classes", "probabilities") if name in group}
    grid = shards or chunks
    shape = tuple(arrays["classes"].shape)
    absent = absent_objects(target) if absent is None else absent
    suspects = sorted((key, n) for key, n in absent.items() if key in done)
    recorded = _recorded(group, [key for key, _ in suspects])
    changed = []
    for (key, n_absent), sha in zip(suspects, recorded):
        region = tuple(slice(int(i) * t, min((int(i) + 1) * t, n))
                       for i, t, n in zip(key.split("."), task, shape))
        every = n_absent == math.prod(ceil_div(r.stop - r.start, g) for r, g in zip(region, grid))
        blocks = [_fill(array, region) if every else target.read(name, region)
                  for name, array in arrays.items()]
        if sha != chunk_checksum(*blocks):
            changed.append(key)
    return changed


def lost_from_complete(target: OutputTarget) -> list[str]:
    """Keys of the task regions that lost stored ``classes`` objects since the run of an output
    whose manifest records every region: one listing of ``classes``, and a re-hash only of the
    regions that lack objects. Cheap enough for ``geoseg status``, which must not read it all."""
    absent = absent_objects(target)
    if not absent:
        return []
    return lost_regions(target, set(absent), absent)  # every region is recorded: all suspects


def drop_region(target: OutputTarget, key: str) -> int:
    """Delete the stored ``classes`` and ``probabilities`` objects of task region ``key`` (their
    chunks, or shards); how many were stored. For a region whose bytes no longer decode, about
    to be computed again: a write that does not cover a whole object (a shard at the array's
    edge) merges into the stored one, so it would read, and fail on, the broken bytes."""
    task, chunks, shards = target.stored_layout()
    per_task = [t // g for t, g in zip(task, shards or chunks)]  # task regions are whole objects
    group = target.open_group()
    dropped = 0
    for name in ("classes", "probabilities"):
        if name in group:
            dropped += _drop_objects(group[name], key, per_task)
    return dropped


def _drop_objects(array: Any, key: str, per_task: list[int]) -> int:
    """Delete the objects of ``array`` inside task region ``key`` (every index of any leading
    axis, the probabilities' classes); how many were stored."""
    grid = array.cdata_shape
    lead = len(grid) - len(per_task)
    spans = [range(n) for n in grid[:lead]] + [
        range(int(i) * p, min((int(i) + 1) * p, n))
        for i, p, n in zip(key.split("."), per_task, grid[lead:])]
    store, prefix, dropped = array.store_path.store, array.store_path.path, 0
    for coords in itertools.product(*spans):
        name = f"{prefix}/{array.metadata.encode_chunk_key(coords)}"
        if sync(store.exists(name)):
            sync(store.delete(name))
            dropped += 1
    return dropped


def absent_objects(target: OutputTarget) -> dict[str, int]:
    """Task region key to how many of its ``classes`` objects (chunks, or shards) storage
    lacks, in one listing; regions that lack none are left out. Memory and time grow with the
    task regions (bounded by :func:`checked_grid`) and the stored objects, never with the
    objects the metadata declares."""
    task, grid, shape = checked_grid(target)
    per_task = [t // g for t, g in zip(task, grid)]  # task regions are whole objects
    objects = [ceil_div(n, g) for n, g in zip(shape, grid)]
    tasks = [ceil_div(n, t) for n, t in zip(shape, task)]
    expected = functools.reduce(np.multiply.outer, [  # objects per region; fewer at the edges
        np.minimum(p, o - np.arange(k, dtype=np.int64) * p)
        for p, o, k in zip(per_task, objects, tasks)], np.int64(1))
    stored = np.zeros(tasks, dtype=np.int64)
    coords = [c for c in _stored_coords(target) if all(i < n for i, n in zip(c, objects))]
    if coords:  # those past an edited shape are not counted
        np.add.at(stored, tuple((np.array(coords, dtype=np.int64) // per_task).T), 1)
    lacking = expected - stored
    return {".".join(map(str, index)): int(lacking[index])
            for index in map(tuple, np.argwhere(lacking > 0).tolist())}


def _stored_coords(target: OutputTarget) -> list[tuple[int, ...]]:
    """The grid coordinates of the stored ``classes`` objects, in one listing."""
    return [tuple(int(i) for i in key.split(".")) for key in target.stored_keys("classes")]


def checked_grid(target: OutputTarget) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(task region, object grid, shape)`` of ``classes``, once its metadata is found to be
    what the run recorded and its task regions within ``GEOSEG_MAX_TASKS``: raises
    :class:`CorruptOutputError` naming a changed layout, :class:`BudgetError` over the limit."""
    task, chunks, shards = target.stored_layout()  # refuses an edited task_region by name
    group = target.open_group(mode="r")  # read once for the attributes, layout and shape
    classes = group["classes"]
    changed = _declares(layout_facts(geoseg_attrs(group.attrs.get("geoseg"), target.url), classes))
    if changed is not None:
        raise layout_error(target.url, changed, "nothing was read")
    shape = tuple(classes.shape)
    check_tasks(n_regions(shape, task), f"output {public_url(target.url)}",
                "Its chunks are listed once per task region; raise the limit to check an output "
                "this large (memory grows with its task regions).")
    return task, shards or chunks, shape


def layout_changed(target: OutputTarget, attrs: dict[str, Any]) -> str | None:
    """What the ``classes`` array's metadata declares unlike the run that made the output
    (``attrs``: its ``geoseg`` attributes), as one message; ``None`` when it is alike. An
    edited ``task_region`` attribute is refused by name first (:meth:`OutputTarget.stored_layout`)."""
    target.stored_layout()
    return _declares(layout_facts(attrs, target.open_group(mode="r")["classes"]))


def _declares(facts: list[str]) -> str | None:
    return f"classes: its metadata declares {'; and '.join(facts)}" if facts else None


def layout_error(url: str, changed: str, nothing: str) -> CorruptOutputError:
    """The error for an output whose array metadata :func:`layout_changed` (``changed``);
    ``nothing``: what was not done (``"nothing was repaired"``)."""
    return CorruptOutputError(f"{public_url(url)}: {changed}; {nothing}. {LAYOUT_FIX}.")


def layout_facts(attrs: dict[str, Any], classes: Any) -> list[str]:
    """Each way the metadata of ``classes`` differs from what the run recorded: the task grid
    it planned (``n_chunks``, ``task_region``) and, once it finished, the shape, chunks and
    shards of its record (``provenance``). Pure arithmetic on metadata."""
    shape, chunks = tuple(classes.shape), tuple(classes.chunks)
    shards = None if classes.shards is None else tuple(classes.shards)
    task = tuple(attrs.get("task_region") or shards or chunks)
    if len(task) != len(shape):
        return [(f"{len(shape)} axes (shape {shape}), but the run recorded task regions of "
                 f"{list(task)}")]
    recorded = _recorded_layout(attrs, len(shape))
    facts = [*_shape_facts(attrs, shape, task, recorded.shape),
             *_chunk_facts(chunks, shards, recorded)]
    grid = shards or chunks
    if not facts and any(t % g for t, g in zip(task, grid)):
        facts.append(f"{_shards(shards) if shards else f'chunks {list(chunks)}'}, which do not "
                     f"divide the task regions of {list(task)} the run wrote")
    return facts


def _shape_facts(attrs: dict[str, Any], shape: tuple[int, ...], task: tuple[int, ...],
                 recorded: tuple[int, ...] | None) -> list[str]:
    planned, found = attrs.get("n_chunks"), n_regions(shape, task)
    differs = recorded is not None and recorded != shape
    if planned is not None and found != int(planned):
        wrote = f" (shape {recorded})" if differs else ""
        return [(f"shape {shape}, a grid of {found} task region(s), but the run planned "
                 f"{planned}{wrote}")]
    return [f"shape {shape}, but the run wrote shape {recorded}"] if differs else []


def _chunk_facts(chunks: tuple[int, ...], shards: tuple[int, ...] | None,
                 recorded: RunLayout) -> list[str]:
    facts = []
    if recorded.chunks is not None and chunks != recorded.chunks:
        facts.append(f"chunks {list(chunks)}, but the run wrote chunks {list(recorded.chunks)}")
    if recorded.sharding_known and shards != recorded.shards:
        facts.append(f"{_shards(shards)}, but the run wrote {_shards(recorded.shards)}")
    return facts


def _shards(shards: tuple[int, ...] | None) -> str:
    return "no shards" if shards is None else f"shards {list(shards)}"


@dataclass(frozen=True)
class RunLayout:
    """The shape, chunks and shards of ``classes`` as the output was created with them (or, by
    an older geoseg, as a finished run recorded them); ``None`` for a figure not recorded.
    ``shards`` is ``None`` also for an output not sharded: ``sharding_known`` tells them apart."""

    shape: tuple[int, ...] | None = None
    chunks: tuple[int, ...] | None = None
    shards: tuple[int, ...] | None = None
    sharding_known: bool = False


def _recorded_layout(attrs: dict[str, Any], ndim: int) -> RunLayout:
    """What the output says of ``classes`` (``ndim`` axes) as it was created (``attrs["layout"]``)
    or, for one written by an older geoseg, its run's record (``attrs["provenance"]``); a figure
    that is not what geoseg writes there counts as not recorded."""
    created = attrs.get("layout")
    if isinstance(created, dict):
        shape, chunks = _axes(created.get("shape"), ndim), _axes(created.get("chunks"), ndim)
        shards = created.get("shards")
        if shards is None:
            return RunLayout(shape, chunks, None, sharding_known="shards" in created)
        return RunLayout(shape, chunks, _axes(shards, ndim), _axes(shards, ndim) is not None)
    record = attrs.get("provenance")
    source = _part(_part(record, "input"), "shape")
    shape = _axes(source[1:] if isinstance(source, list) else None, ndim)  # less the bands
    chunks = _axes(_part(_part(record, "resolved"), "chunks"), ndim)
    output = _part(_part(record, "job"), "output")
    if not isinstance(output, dict) or "shards" not in output or shape is None or chunks is None:
        return RunLayout(shape, chunks)
    if output["shards"] is None:
        return RunLayout(shape, chunks, None, sharding_known=True)
    try:
        return RunLayout(shape, chunks, Layout.create(shape, chunks, output["shards"]).shards, True)
    except (ValueError, TypeError):  # not shards a run accepts: what it wrote cannot be told
        return RunLayout(shape, chunks)


def _part(record: Any, key: str) -> Any:
    return record.get(key) if isinstance(record, dict) else None


def _axes(value: Any, ndim: int) -> tuple[int, ...] | None:
    """``value`` as ``ndim`` whole numbers, or ``None`` if it is not that."""
    if not isinstance(value, list) or len(value) != ndim or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return None
    return tuple(value)


def _recorded(group: Any, keys: list[str]) -> list[str]:
    """The sha256 the manifest records for each of ``keys``, read together."""
    if not keys:
        return []
    manifest = group[MANIFEST_SHA]
    width = manifest.shape[-1]  # the bytes of one digest
    coords = np.array([[int(i) for i in k.split(".")] for k in keys])
    index = (*(np.repeat(axis, width) for axis in coords.T), np.tile(np.arange(width), len(keys)))
    digests = np.asarray(manifest.vindex[index]).astype(np.uint8)
    return [bytes(row).hex() for row in digests.reshape(len(keys), width)]


def _fill(array: Any, region: tuple[slice, ...]) -> np.ndarray:
    """What ``array`` reads over ``region`` where none of its objects is stored."""
    lead = tuple(array.shape[: array.ndim - len(region)])
    return np.full(lead + tuple(r.stop - r.start for r in region), array.fill_value, array.dtype)
