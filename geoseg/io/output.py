"""The output store: a Zarr v3 group of class ids (and probabilities), georeferenced.

Layout (readable by ``xarray.open_zarr`` and rioxarray)::

    OUT.zarr/
      classes        (y, x) uint8/uint16, fill value = nodata class; (z, y, x) for volumes,
                     with ``voxel_affine`` and ``spacing`` attributes (and ``units``,
                     and ``nifti_codes`` for a NIfTI input)
      probabilities  (class, y, x) float16, NaN where the input had no data (optional)
      spatial_ref    scalar; attrs crs_wkt, GeoTransform
      x, y           pixel-centre coordinates (north-up inputs)
      attrs["geoseg"]  classes, colours, nodata, model, provenance

Tasks write whole chunks through :class:`OutputTarget`, so no two tasks touch
the same chunk and no lock is needed. After its chunk is written, a task leaves
its mark in the manifest (``manifest_done`` and ``manifest_sha256``, one element
per task region (the ``task_region`` attribute: one or more output chunks), each in its own
Zarr chunk so tasks never share one): what
lets a rerun skip finished chunks and ``verify`` check them. Until every array exists the
group's attributes say ``creating``: a run stopped then left no chunk, and a rerun creates it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.core.sync import sync

from geoseg.core.text import brief, json_kind, whole_number
from geoseg.core.urls import credentials_refused, public_url
from geoseg.errors import (
    CorruptOutputError,
    GeosegError,
    NestedMetadataError,
    OutputExistsError,
    StorageAccessError,
)
from geoseg.io import faults, remote
from geoseg.io.files import STAGING_PREFIXES
from geoseg.io.georef import GeoRef
from geoseg.io.metaguard import open_store
from geoseg.tiling.plan import ceil_div


@dataclass(frozen=True)
class OutputTarget:
    """Where tasks write; small and picklable. Storage options are never printed."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # called before each chunk or manifest write: raises when this run no longer owns the
    # output (its lease taken over), so that tasks still running write nothing into the next
    # owner's output (a run's :meth:`geoseg.jobs.lease.Lease.fence`)
    fence: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def _fenced(self) -> None:
        if self.fence is not None:
            self.fence()

    def open_group(self, mode: str = "r+", attributes: dict[str, Any] | None = None) -> zarr.Group:
        """The output's group; ``attributes``: a new group's, written with it in one write."""
        # through a store that measures metadata before zarr decodes it with Python's json (one
        # frame per level: a deep document would reach the recursion limit)
        try:
            return zarr.open_group(open_store(self.url, self.storage_options, mode), mode=mode,
                                   attributes=attributes)
        except NestedMetadataError:
            raise CorruptOutputError(
                f"{public_url(self.url)}: its group metadata (zarr.json, .zattrs or .zgroup) "
                "nests arrays or objects too deeply to read, as no geoseg output does: it is "
                "corrupt or hostile. Write it again (a geoseg output: its job with --overwrite), "
                "or give another URL.") from None

    @remote.retrying("Writing")
    def finalize(self, attrs: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
        """Merge ``attrs`` into the group's ``geoseg`` attributes, less the keys ``drop``
        (what an earlier run's end said), and consolidate metadata, so ``xarray.open_zarr``
        opens the output in one read. Fenced as chunk writes are: a run that lost its lease
        marks nothing in the output another run now writes."""
        self._fenced()
        group = self.open_group()
        kept = {k: v for k, v in group.attrs["geoseg"].items() if k not in drop}
        group.attrs["geoseg"] = {**kept, **attrs}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            # the instance stage's Parquet and GeoJSON files live in the group, beside its arrays
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
            zarr.consolidate_metadata(group.store)

    @faults.locating(faults.output_chunk)
    @remote.retrying("Writing")
    def write(self, name: str, region: tuple[slice, ...], data: np.ndarray) -> None:
        """Write ``data`` at ``region`` (spatial slices) of array ``name``."""
        self._fenced()
        array = self._writing(self.open_group(), name)
        lead = (slice(None),) * (array.ndim - len(region))
        array[lead + region] = data

    def _writing(self, group: zarr.Group, name: str) -> zarr.Array:
        """Array ``name`` of ``group``, which a run is writing; one gone meanwhile (its folder,
        or the whole output, deleted) raises :class:`CorruptOutputError` saying so, not zarr's
        bare ``KeyError``: what the output holds can no longer be told."""
        try:
            return group[name]
        except KeyError:
            raise CorruptOutputError(
                f"{public_url(self.url)} lost its {name} array while the run wrote it (its folder "
                "or the output deleted?), so what it holds cannot be told and nothing more was "
                "written there. Run the job again with --overwrite to write the output anew.") \
                from None

    @faults.locating(faults.output_chunk)
    @remote.retrying("Reading")
    def read(self, name: str, region: tuple[slice, ...]) -> np.ndarray:
        """``region`` of array ``name``; stored bytes that do not decode raise
        :class:`CorruptOutputError` naming the chunk and how to recompute it."""
        array = self.open_group(mode="r")[name]
        with self._decoding("its stored bytes"):
            return np.asarray(array[(slice(None),) * (array.ndim - len(region)) + region])

    @contextlib.contextmanager
    def _decoding(self, what: str) -> Iterator[None]:
        """Turn whatever a codec raises on damaged bytes read inside into
        :class:`CorruptOutputError` saying that ``what`` do not decode and how to recompute
        them; storage errors, geoseg's own and running out of memory pass as they are."""
        try:
            yield
        except (OSError, GeosegError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a codec raises on damaged bytes
            raise CorruptOutputError(
                f"{what} do not decode ({remote.reason(exc, self.storage_options)}). "
                f"Run geoseg verify {public_url(self.url)} --repair, then the job again: it "
                "recomputes the damaged task regions.") from None

    @faults.locating(faults.manifest_entry)
    @remote.retrying("Writing")
    def mark_done(self, key: str, checksum: str) -> None:
        """Record that chunk ``key`` (``"i.j"``) is written and what its bytes hash to."""
        self._fenced()
        group = self.open_group()
        index = tuple(int(i) for i in key.split("."))
        self._writing(group, MANIFEST_SHA)[index] = np.frombuffer(bytes.fromhex(checksum),
                                                                  dtype=np.uint8)
        self._writing(group, MANIFEST_DONE)[index] = True

    @remote.retrying("Reading")
    def done_keys(self) -> set[str]:
        """Keys of every chunk a finished task recorded (:func:`stored_chunks` of the manifest)."""
        return self.stored_keys(MANIFEST_DONE)

    @remote.retrying("Reading")
    def stored_keys(self, name: str) -> set[str]:
        """Keys (``"i.j"``) of the stored objects of array ``name``, in one listing."""
        return sync(_collect(stored_chunks(self.open_group(mode="r")[name]), set()))

    @remote.retrying("Reading")
    def count_done(self) -> int:
        """How many chunks a finished task recorded, counted as the manifest is listed: time and
        memory grow with what was written, not with the chunks the output declares."""
        return sync(_count(stored_chunks(self.open_group(mode="r")[MANIFEST_DONE])))

    @remote.retrying("Reading")
    def checksum(self, key: str) -> str | None:
        """The sha256 the manifest records for task region ``key``, ``None`` if it records none.
        A manifest entry whose stored bytes do not decode (damaged, emptied) raises
        :class:`CorruptOutputError`, as damaged chunks do in :meth:`read`: verify names the
        region, and ``--repair`` un-marks it."""
        group = self.open_group(mode="r")
        index = tuple(int(i) for i in key.split("."))
        done, sha = group[MANIFEST_DONE], group[MANIFEST_SHA]
        with self._decoding(f"the manifest entry of task region {key}: its stored bytes"):
            if not done[index]:
                return None
            return bytes(np.asarray(sha[index])).hex()

    @remote.retrying("Reading")
    def stored_layout(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]:
        """``(task region, chunks, shards)`` of the output as created: the grid its manifest's
        keys count in, and its arrays' Zarr chunks and shards (``None``: not sharded)."""
        group = self.open_group(mode="r")
        self._require_arrays(group)
        classes = group["classes"]
        shards = None if classes.shards is None else tuple(classes.shards)
        task = geoseg_attrs(group.attrs.get("geoseg"), self.url).get("task_region")
        task, chunks = tuple(task or shards or classes.chunks), tuple(classes.chunks)
        if len(task) != len(chunks) or any(t % c for t, c in zip(task, chunks)):
            raise _changed(self.url, f"has task_region = {list(task)}, expected whole numbers of "
                                     f"its chunks {list(chunks)}")
        return task, chunks, shards

    def _require_arrays(self, group: zarr.Group) -> None:
        """Refuse an output whose ``classes`` or manifest arrays lost their own metadata (a
        partial copy, a deleted folder) though the group's consolidated copy still lists them:
        what it holds cannot be told, and every read or write of them would fail."""
        names = ("classes", MANIFEST_DONE, MANIFEST_SHA)
        found = sync(_all_exist(group.store, [f"{name}/zarr.json" for name in names]))
        gone = [name for name, there in zip(names, found) if not there]
        if gone:
            raise CorruptOutputError(
                f"{public_url(self.url)} has lost its {', '.join(gone)} array(s) (their "
                "zarr.json is gone: a deleted folder or a partial copy), so what it holds cannot "
                "be told and nothing was read or written. Restore them from a copy, or run the "
                "job again with --overwrite to write the output anew.")

    def attrs(self) -> dict[str, Any]:
        """The group's ``geoseg`` attributes, or ``{}`` if this is not a geoseg output; raises
        :class:`CorruptOutputError` where they are not what geoseg writes (:func:`geoseg_attrs`)."""
        try:
            found = self.open_group(mode="r").attrs.get("geoseg")
        except CorruptOutputError:
            raise
        except (FileNotFoundError, zarr.errors.NodeTypeValidationError, ValueError, KeyError):
            return {}
        except Exception as exc:  # a storage failure (a refused connection): named, not internal
            translated = remote.translate(exc, self.url, self.storage_options, "Reading")
            if translated is exc:
                raise
            raise translated from None
        return geoseg_attrs(found, self.url)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _whole(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < 2**63


def _colour(value: Any) -> bool:
    return isinstance(value, list) and 3 <= len(value) <= 4 and all(
        _whole(v) and v <= 255 for v in value)


# What geoseg reads back from an output's ``geoseg`` attribute, and the kind it wrote there.
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "class_names": (_names, "a list of class names (strings)"),
    "class_colors": (lambda v: isinstance(v, list) and all(map(_colour, v)),
                     "a list of [r, g, b] colours of whole numbers 0..255"),
    "nodata_class": (lambda v: _whole(v) and v < 2**32, "a class id (a whole number >= 0)"),
    "task_region": (lambda v: isinstance(v, list) and len(v) in (2, 3)
                    and all(_whole(n, 1) for n in v), "2 or 3 whole numbers >= 1"),
    "n_chunks": (_whole, "a whole number >= 0"),
    "status": (lambda v: isinstance(v, str), "a string"),
    "run_record": (lambda v: isinstance(v, str), "a string (a URL)"),
    "layout": (lambda v: isinstance(v, dict), "an object"),
    "provenance": (lambda v: isinstance(v, dict), "an object"),
    "instances": (lambda v: isinstance(v, dict), "an object"),
}


def geoseg_attrs(found: Any, url: str) -> dict[str, Any]:
    """An output's ``geoseg`` attribute (``found``; ``None``: absent), every key geoseg reads
    back checked against the kind it writes. Raises :class:`CorruptOutputError` naming the key
    for one that is not: edited, or written by another tool, it would fail wherever it is read."""
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise _changed(url, f"is {json_kind(found)} {brief(found, 40)}, expected an object")
    for key, (ok, expected) in _KINDS.items():
        if key in found and not ok(found[key]):
            raise _changed(url, f"has {key} = {brief(found[key], 40)}, expected {expected}")
    return dict(found)


def _changed(url: str, said: str) -> CorruptOutputError:
    return CorruptOutputError(
        f"{public_url(url)}: its 'geoseg' attribute {said}, as geoseg writes it. It was changed "
        "after the run, or by another tool: run the job again with --overwrite to rewrite it.")


MANIFEST_DONE = "manifest_done"
MANIFEST_SHA = "manifest_sha256"
CREATING = "creating"  # in the group's attributes until every array of the layout exists
REMOVING = "removing"  # the status of an output being deleted (--overwrite): never read as one
# what zarr's atomic metadata write leaves beside the group's metadata when killed mid-write
ZARR_PARTIAL = re.compile(r"(zarr|\.zattrs|\.zgroup|\.zmetadata)\.[0-9a-f]{32}\.partial")


async def stored_chunks(array: zarr.Array) -> AsyncIterator[str]:
    """Keys (``"i.j"``) of the chunks of ``array`` that are stored, as the store lists them.

    A chunk holding only the fill value is never stored, so in the manifest a stored chunk is
    a chunk marked done. Reading the manifest instead costs one request per chunk the output
    declares (hours for 10**7 chunks), whether or not any was written."""
    prefix = f"{array.store_path.path}/"
    encoding = array.metadata.chunk_key_encoding
    async for name in array.store_path.store.list_prefix(prefix):
        coords = _chunk_coords(name.removeprefix(prefix), encoding)
        if coords is not None and len(coords) == array.ndim:
            yield ".".join(map(str, coords))


def _chunk_coords(name: str, encoding: Any) -> tuple[int, ...] | None:
    """The grid coordinates a stored chunk's ``name`` encodes (``c/0/1`` or ``0.1``), or
    ``None`` for anything else (metadata)."""
    separator = encoding.separator
    if getattr(encoding, "name", "default") == "default":
        if not name.startswith(f"c{separator}"):
            return None
        name = name[2:]
    parts = [whole_number(part) for part in name.split(separator)]
    return None if None in parts else tuple(parts)


async def _collect(keys: AsyncIterator[str], into: set[str]) -> set[str]:
    async for key in keys:
        into.add(key)
    return into


async def _count(keys: AsyncIterator[str]) -> int:
    n = 0
    async for _ in keys:
        n += 1
    return n


def chunk_key(region: tuple[slice, ...], chunks: tuple[int, ...]) -> str:
    """``"i.j"``: the chunk-grid index of a region that is one whole chunk."""
    return ".".join(str(r.start // c) for r, c in zip(region, chunks))


def chunk_checksum(*blocks: np.ndarray) -> str:
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()


def output_exists(url: str, storage_options: dict[str, Any] | None = None, *,
                  writing: bool = False) -> bool:
    """Whether anything is at ``url``: an empty folder is nothing (as on an object store, and as
    a removal stopped after its last file leaves it), nor one holding only zarr's leftovers of a
    metadata write killed midway (a run killed creating its group). A missing bucket (nothing
    could be written there), refused access and a URL carrying credentials (never shown) raise
    geoseg errors instead; refused access names the permissions to read (``writing``: to write,
    for a caller about to write there)."""
    refuse_credentials(url)
    what = "Opening output" if writing else "Reading output"
    with remote.storage_errors(url, storage_options, what):
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        root = path.rstrip("/")
        if _served_group(fs, root) or (
                fs.exists(root) and (not fs.isdir(root) or _holds_anything(fs, root))):
            return True
        remote.require_bucket(url, storage_options, what)
    return False


def refuse_credentials(url: str) -> None:
    """Raise :class:`StorageAccessError` before anything is asked of the store when ``url``
    carries credentials where its store would read them as part of the bucket name
    (``s3://KEY:SECRET@bucket/...``): the store's own refusal quotes them."""
    said = credentials_refused(url, "Output")
    if said is not None:
        raise StorageAccessError(said)


async def _all_exist(store: Any, keys: list[str]) -> list[bool]:
    """Whether each of ``keys`` is in ``store``, asked at once (one round trip on a remote store)."""
    return list(await asyncio.gather(*(store.exists(key) for key in keys)))


def _served_group(fs: Any, root: str) -> bool:
    """Over HTTP, whether a Zarr group's metadata document is at ``root``: a folder answers only
    where the server lists folders (else 403 or 404). A refused connection or an error status
    other than 404 raises (fsspec's HTTP ``exists`` reads them as "nothing there" unless
    ``strict``)."""
    return "http" in remote.fs_protocols(fs) and any(
        fs.exists(f"{root}/{name}", strict=True) for name in ("zarr.json", ".zgroup"))


def _listed(fs: Any, folder: str) -> list[tuple[str, str]]:
    """``(path, name)`` of each entry at the top of ``folder``."""
    return [(entry, entry.rstrip("/").rsplit("/", 1)[-1]) for entry in fs.ls(folder, detail=False)]


def _holds_anything(fs: Any, folder: str) -> bool:
    """Whether ``folder`` holds more than zarr's leftovers of metadata writes killed midway
    (what a run killed as it created its group leaves)."""
    return any(not ZARR_PARTIAL.fullmatch(name) for _, name in _listed(fs, folder))


def _remove_zarr_leftovers(url: str, storage_options: dict[str, Any] | None) -> None:
    """Delete zarr's leftovers of metadata writes killed midway from a folder that holds nothing
    else (:func:`output_exists`): zarr would take them for data and refuse to create the group."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = path.rstrip("/")
    if fs.isdir(root):
        for entry, name in _listed(fs, root):
            if ZARR_PARTIAL.fullmatch(name):
                fs.rm(entry)


def written_by_geoseg(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``url`` holds a Zarr group that geoseg wrote (it has ``geoseg`` attributes)."""
    try:
        return "geoseg" in zarr.open_group(url, mode="r", **remote.zarr_options(url, storage_options)).attrs
    except Exception:  # noqa: BLE001 - anything unreadable as a geoseg group is not one
        return False


# files geoseg writes inside an output group beside its arrays (the instance stage's)
INSTANCE_FILES = {"table": "instances.parquet", "polygons": "polygons.parquet",
                  "geojson": "polygons.geojson"}
_METADATA = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zmetadata"})
# the arrays create_output makes (:func:`_create_arrays`, :func:`write_georef`)
LAYOUT_ARRAYS = frozenset({"classes", "probabilities", MANIFEST_DONE, MANIFEST_SHA, "x", "y",
                           "spatial_ref"})


def remove_output(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete what geoseg wrote at ``url``; refuse (deleting nothing) anything else there,
    inside a geoseg group as well (a user's notes kept beside the arrays)."""
    refuse_credentials(url)
    with remote.storage_errors(url, storage_options, "Removing output"):
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if not fs.exists(path.rstrip("/")):
            return
    if not written_by_geoseg(url, storage_options):
        raise OutputExistsError(
            f"{public_url(url)} exists and is not something geoseg wrote (no Zarr group with "
            "geoseg attributes there); nothing was deleted, even with --overwrite. Choose "
            "another output URL, or remove it yourself if it is really to go.")
    root = path.rstrip("/")
    foreign = _foreign_entries(fs, root, url, storage_options)
    if foreign:
        raise OutputExistsError(
            f"{public_url(url)} is a geoseg output that also holds what geoseg did not write "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); nothing was deleted, "
            "even with --overwrite. Move those out of it first, or choose another output URL.")
    # marked first and its metadata deleted last: a removal stopped half-way (a kill) leaves an
    # output that says so, which the next run finishes removing, never one read as complete
    target = OutputTarget(url, dict(storage_options or {}))
    group = target.open_group()
    group.attrs["geoseg"] = {**group.attrs["geoseg"], "status": REMOVING}
    for entry, name in _listed(fs, root):
        if name not in _METADATA:
            fs.rm(entry, recursive=True)
    fs.rm(root, recursive=True)


def being_removed(attrs: dict[str, Any]) -> bool:
    """Whether an ``--overwrite`` was stopped while it deleted this output (``attrs``: its
    ``geoseg`` attributes): some of its arrays may be gone; nothing of it is to be read."""
    return attrs.get("status") == REMOVING


def half_deleted(url: str, nothing: str) -> str:
    """What a command that reads an output says of one :func:`being_removed`; ``nothing``: what
    it did not do ("nothing was exported")."""
    return (f"{public_url(url)}: an --overwrite stopped while it deleted this output, so part of "
            f"it is gone; {nothing}. Run its job again to write it anew.")


def _foreign_entries(fs: Any, path: str, url: str,
                     storage_options: dict[str, Any] | None) -> list[str]:
    """Names at the top of the group at ``path`` that are neither its members, its metadata
    nor a file geoseg writes there."""
    group = zarr.open_group(url, mode="r", **remote.zarr_options(url, storage_options))
    known = {*group.keys(), *_METADATA, *INSTANCE_FILES.values()}
    if half_created(dict(group.attrs.get("geoseg") or {})):  # an array stopped mid-creation:
        known |= LAYOUT_ARRAYS  # its folder may be there without its metadata
    return sorted(n for _, n in _listed(fs, path) if n not in known
                  and not n.startswith(STAGING_PREFIXES) and not ZARR_PARTIAL.fullmatch(n))


def create_output(
    url: str,
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    georef: GeoRef,
    class_names: list[str],
    class_dtype: str,
    nodata_class: int,
    probabilities: bool = False,
    inner_chunks: tuple[int, ...] | None = None,
    task_region: tuple[int, ...] | None = None,
    attrs: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> OutputTarget:
    """Create the output group with empty arrays; refuse an existing one unless ``overwrite``.

    ``chunks`` is the arrays' chunk size. With ``inner_chunks``, arrays are sharded: each
    ``chunks``-sized shard holds ``inner_chunks``-sized chunks, so tasks still never share a
    storage object. ``task_region`` (whole ``chunks`` per axis; default ``chunks``) is what
    one task writes, and what the manifest records; it is kept in the group's attributes."""
    remote.check_writable(url)
    remote.local_options_ignored(url, storage_options, "output")
    if output_exists(url, storage_options, writing=True):
        if not overwrite:
            raise OutputExistsError(
                f"Output {url} already exists; nothing was written. Choose another output URL, "
                "or pass --overwrite (overwrite: true) to replace it."
            )
        remove_output(url, storage_options)
    else:
        _remove_zarr_leftovers(url, storage_options)
    target = OutputTarget(url, dict(storage_options or {}))
    layout = Layout(chunks, inner_chunks, task_region or chunks)
    creating = {"class_names": class_names, "nodata_class": nodata_class,
                "task_region": list(layout.task), "layout": layout.record(shape),
                **(attrs or {}), CREATING: True}
    with remote.storage_errors(url, storage_options, "Creating output"):  # with its attributes,
        group = target.open_group(mode="w-", attributes={"geoseg": creating})  # in one write
    _create_arrays(group, shape, layout, class_dtype, nodata_class, len(class_names), probabilities, georef)
    if len(shape) == 2:
        write_georef(group, georef, shape)
    group.attrs["geoseg"] = {k: v for k, v in group.attrs["geoseg"].items() if k != CREATING}
    return target


def half_created(attrs: dict[str, Any]) -> bool:
    """Whether a run was stopped while it created the output (``attrs``: its ``geoseg``
    attributes): some arrays may be missing, and no chunk was written yet."""
    return bool(attrs.get(CREATING))


@dataclass(frozen=True)
class Layout:
    """The arrays' chunks (``region``; shards when sharding, holding ``inner`` chunks) and what
    one task writes (``task``: whole ``region``s)."""

    region: tuple[int, ...]
    inner: tuple[int, ...] | None = None
    task: tuple[int, ...] = ()

    def kwargs(self, lead: tuple[int, ...] = ()) -> dict[str, Any]:
        if self.inner is None:
            return {"chunks": (*lead, *self.region)}
        return {"chunks": (*lead, *self.inner), "shards": (*lead, *self.region)}

    def record(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """What the ``classes`` array is created with, kept in the group's attributes: an edit of
        its metadata is then told from damage before the run's record exists."""
        kwargs = self.kwargs()
        return {"shape": list(shape), "chunks": list(kwargs["chunks"]),
                "shards": list(kwargs["shards"]) if "shards" in kwargs else None}


def _create_arrays(group: zarr.Group, shape: tuple[int, ...], layout: Layout, class_dtype: str,
                   nodata_class: int, n_classes: int, probabilities: bool, georef: GeoRef) -> None:
    dims = SPATIAL_DIMS[len(shape)]
    geo = ({"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"} if len(shape) == 2
           else _volume_attrs(georef))
    group.create_array("classes", shape=shape, **layout.kwargs(), dtype=class_dtype, fill_value=nodata_class,
                       dimension_names=list(dims), attributes={**geo, "nodata": nodata_class})
    if probabilities:
        group.create_array("probabilities", shape=(n_classes, *shape), **layout.kwargs((n_classes,)),
                           dtype="float16", fill_value=np.nan, dimension_names=["class", *dims],
                           attributes=geo)
    counts = tuple(ceil_div(n, c) for n, c in zip(shape, layout.task or layout.region))
    names = [f"chunk_{d}" for d in dims]
    ones = (1,) * len(counts)
    group.create_array(MANIFEST_DONE, shape=counts, chunks=ones, dtype="bool", fill_value=False,
                       dimension_names=names)
    group.create_array(MANIFEST_SHA, shape=(*counts, 32), chunks=(*ones, 32), dtype="uint8", fill_value=0,
                       dimension_names=[*names, "byte"])


SPATIAL_DIMS = {2: ("y", "x"), 3: ("z", "y", "x")}


def _volume_attrs(georef: GeoRef) -> dict[str, Any]:
    """A volume's voxel affine, spacing, units and NIfTI xform codes, as array attributes."""
    return georef.volume_attrs()


def write_georef(group: zarr.Group, georef: GeoRef, shape: tuple[int, int]) -> None:
    """Add ``spatial_ref`` and ``x``/``y`` coordinate arrays for an image of ``shape``."""
    coords = georef.coords(*shape)
    if "spatial_ref" in coords:
        ref = group.create_array("spatial_ref", shape=(), dtype="int64", dimension_names=[],
                                 attributes=georef.spatial_ref_attrs())
        ref[()] = 0
    for name in ("y", "x"):
        if name in coords:
            values = np.asarray(coords[name][1])
            arr = group.create_array(name, shape=values.shape, dtype="float64", dimension_names=[name],
                                     chunks=values.shape)
            arr[:] = values
