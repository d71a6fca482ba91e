"""Arrays a job adds once its chunks are complete (instance ids, exact Canny edges).

A stage writes one array beside ``classes``, chunk by chunk, each chunk's sha256
in ``manifest_<name>_sha256``, and records itself in ``attrs["geoseg"][name]``:
``status`` (``running``, then ``complete`` only when everything is written),
its settings, and the sha256 of any files it wrote into the group. ``verify``
checks all of it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import dask.array as da
import fsspec
import numpy as np

from geoseg.budgets import check_tasks
from geoseg.core.urls import public_url
from geoseg.io import remote
from geoseg.io.identity import sha256_file
from geoseg.io.output import OutputTarget
from geoseg.tiling.plan import ceil_div


def hashes_name(name: str) -> str:
    return f"manifest_{name}_sha256"


def stage_record(target: OutputTarget, name: str) -> dict[str, Any]:
    return dict(target.attrs().get(name) or {})


def mark_stage(target: OutputTarget, name: str, record: dict[str, Any]) -> None:
    """Record stage ``name`` as ``record`` in the output group's attributes. A storage error
    names the group's metadata file and the stage (a full disk said only "A write failed":
    zarr's error carries no file name)."""
    where = f"{target.url.rstrip('/')}/zarr.json"
    with remote.storage_errors(where, target.storage_options, f"Writing the {name} stage's record"
                               " into"):
        group = target.open_group()
        group.attrs["geoseg"] = {**group.attrs["geoseg"], name: record}


def store_hashed(target: OutputTarget, name: str, data: da.Array, *, fill_value: int = 0) -> str:
    """Write ``data`` as array ``name`` chunked like ``classes``, chunk by chunk; returns the
    sha256 of the chunks' sha256s (each kept in ``manifest_<name>_sha256``)."""
    group = target.open_group()
    classes = group["classes"]
    for old in (name, hashes_name(name)):
        if old in group:
            del group[old]
    geo = {k: v for k, v in classes.attrs.items() if k != "nodata"}
    group.create_array(name, shape=data.shape, chunks=classes.chunks, dtype=data.dtype,
                       fill_value=fill_value, attributes=geo,
                       dimension_names=list(classes.metadata.dimension_names or ()))
    grid = tuple(ceil_div(n, c) for n, c in zip(data.shape, classes.chunks))
    dims = [f"{name}_chunk_{d}" for d in classes.metadata.dimension_names or ()]
    group.create_array(hashes_name(name), shape=(*grid, 32), chunks=(*(1,) * len(grid), 32),
                       dtype="uint8", fill_value=0, dimension_names=[*dims, "byte"] if dims else None)
    target.finalize({})  # consolidated metadata that lists the new arrays, for every later open
    data = data.rechunk(classes.chunks)
    digests = data.map_blocks(_write_block, target, name, classes.chunks,
                              **_digest_blocks(data)).compute()
    return hashlib.sha256(digests.tobytes()).hexdigest()


def _digest_blocks(data: da.Array) -> dict[str, Any]:
    """``map_blocks`` arguments for a function that turns each chunk into its 32-byte sha256."""
    return {"chunks": (*((1,) * n for n in data.numblocks), (32,)), "new_axis": data.ndim,
            "dtype": np.uint8}


def _write_block(block: np.ndarray, target: OutputTarget, name: str, chunks: tuple[int, ...],
                 block_id: tuple[int, ...]) -> np.ndarray:
    index = block_id[:block.ndim]  # the digest axis is the output's last
    region = tuple(slice(i * c, i * c + n) for i, c, n in zip(index, chunks, block.shape))
    target.write(name, region, block)
    digest = _sha256(block)
    key = ".".join(map(str, index))
    remote.call_with_retries(_store_digest, target, name, index, digest, url=target.url,
                             storage_options=target.storage_options,
                             what=f"Writing the sha256 of {name} chunk {key} into")
    return digest.reshape((1,) * block.ndim + (32,))


def _store_digest(target: OutputTarget, name: str, index: tuple[int, ...],
                  digest: np.ndarray) -> None:
    """Record ``digest`` as the sha256 of chunk ``index`` of stage ``name`` (one object of
    ``manifest_<name>_sha256``; the chunk's own write just before was fenced)."""
    target.open_group()[hashes_name(name)][index] = digest


def _sha256(block: np.ndarray) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(np.ascontiguousarray(block).tobytes()).digest(), np.uint8)


def file_url(target: OutputTarget, filename: str) -> str:
    return target.url.rstrip("/") + "/" + filename


