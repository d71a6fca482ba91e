"""Labels inside an OME-Zarr image: a multiscale label pyramid under ``labels/<name>``.

The label pyramid follows the image's: one label level per image level from the
one whose shape equals the output's, each with that level's shape, chunks and
coordinate transformations, so viewers lay labels exactly over the image. The
image's channel axis (and any other non-space axis) is kept with length 1, as
NGFF asks of label images. Each coarser level is made from the full-resolution
labels by mode (or nearest) downsampling of the block each pixel covers, as the COG
export's overviews are (:func:`~geoseg.io.exports.pyramid.coarse_window`), never from
the level before it. The ``image-label`` metadata maps every class id to
its colour and name; the image's ``labels`` list gains the new name. NGFF 0.4
(Zarr v2) and 0.5 (Zarr v3) are written in the image's own version.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np
import zarr

from geoseg.core.text import brief
from geoseg.errors import ExportError, OutputExistsError, RasterNotFoundError
from geoseg.io import omezarr, remote
from geoseg.io.allow import overlapping
from geoseg.io.exports.common import (
    FinishedOutput,
    chunk_windows,
    held_until_written,
    open_finished,
    shown,
)
from geoseg.io.exports.pyramid import coarse_window, factors_between, parse_resampling
from geoseg.io.georef import describe_voxel_grid, voxel_grid_difference
from geoseg.io.output import output_exists
from geoseg.io.settled import compute_settled
from geoseg.io.sources import SPACE

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None


@dataclass(frozen=True)
class ImageLevel:
    """One resolution level of the image: its multiscale entry, array and axis roles."""

    dataset: dict[str, Any]
    array: zarr.Array
    roles: tuple[str, ...]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(n for n, r in zip(self.array.shape, self.roles) if r == SPACE)

    def label_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The image's axes, with ``spatial`` on the space axes and 1 on the others."""
        it = iter(spatial)
        return tuple(next(it) if r == SPACE else 1 for r in self.roles)

    def label_chunks(self) -> tuple[int, ...]:
        return tuple(c if r == SPACE else 1 for c, r in zip(self.array.chunks, self.roles))


def export_ome_labels(
    output_url: str,
    image_url: str,
    *,
    name: str = "segmentation",
    storage_options: dict[str, Any] | None = None,
    image_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    resampling: str = "mode",
) -> str:
    """Write the finished output at ``output_url`` as ``labels/<name>`` of the OME-Zarr image at
    ``image_url``; returns the label group's URL.

    The output's shape must equal one of the image's levels (usually level 0, or the level
    the job read). An existing label of that name is refused unless ``overwrite``; other labels
    are kept.
    """
    plan = check_ome(output_url, image_url, name=name, storage_options=storage_options,
                     image_options=image_options, overwrite=overwrite, resampling=resampling)
    method, out, image, levels = plan.method, plan.out, plan.image, plan.levels
    labels_url = f"{image_url.rstrip('/')}/labels"
    label_url = f"{labels_url}/{name}"
    with remote.storage_errors(label_url, image_options, "Writing labels"):
        _recover(labels_url, name, image_options)
    root = _open_image(image_url, image_options)  # as _recover left it
    labels = _labels_group(root)
    _refuse_existing_label(labels, name, image_url, overwrite)  # one _recover put back, too
    # every label is written beside its name, then moved there: a label it replaces is kept
    # until the new one is whole; one that fails part-way (a full disk) is removed, and one a
    # killed export left is removed by the next (:func:`_recover`)
    written = f"{HIDDEN.format(name=name, kind='partial')}{uuid.uuid4().hex[:8]}"
    try:
        with remote.storage_errors(label_url, image_options, "Writing labels"):
            _write_label(root, labels, written, name, image, levels, out, method)
    except BaseException:
        with contextlib.suppress(Exception):
            del labels[written]
        raise
    with remote.storage_errors(label_url, image_options, "Writing labels"), \
            _labels_held(labels_url, image_options), held_until_written(label_url):
        _swap(labels_url, written, name, image_options)
        _register(image_url, image_options, name)
    return label_url


@dataclass(frozen=True)
class LabelPlan:
    """What an OME-Zarr label export writes from and into, checked (:func:`check_ome`)."""

    method: str
    out: FinishedOutput
    image: dict[str, Any]
    levels: list[ImageLevel]


