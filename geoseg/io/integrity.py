"""Whether an output still holds what its run recorded, checked cheaply before it is read in
full (exports, the instance stage) or resumed (a rerun recomputes what was lost).

``geoseg verify`` re-hashes every task region: a full read. This check costs one listing of the
manifest and one of the ``classes`` array. An absent object alone is no fault (a chunk of the
fill value, the no-data class, is never stored), so a recorded region that lacks one is hashed
again and compared with its recorded sha256: a region whose objects are all absent as the fill
values it would read (no read), one that lacks some of them as read. A chunk deleted from
storage reads as no-data and no longer matches. Bytes changed in place are left to
``geoseg verify``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Container
from typing import Any

import numpy as np
from zarr.core.sync import sync

from geoseg.core.urls import public_url
from geoseg.io.output import MANIFEST_SHA, OutputTarget, chunk_checksum
from geoseg.tiling.plan import ceil_div

SHOWN = 10  # region keys a message names at most


def damage(target: OutputTarget, attrs: dict, nothing: str) -> str | None:
    """Why the complete output at ``target`` cannot be read as its run wrote it, as a message
    that ends with ``nothing`` (``"nothing was exported"``) and the fix; ``None`` if it can."""
    problem = damage_found(target, attrs)
    if problem is None:
        return None
    url = public_url(target.url)
    return (f"{url} is damaged: {problem}; {nothing}, as those regions would read as no-data. "
            f"`geoseg verify {url}` names every changed region. To fix: run its job again (the "
            "same spec, without --overwrite), which recomputes only the missing regions and keeps "
            "the rest, or restore the output from a copy.")


def damage_found(target: OutputTarget, attrs: dict) -> str | None:
    """A manifest that records fewer task regions than the run planned, or regions whose
    ``classes`` objects are gone from storage; ``None`` for neither."""
    planned, done = int(attrs.get("n_chunks", 0)), target.done_keys()
    if len(done) < planned:
        return (f"its manifest records {len(done)} of the {planned} task region(s) its run "
                "planned, though the output is marked complete")
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
    lacks, in one listing; regions that lack none are left out."""
    task, chunks, shards = target.stored_layout()
    grid = shards or chunks
    shape = tuple(target.open_group(mode="r")["classes"].shape)
    per_task = [t // g for t, g in zip(task, grid)]  # task regions are whole objects
    stored = np.zeros([ceil_div(n, g) for n, g in zip(shape, grid)], dtype=bool)
    for key in target.stored_keys("classes"):
        coords = tuple(int(i) for i in key.split("."))
        if all(c < n for c, n in zip(coords, stored.shape)):  # not past an edited shape
            stored[coords] = True
    regions = Counter(".".join(str(int(c) // p) for c, p in zip(coords, per_task))
                      for coords in np.argwhere(~stored))
    return dict(regions)


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