def file_sha256(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The sha256 of the file at ``url`` (:func:`geoseg.io.identity.sha256_file`)."""
    return sha256_file(*fsspec.core.url_to_fs(url, **(storage_options or {})))


def verify_stage(target: OutputTarget, name: str) -> list[str]:
    """What no longer matches stage ``name``'s record: ``name:i.j`` chunk keys and file names."""
    record = stage_record(target, name)
    if not record:
        return []
    if record.get("status") != "complete":
        return [f"{name} (stage not complete)"]
    group = target.open_group(mode="r")
    if name not in group or hashes_name(name) not in group:
        return [f"{name} (array missing)"]
    changed = _grid_changed(target, group, name)
    if changed:
        return [changed]
    bad = _bad_chunks(name, group[name], np.asarray(group[hashes_name(name)][...]))
    return bad + changed_files(target, record)


def lost_since_written(target: OutputTarget, name: str) -> list[str]:
    """What a complete stage ``name`` lost since it was written, found cheaply: its array or
    chunks gone from storage (one listing; a chunk of only the fill value is never stored, so an
    absent one counts when its recorded sha256 is another's) and its files gone or changed
    (re-hashed: they are small beside the arrays). Bytes changed in place inside a stored chunk
    are left to :func:`verify_stage`, a full read."""
    group = target.open_group(mode="r")
    if name not in group or hashes_name(name) not in group:
        return [f"{name} (array missing)"]
    changed = _grid_changed(target, group, name)
    if changed:
        return [changed]
    array, recorded = group[name], np.asarray(group[hashes_name(name)][...])
    stored = np.zeros(recorded.shape[:-1], dtype=bool)
    for key in target.stored_keys(name):
        coords = tuple(int(i) for i in key.split("."))
        if all(c < n for c, n in zip(coords, stored.shape)):
            stored[coords] = True
    lost = []
    for index in map(tuple, np.argwhere(~stored).tolist()):
        shape = tuple(min(c, n - i * c) for i, c, n in zip(index, array.chunks, array.shape))
        empty = _sha256(np.full(shape, array.fill_value, array.dtype))
        if not np.array_equal(empty, recorded[index]):
            lost.append(f"{name}:{'.'.join(map(str, index))} (absent)")
    return lost + changed_files(target, stage_record(target, name))


def _grid_changed(target: OutputTarget, group: Any, name: str) -> str | None:
    """Why stage ``name``'s arrays cannot be checked as written (their metadata edited: a shape
    other than the classes', a hashes array not one sha256 per chunk), or ``None``; a grid over
    ``GEOSEG_MAX_TASKS`` chunks is refused (:class:`BudgetError`) before anything is read."""
    array, hashes = group[name], group[hashes_name(name)]
    classes = tuple(group["classes"].shape) if "classes" in group else tuple(array.shape)
    grid = tuple(ceil_div(n, c) for n, c in zip(array.shape, array.chunks))
    if tuple(array.shape) != classes or tuple(hashes.shape) != (*grid, 32):
        return (f"{name} (its metadata was changed: shape {tuple(array.shape)} in chunks of "
                f"{tuple(array.chunks)}, sha256s {tuple(hashes.shape)}, for classes of shape "
                f"{classes}; restore its zarr.json, or run the stage again)")
    check_tasks(math.prod(grid), f"stage {name} of {public_url(target.url)}",
                "Its chunks are checked one at a time; raise the limit to check a stage this large.")
    return None


def changed_files(target: OutputTarget, record: dict[str, Any]) -> list[str]:
    """The files a stage ``record`` lists that are gone, or no longer hash to their sha256."""
    bad = []
    for filename, digest in record.get("files", {}).items():
        try:
            same = file_sha256(file_url(target, filename), target.storage_options) == digest
        except FileNotFoundError:
            bad.append(f"{filename} (absent)")
            continue
        if not same:
            bad.append(filename)
    return bad


def _bad_chunks(name: str, array: Any, recorded: np.ndarray) -> list[str]:
    """``name:i.j`` of each chunk of ``array`` whose sha256 is not the ``recorded`` one, read
    one at a time as verify reads the classes; ``(undecodable)`` after those whose stored bytes
    no longer decode, which a stage's rerun rewrites as it does the others."""
    bad = []
    for index in np.ndindex(*recorded.shape[:-1]):
        region = tuple(slice(i * c, min((i + 1) * c, n))
                       for i, c, n in zip(index, array.chunks, array.shape))
        key = f"{name}:{'.'.join(map(str, index))}"
        try:
            block = array[region]
        except Exception:  # noqa: BLE001 - any codec's complaint: the stored bytes do not decode
            bad.append(f"{key} (undecodable)")
            continue
        if not np.array_equal(_sha256(block), recorded[index]):
            bad.append(key)
    return bad