def check_ome(
    output_url: str,
    image_url: str,
    *,
    name: str = "segmentation",
    storage_options: dict[str, Any] | None = None,
    image_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    resampling: str = "mode",
) -> LabelPlan:
    """What :func:`export_ome_labels` refuses before writing anything; returns what it writes
    from and into."""
    method = parse_resampling(resampling)
    check_label_name(name)
    out = open_finished(output_url, storage_options)
    label_url = f"{image_url.rstrip('/')}/labels/{name}"
    if overlapping(label_url, image_options, output_url, storage_options):
        raise ExportError(
            f"OME-Zarr labels {shown(label_url)} would be written inside (or over) the output "
            f"store {shown(output_url)} they are exported from; expected an OME-Zarr image apart "
            "from the output. Nothing was written: give the image the job read (--ome-zarr), or "
            "another label name (--name).")
    root = _open_image(image_url, image_options)
    image = omezarr.image_of(dict(root.attrs), image_url)
    levels = _matching_levels(root, image, out, image_url)
    _check_placement(out, image, levels, image_url)
    if "labels" in root:
        _refuse_existing_label(root["labels"], name, image_url, overwrite)
    return LabelPlan(method, out, image, levels)


def _refuse_existing_label(labels: zarr.Group, name: str, image_url: str, overwrite: bool) -> None:
    if not overwrite and _existing_label(labels, name):
        raise OutputExistsError(
            f"{shown(image_url)} already has a label {name!r}; nothing was written. "
            "Choose another name (--name), or pass --overwrite (overwrite=True) to replace it."
        )


def _swap(labels_url: str, written: str, name: str, options: dict[str, Any] | None) -> None:
    """Move the label written as ``written`` over ``name`` in the labels group at
    ``labels_url``: the old one set aside first, put back if the move fails, removed after (on a
    local disk each step is a rename). What a process killed meanwhile leaves, the next export
    puts right (:func:`_recover`)."""
    fs, path = fsspec.core.url_to_fs(labels_url, **(options or {}))
    target, new = f"{path}/{name}", f"{path}/{written}"
    old = f"{path}/{HIDDEN.format(name=name, kind='old')}{uuid.uuid4().hex[:8]}"
    try:
        set_aside = fs.exists(target)
        if set_aside:
            fs.mv(target, old, recursive=True)
        fs.mv(new, target, recursive=True)
    except BaseException:
        _put_back(fs, target, old, new)
        raise
    with contextlib.suppress(Exception):  # else the next export removes it
        if set_aside:
            fs.rm(old, recursive=True)


def _put_back(fs: Any, target: str, old: str, new: str) -> None:
    """After a failed swap: the old label where it was (when set aside), no new one left."""
    for step in (lambda: fs.exists(old) and fs.exists(target) and fs.rm(target, recursive=True),
                 lambda: fs.exists(old) and fs.mv(old, target, recursive=True),
                 lambda: fs.exists(new) and fs.rm(new, recursive=True)):
        with contextlib.suppress(Exception):
            step()


HIDDEN = ".{name}.{kind}-"  # a label set aside (old) or being written (partial) in labels/


def _recover(labels_url: str, name: str, options: dict[str, Any] | None) -> None:
    """Put right what an export of label ``name`` killed mid-way left in the labels group: an
    old label set aside where the label is missing goes back; other such groups are removed."""
    fs, path = fsspec.core.url_to_fs(labels_url, **(options or {}))
    if not fs.isdir(path):
        return
    entries = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=False))
    olds = [e for e in entries if e.startswith(HIDDEN.format(name=name, kind="old"))]
    partials = [e for e in entries if e.startswith(HIDDEN.format(name=name, kind="partial"))]
    if olds and not fs.exists(f"{path}/{name}"):
        fs.mv(f"{path}/{olds.pop()}", f"{path}/{name}", recursive=True)
    for entry in olds + partials:
        fs.rm(f"{path}/{entry}", recursive=True)


def _write_label(root: zarr.Group, labels: zarr.Group, path: str, name: str,
                 image: dict[str, Any], levels: list[ImageLevel], out: FinishedOutput,
                 method: str) -> None:
    """Write the label ``name`` into ``labels/path``: its levels and its metadata."""
    group = labels.create_group(path)
    axis_names = [a["name"] if isinstance(a, dict) else str(a) for a in image.get("axes", [])]
    arrays = [
        _create_level(group, str(j), level, out, axis_names) for j, level in enumerate(levels)
    ]
    _copy_classes(out, arrays[0], levels[0])
    for coarse in arrays[1:]:
        _downsample_level(arrays[0], coarse, method, out.nodata_class)
    _write_label_metadata(group, name, image, levels, out, omezarr.ome_version(dict(root.attrs)))


