"""Whether a finished output still holds what its run recorded, checked cheaply before the
output is read in full (exports, the instance stage).

``geoseg verify`` re-hashes every task region: a full read. This check costs one listing of the
manifest and one of the ``classes`` array, plus a read of only the task regions that lack a
stored object. An absent object alone is no fault (a chunk of the fill value, the no-data
class, is never stored), so such a region is re-hashed and compared with its recorded sha256:
a chunk deleted from storage reads as no-data and no longer matches. Bytes changed in place are
left to ``geoseg verify``.
"""

from __future__ import annotations

import numpy as np

from geoseg.core.urls import public_url
from geoseg.io.output import OutputTarget, chunk_checksum, chunk_key
from geoseg.tiling.plan import ceil_div

SHOWN = 10  # region keys a message names at most


def damage(target: OutputTarget, attrs: dict, nothing: str) -> str | None:
    """Why the complete output at ``target`` cannot be read as its run wrote it, as a message
    that ends with ``nothing`` (``"nothing was exported"``) and the fix; ``None`` if it can."""
    problem = _problem(target, attrs)
    if problem is None:
        return None
    url = public_url(target.url)
    return (f"{url} is damaged: {problem}; {nothing}, as those regions would read as no-data. "
            f"`geoseg verify {url}` names every changed region; restore the output from a copy, "
            "or run its job again with --overwrite.")


def _problem(target: OutputTarget, attrs: dict) -> str | None:
    """A manifest that records fewer task regions than the run planned, or regions whose
    ``classes`` objects are gone from storage; ``None`` for neither."""
    planned, done = int(attrs.get("n_chunks", 0)), target.count_done()
    if done < planned:
        return (f"its manifest records {done} of the {planned} task region(s) its run planned, "
                "though the output is marked complete")
    changed = _regions_with_objects_gone(target)
    if not changed:
        return None
    return (f"{len(changed)} task region(s) lost stored chunks since their run recorded them "
            f"({', '.join(changed[:SHOWN])}{', ...' if len(changed) > SHOWN else ''})")


def _regions_with_objects_gone(target: OutputTarget) -> list[str]:
    """Keys of the task regions with a ``classes`` object absent whose bytes no longer hash
    to the recorded sha256."""
    task, chunks, shards = target.stored_layout()
    group = target.open_group(mode="r")
    classes = group["classes"]
    names = ["classes"] + (["probabilities"] if "probabilities" in group else [])
    grid = shards or chunks
    shape = tuple(classes.shape[-len(grid):])
    stored = np.zeros([ceil_div(n, g) for n, g in zip(shape, grid)], dtype=bool)
    for key in target.stored_keys("classes"):
        stored[tuple(int(i) for i in key.split("."))[-len(grid):]] = True
    per_task = [t // g for t, g in zip(task, grid)]  # task regions are whole objects
    suspects = sorted({tuple(int(c) // p for c, p in zip(coords, per_task))
                       for coords in np.argwhere(~stored)})
    changed = []
    for index in suspects:
        region = tuple(slice(i * t, min((i + 1) * t, n)) for i, t, n in zip(index, task, shape))
        key = chunk_key(region, task)
        recorded = target.checksum(key)  # None: an output made without a manifest entry here
        if recorded is not None and recorded != chunk_checksum(*(target.read(n, region) for n in names)):
            changed.append(key)
    return changed