def check_label_name(name: str) -> None:
    """Refuse a label name that is not one path segment (what ``labels/NAME`` holds)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ExportError(
            f"label name {name!r}: expected one path segment such as 'segmentation' "
            "(no slashes, not starting with a dot)."
        )


def _open_image(url: str, options: dict[str, Any] | None) -> zarr.Group:
    if not output_exists(url, options):
        raise RasterNotFoundError(
            f"No OME-Zarr image at {shown(url)}: nothing exists at that path."
        )
    try:
        root = zarr.open_group(url, mode="r+", **remote.zarr_options(url, options))
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError,
            zarr.errors.NodeTypeValidationError):  # a plain file there: FileExistsError
        root = None
    if root is None or not omezarr.multiscales(dict(root.attrs)):
        raise ExportError(
            f"{shown(url)} is not an OME-Zarr image (no multiscales metadata); "
            "--ome-zarr takes the image the labels belong to (its root group)."
        )
    return root


def _matching_levels(
    root: zarr.Group, image: dict[str, Any], out: FinishedOutput, url: str
) -> list[ImageLevel]:
    """The image levels from the one shaped like the output down to the coarsest."""
    levels = []
    try:
        for dataset in image["datasets"]:
            array = root[str(dataset["path"])]
            levels.append(ImageLevel(dataset, array, omezarr.roles(image, array.shape, url)))
    except (KeyError, TypeError, IndexError) as exc:
        raise ExportError(
            f"{shown(url)}: its multiscales metadata does not name the arrays of its levels "
            f"({type(exc).__name__}: {brief(exc.args[0] if exc.args else exc, 60)}); expected "
            "'datasets' with each level's 'path' in the image group, as OME-Zarr writers write "
            "them. Fix the image's metadata, or export next to another image.") from None
    omezarr.check_levels(image, {i: level.array.shape for i, level in enumerate(levels)},
                         levels[0].roles, url)  # labels are placed by the scales
    shapes = [level.spatial_shape for level in levels]
    if out.shape not in shapes:
        raise ExportError(
            f"{shown(out.url)} has classes of shape {out.shape}, but the levels of {shown(url)} "
            f"have spatial shapes {shapes}; labels must match one of them. Export the output of "
            "a job that read this image (input.level picks a level)."
        )
    return levels[shapes.index(out.shape) :]


def _check_placement(
    out: FinishedOutput, image: dict[str, Any], levels: list[ImageLevel], url: str
) -> None:
    """Refuse an output whose voxel affine places its voxels elsewhere than the image level of
    its shape does: the labels take that level's scale and translation, so they would lie on
    other physical points than the voxels they classify. An output without a voxel affine (no
    physical grid: 2-D, or an array that had none) is placed by the image alone."""
    index = len(image["datasets"]) - len(levels)
    level = omezarr.georef(image, index, levels[0].roles, url=url, shape=levels[0].array.shape)
    if out.georef.voxel_affine is None or voxel_grid_difference(out.georef, level) is None:
        return
    scale = ", ".join(f"{v:.6g}" for v in level.affine_matrix[[2, 1, 0], [0, 1, 2]])
    translation = ", ".join(f"{v:.6g}" for v in level.affine_matrix[2::-1, 3])
    raise ExportError(
        f"{shown(out.url)} is not on the physical grid of level {index} of {shown(url)}, though "
        f"both are {out.shape} voxels: the output's voxel affine has "
        f"{describe_voxel_grid(out.georef)}; the level's scale (z, y, x) is ({scale}) and its "
        f"translation (z, y, x) ({translation}). Labels take the image's coordinate "
        "transformations, so they would sit on other physical points than the voxels they "
        "classify. Nothing was written: export into the OME-Zarr image the job read (or one on "
        "its grid), or write the labels as NIfTI (--nifti), which keeps the output's own affine."
    )


def _create_level(
    group: zarr.Group, path: str, level: ImageLevel, out: FinishedOutput, axis_names: list[str]
) -> zarr.Array:
    """An empty label array shaped, chunked and encoded like the image ``level``."""
    meta = level.array.metadata
    kwargs: dict[str, Any] = {}
    if meta.zarr_format == 3:
        kwargs["chunk_key_encoding"] = meta.chunk_key_encoding
        kwargs["dimension_names"] = axis_names or None
    else:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": meta.dimension_separator or "/"}
    return group.create_array(
        path,
        shape=level.label_shape(level.spatial_shape),
        chunks=level.label_chunks(),
        dtype=out.dtype,
        fill_value=out.nodata_class,
        **kwargs,
    )


def _copy_classes(out: FinishedOutput, target: zarr.Array, level: ImageLevel) -> None:
    """Full-resolution labels: the output's classes, rechunked to the label chunks."""
    classes = da.from_array(out.array(), chunks=out.chunks)
    expanded = classes[tuple(slice(None) if r == SPACE else None for r in level.roles)]
    compute_settled(da.store(expanded.rechunk(target.chunks), target, lock=False, compute=False))


def _downsample_level(full: zarr.Array, coarse: zarr.Array, method: str, nodata: int) -> None:
    """Fill ``coarse`` chunk by chunk from the full-resolution blocks under each chunk."""
    factors = factors_between(full.shape, coarse.shape)

    def one(window: tuple[slice, ...]) -> None:
        coarse[window] = coarse_window(
            lambda w: np.asarray(full[w]), full.shape, window, factors, method, nodata,
            coarse.dtype
        )

    tasks = [dask.delayed(one)(w) for w in chunk_windows(coarse.shape, coarse.chunks)]
    compute_settled(*tasks)


def _write_label_metadata(
    group: zarr.Group,
    name: str,
    image: dict[str, Any],
    levels: list[ImageLevel],
    out: FinishedOutput,
    version: str,
) -> None:
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": image["axes"],
        "datasets": [
            {"path": str(j), **_transforms(level.dataset)} for j, level in enumerate(levels)
        ],
    }
    multiscale.update(_transforms(image))
    label = {
        "colors": [
            {"label-value": i, "rgba": list(rgba)} for i, rgba in sorted(out.colormap().items())
        ],
        "properties": [{"label-value": i, "class": n} for i, n in enumerate(out.class_names)]
        + [{"label-value": out.nodata_class, "class": "no data"}],
        "source": {"image": "../../"},
    }
    if version == "0.5":
        group.attrs["ome"] = {"version": version, "multiscales": [multiscale], "image-label": label}
    else:
        group.attrs.update(
            {
                "multiscales": [{"version": version, **multiscale}],
                "image-label": {"version": version, **label},
            }
        )


def _transforms(entry: dict[str, Any]) -> dict[str, Any]:
    found = entry.get("coordinateTransformations")
    return {"coordinateTransformations": found} if found else {}


def _labels_group(root: zarr.Group) -> zarr.Group:
    """The image's ``labels`` group, made if it has none; one another export made between the
    look and the making (two first exports into one image at once) is taken as it is."""
    try:
        return root.require_group("labels")
    except zarr.errors.ContainsGroupError:
        return root["labels"]


def _existing_label(labels: zarr.Group, name: str) -> bool:
    """Whether the labels group holds a label ``name``: listed, or whole (its ``image-label``
    metadata, written last, is there). A group of that name that is neither is what an export
    killed part-way left (earlier versions wrote a new label under its name): unfinished, it is
    replaced as a set-aside one is (:func:`_swap`)."""
    if name not in labels:
        return False
    node = labels[name]
    if name in _listed(dict(labels.attrs)) or not isinstance(node, zarr.Group):
        return True
    attrs = dict(node.attrs)
    return "image-label" in attrs or "image-label" in (attrs.get("ome") or {})


def _listed(attrs: dict[str, Any]) -> list[str]:
    """The names in a labels group's ``labels`` list (NGFF 0.5 keeps it under ``ome``)."""
    names = (attrs.get("ome") or {}).get("labels", attrs.get("labels", []))
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


@contextlib.contextmanager
def _labels_held(labels_url: str, options: dict[str, Any] | None) -> Iterator[None]:
    """The image's labels group held by this export alone while the block runs (a label moved
    into place and listed), so that two exports into one image each keep the other's name in
    the list. On a local disk: an advisory lock (``flock``) on the labels folder, which the
    system lets go of when its holder ends however it ends (a killed export leaves none to wait
    out). Other stores offer geoseg no lock: there the list is read just before it is written
    (:func:`_register`), which narrows the race to that moment."""
    fs, path = fsspec.core.url_to_fs(labels_url, **(options or {}))
    if fcntl is None or not remote.fs_is_local(fs):
        yield
        return
    folder = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # and the lock with it


def _register(image_url: str, options: dict[str, Any] | None, name: str) -> None:
    """Add ``name`` to the ``labels`` list of the image's labels group, keeping the others as
    they are now (read afresh, not as they were when the export began: another export may have
    listed its own label since), and consolidate the image's metadata where it is."""
    root = _open_image(image_url, options)
    version = omezarr.ome_version(dict(root.attrs))
    labels = root["labels"]
    attrs = dict(labels.attrs)
    names = [n for n in _listed(attrs) if n != name] + [name]
    if version == "0.5":
        labels.attrs["ome"] = {**(attrs.get("ome") or {}), "version": version, "labels": names}
    else:
        labels.attrs["labels"] = names
    if root.metadata.consolidated_metadata is not None:
        zarr.consolidate_metadata(root.store)
        if labels.metadata.consolidated_metadata is not None:  # its own list, emptied by zarr
            zarr.consolidate_metadata(root.store, path="labels")
