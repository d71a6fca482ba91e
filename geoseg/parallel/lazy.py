"""``segment``: a lazy DataArray of class ids (or probabilities), one task per region of whole output chunks."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from affine import Affine

from geoseg.core.nodata import attrs_nodata
from geoseg.core.pixels import check_pixel_dtype
from geoseg.core.segmenter import (
    Segmenter,
    band_order,
    band_order_said,
    bands_last,
    check_dimensions,
)
from geoseg.core.text import as_whole, brief
from geoseg.ensembles.members import trained_models
from geoseg.errors import ParameterError, PlanError
from geoseg.io.georef import (
    PIXEL_INDEX,
    VOXEL_INDEX,
    GeoRef,
    coords_transform,
    grid_attrs,
    pixel_window_transform,
    uneven,
    window_affines,
)
from geoseg.io.sources import RasterSource
from geoseg.methods.threshold import check_manual_in_range
from geoseg.models.modelfile import load_model
from geoseg.models.ranges import Sampled, range_warnings
from geoseg.parallel.tasks import OUTPUTS, RegionWork
from geoseg.tiling import Geometry, InferenceSettings, Layout, Plan
from geoseg.tiling.plan import ceil_div, coerce_per_axis

NODATA_CLASS = 255
# The fewest pixels one task computes where the raster allows (256 x 256, 40 x 40 x 40): each
# task also costs about 2 ms to plan and run whatever its size, so a threshold over 8-pixel
# chunks spent 14 s of a 600 x 600 raster in that overhead (bench/bench_small_chunks.py).
MIN_TASK_PIXELS = 2**16


def segment(
    raster: xr.DataArray,
    model: Segmenter | str,
    *,
    output: str = "classes",
    chunks: int | Sequence[int] | None = None,
    tile: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    nodata_class: int | None = None,
    blend: str | None = None,
    overlap: float | None = None,
) -> xr.DataArray:
    """Segment ``raster`` lazily; nothing is computed until you ask.

    Each task computes whole output chunks (several when they are small next to the
    network's tiles, see :meth:`geoseg.tiling.Plan.create`) and the result comes in ``chunks``.

    Parameters
    ----------
    raster
        ``("band", "y", "x")`` DataArray, ideally from :func:`geoseg.open_raster`, in
        which case each task reads its own window from storage; wrap an in-memory array as
        ``xr.DataArray(arr, dims=("band", "y", "x"))`` (an image with its bands last, as
        numpy and PIL hold RGB: ``dims=("y", "x", "band")``).
    model
        A segmenter (e.g. from :func:`geoseg.load_model`) or a model path/URL (or
        ``os.PathLike``).
    output
        ``"classes"`` (class ids, ``(y, x)``, uint8, or uint16 beyond 255 classes) or
        ``"probabilities"`` (``(class, y, x)`` float32, NaN where the input has no data; a
        job stores them as float16).
    chunks
        Output chunk size, one int or one per spatial axis (default: the
        raster's chunks).
    tile, halo
        Network tile core size and context per side, one int or one per spatial
        axis (default: ``GEOSEG_TILE`` and the model's receptive field). A halo
        below the receptive field trades exactness for speed; a halo with a blend
        other than ``"crop"`` is an error (:meth:`~geoseg.tiling.Plan.create`).
    batch_size
        Tiles per network call, a whole number >= 1 (default ``GEOSEG_BATCH_SIZE``).
    nodata_class
        Class id written where the input has no data (default 255, or 65535
        beyond 255 classes): above the model's class ids and within the class array's
        dtype, as ``output.nodata_class`` in a job.
    blend, overlap
        ``"crop"`` (tile cores with a halo; exact when the halo covers the receptive
        field; the default for local models) or a blend of overlapping windows,
        ``"gaussian"`` (the default for models with global context), ``"constant"``,
        ``"linear"`` or ``"cosine"``, with neighbouring windows overlapping by the
        fraction ``overlap`` (default 0.5).
    """
    if output not in OUTPUTS:
        raise ParameterError(f"output={output!r}; expected one of {OUTPUTS}.")
    raster = _band_first(_checked_raster(raster), model)
    check_pixel_dtype(raster.dtype, "segment(): raster", "the raster")
    segmenter = _segmenter(model)
    segmenter.check_bands(list(map(str, raster["band"].values)), "the raster")
    _warn_band_order(segmenter, _band_names(raster))
    check_manual_in_range(segmenter, raster.dtype, "the raster")  # as a job checks its spec
    check_dimensions(segmenter, raster.dims[1:], "the raster", key="segment(): model")
    _warn_range(segmenter, raster)  # reads a few windows: only once the raster fits the model
    check_nodata_class(nodata_class, segmenter.n_classes)
    like = largest_chunks(raster)
    plan = Plan.create(raster.shape[1:], Geometry.of(segmenter),
                       inference_settings(len(raster.shape) - 1, tile, halo, blend, overlap, batch_size),
                       Layout.create(raster.shape[1:], chunks, like=like),
                       min_pixels=MIN_TASK_PIXELS)
    work = plan_work(segmenter, plan, nodata=raster_nodata(raster), nodata_class=nodata_class)
    read = _reader(storage_source(raster), work.windows_reach_past_regions)
    blocks = [_region_block(work, plan, raster, read, region, output, segmenter.n_classes)
              for region in plan.regions()]
    data = da.block(_nest(blocks, plan.shape, plan.region))
    if plan.region != plan.chunks:  # a task computes several output chunks: split its block
        lead = data.shape[:1] if output == "probabilities" else ()
        data = data.rechunk((*lead, *plan.chunks))
    return _wrap(data, raster, segmenter, work, output)


def _warn_range(segmenter: Segmenter, raster: xr.DataArray) -> None:
    """Warn, as a job does, when a model's input bands hold values far from its training
    statistics (:mod:`geoseg.models.ranges`): a few windows are read where that is cheap, from
    storage (an :func:`open_raster` result) or an array not computed by dask (in memory, or
    read lazily by xarray: only the windows); a raster computed by a dask graph is not read."""
    infos = trained_models(segmenter)
    source = storage_source(raster)
    if not infos or (source is None and raster.chunks is not None):
        return
    if source is not None:
        read, chunks = source.read, source.chunks
    else:
        read = lambda window: raster[(slice(None), *window)].values  # xarray reads only the window
        chunks = tuple(-(-size // 2) for size in raster.shape[1:])  # four windows, spread out
    sampled = Sampled(read, raster.shape[1:], tuple(chunks), raster_nodata(raster),
                      tuple(_band_names(raster)), "select other bands (raster.isel(band=...))")
    for said in range_warnings(sampled, infos, "segment(): the raster's"):
        warnings.warn(said, UserWarning, stacklevel=3)


def _band_names(raster: xr.DataArray) -> list[str]:
    """The names of ``raster``'s bands: its ``band`` coordinate where that holds names, else
    rioxarray's ``long_name`` (a GeoTIFF's band descriptions): looked up by band number where
    the coordinate holds rioxarray's 1-based numbers (``isel`` keeps them with each band while
    ``long_name`` stays in file order), else in order where it names every band."""
    values = list(raster["band"].values)
    coord = [str(v) for v in values]
    long_name = raster.attrs.get("long_name")
    if not isinstance(long_name, (list, tuple)) or any(isinstance(v, str) for v in values):
        return coord
    if all(isinstance(v, (int, np.integer)) and 1 <= v <= len(long_name) for v in values):
        return [str(long_name[int(v) - 1]) for v in values]
    return [str(n) for n in long_name] if len(long_name) == len(values) else coord


def _warn_band_order(segmenter: Segmenter, names: list[str]) -> None:
    """Warn when the raster's bands are named as the segmenter's but in another order or some
    repeated (:func:`~geoseg.core.segmenter.band_order`): it would read each as another band."""
    order = band_order(segmenter.bands, names)
    if order is None:
        return
    wanted = ", ".join(segmenter.bands or ())
    fix = (f"Select them in its order: raster.isel(band={order})." if order
           else f"Select bands holding {wanted}.")
    said = band_order_said(segmenter.name, segmenter.bands or (), names)
    warnings.warn(f"segment(): the raster's {said} {fix}", UserWarning, stacklevel=3)


def region_work(segmenter: Segmenter, shape: Sequence[int], *, tile: Any = None, halo: Any = None,
                batch_size: int | None = None, nodata: float | None = None,
                nodata_class: int | None = None, blend: str | None = None,
                overlap: float | None = None, regions: Sequence[int] | None = None,
                compile: bool = False) -> RegionWork:
    """The work of :func:`plan_work` for a :class:`~geoseg.tiling.Plan` of these settings;
    ``regions`` is the unit a task writes whole (output chunks or shards; default: one
    default output chunk)."""
    settings = inference_settings(len(shape), tile, halo, blend, overlap, batch_size)
    plan = Plan.create(shape, Geometry.of(segmenter), settings, Layout.create(shape, regions))
    return plan_work(segmenter, plan, nodata=nodata, nodata_class=nodata_class, compile=compile)


def plan_work(segmenter: Segmenter, plan: Plan, *, nodata: float | None = None,
              nodata_class: int | None = None, compile: bool = False) -> RegionWork:
    """Everything the regions of ``plan`` share: the segmenter's reference, the tiling, the
    input's ``nodata`` and the class ids written (``nodata_class`` where the input has no
    data; default 255, or 65535 beyond 255 classes)."""
    dtype = "uint8" if segmenter.n_classes <= 255 else "uint16"
    default_nodata = NODATA_CLASS if dtype == "uint8" else 65535
    return RegionWork(segmenter.ref(), plan.tiling, nodata, plan.batch_size,
                      default_nodata if nodata_class is None else int(nodata_class), dtype, plan.region, compile)


def _checked_raster(raster: Any) -> xr.DataArray:
    """``raster`` when it is a DataArray; anything else (a numpy or dask array, a path) is refused
    with what segment() takes."""
    if isinstance(raster, xr.DataArray):
        return raster
    shape = getattr(raster, "shape", None)
    what = f"value of type {type(raster).__name__}" + ("" if shape is None else f" of shape {tuple(shape)}")
    if isinstance(raster, (str, os.PathLike)):
        fix = f"open it first: segment(geoseg.open_raster({os.fspath(raster)!r}), model)"
    elif shape is not None and len(shape) < 2:
        fix = ("give it its rows and columns: an image has at least two axes (y, x), e.g. "
               "xr.DataArray(arr.reshape(height, width), dims=(\"y\", \"x\"))")
    elif shape is not None and bands_last(tuple(shape)):
        fix = ('wrap it in one naming its axes; its last axis looks like its bands: '
               'xr.DataArray(arr, dims=("y", "x", "band"))')
    else:
        fix = ('wrap an array in one, naming its axes: xr.DataArray(arr, dims=("band", "y", "x")), '
               "or open a file with geoseg.open_raster(url)")
    raise ParameterError(
        f"segment(): raster: received a {what}; expected an xarray.DataArray with dims (band, y, x) "
        f"or (band, z, y, x). To fix, {fix}.")


def largest_chunks(raster: xr.DataArray) -> tuple[int, ...] | None:
    """The output chunks a dask-backed raster suggests: its largest chunk per spatial axis.
    A window of a chunked raster starts and ends with partial chunks, and uneven chunks
    (13, 200, 77) are common after a selection: their first would make tiny output chunks
    (and a task graph of millions), where the largest is the size it was chunked at."""
    return None if raster.chunks is None else tuple(max(c) for c in raster.chunks[1:])


def raster_nodata(raster: xr.DataArray) -> float | None:
    """The nodata a DataArray's attributes declare (:func:`~geoseg.core.nodata.attrs_nodata`)."""
    return attrs_nodata(raster.attrs, "segment(): raster")


def _segmenter(model: Any) -> Segmenter:
    """``model`` as a segmenter: one already, or a model path/URL loaded with :func:`load_model`."""
    if isinstance(model, Segmenter):
        return _with_classes(model)
    if isinstance(model, (str, os.PathLike)):
        return load_model(os.fspath(model))
    raise ParameterError(
        f"segment(): model: received {brief(model)} (of type {type(model).__name__}); expected a "
        "segmenter (e.g. from geoseg.load_model) or a model path/URL string such as "
        f"'builtin:demo-unet'. {_model_advice(model)}")


def _with_classes(segmenter: Segmenter) -> Segmenter:
    """``segmenter``, refused when it does not set ``classes`` (a subclass must, see
    :class:`~geoseg.core.segmenter.Segmenter`), which segment() names its output by."""
    classes = getattr(segmenter, "classes", None)
    if isinstance(classes, (tuple, list)) and classes:
        return segmenter
    said = "does not set classes" if classes is None else f"sets classes = {brief(classes)}"
    raise ParameterError(
        f"segment(): model: {type(segmenter).__name__} {said}; expected a Segmenter subclass "
        "setting classes, a tuple of geoseg.ClassInfo, one per score channel its predict "
        "returns, e.g. classes = (geoseg.ClassInfo('land'), geoseg.ClassInfo('water')).")


def _model_advice(model: Any) -> str:
    """How to turn ``model`` into what segment() takes: a torch network needs its metadata."""
    import torch

    if isinstance(model, torch.nn.Module):
        return ("A torch network needs its classes, bands and receptive field: wrap it as "
                "geoseg.SegmentationModel(net, geoseg.ModelInfo(...)), or save it with "
                "geoseg.save_model and pass the file.")
    return "Pass geoseg.load_model(url) or the URL itself."


def inference_settings(ndim: int, tile: Any, halo: Any, blend: str | None, overlap: float | None,
                       batch_size: Any) -> InferenceSettings:
    """The settings, ``halo`` (>= 0 on each of the ``ndim`` spatial axes) and ``batch_size`` (a
    whole number >= 1) checked here: the plan would round a negative halo up to 0 and fall back
    to the default for a batch size of 0."""
    if halo is not None and any(h < 0 for h in coerce_per_axis(halo, ndim, "halo")):
        raise PlanError(f"halo={halo!r}: expected sizes >= 0 on every axis (pixels of context per "
                        "side; 0 for none); give halo=0 or more, or leave it out for the model's "
                        "receptive field.")
    return InferenceSettings(tile, halo, blend, overlap, _batch_size(batch_size))


def _batch_size(value: Any) -> int | None:
    """``value`` as a whole number >= 1 (``None``: the default, ``GEOSEG_BATCH_SIZE``)."""
    if value is None:
        return None
    number = as_whole(value)
    if number is None or number < 1:
        raise PlanError(f"batch_size={value!r}: expected a whole number >= 1 (tiles per network "
                        "call), e.g. batch_size=4; leave it out for GEOSEG_BATCH_SIZE.")
    return number


def check_nodata_class(nodata_class: Any, n_classes: int) -> None:
    """``nodata_class`` fits the class array (uint8 up to 255 classes, else uint16) and is above
    the class ids ``0 .. n_classes - 1``, as ``output.nodata_class`` must be in a job
    (:func:`geoseg.jobs.checks.check_nodata_class`): no-data is never taken for a class."""
    if nodata_class is None:
        return
    dtype = "uint8" if n_classes <= 255 else "uint16"
    top = int(np.iinfo(dtype).max)
    value = as_whole(nodata_class)
    if value is None or not n_classes <= value <= top:
        raise ParameterError(
            f"nodata_class: received {nodata_class!r}, but the model's {n_classes} classes (ids 0 to "
            f"{n_classes - 1}) are stored as {dtype}, which holds 0 to {top}; give a whole number "
            f"from {n_classes} to {top} (by default {top}), above the class ids, so no-data is "
            "never taken for a class.")


SPATIAL_DIMS = (("y", "x"), ("z", "y", "x"))


def _band_first(raster: xr.DataArray, model: Any = None) -> xr.DataArray:
    """``(band, y, x)`` or ``(band, z, y, x)``, adding a band axis to single-band input;
    ``model`` (segment()'s) is looked at only to advise on an axis that is none of these."""
    spatial = next((d for d in SPATIAL_DIMS if set(raster.dims) - {"band"} == set(d)), None)
    extra = [d for d in raster.dims if d not in ("band", "z", "y", "x")]
    if spatial is None and extra and {"y", "x"} <= set(raster.dims):
        raise PlanError(
            f"segment(): raster: received dims {raster.dims} with shape {raster.shape}; expected "
            f"(band, y, x) or (band, z, y, x): {', '.join(map(repr, extra))} is not an axis a "
            f"model segments. {_extra_dims_advice(raster, extra, model)}")
    if spatial is None:
        raise PlanError(
            f"segment() needs a DataArray with dims (band, y, x), (band, z, y, x) or those without band; "
            f"got {raster.dims}. Rename the spatial dimensions to z, y and x (DataArray.rename)."
        )
    if "band" not in raster.dims:
        raster = raster.expand_dims(band=["band_1"])
    if 0 in raster.shape:
        raise ParameterError(
            f"segment(): raster: received dims {raster.dims} with shape {raster.shape}: no "
            f"{'bands' if raster.sizes['band'] == 0 else 'pixels'}. Pass a raster with at least "
            "one band and one pixel (check the selection that made it).")
    if raster.dims[-1] == "x" and bands_last(raster.shape):
        raise ParameterError(
            f"segment(): raster: received dims {raster.dims} with shape {raster.shape}: "
            f"{raster.shape[0]} bands of {raster.shape[1]} x {raster.shape[2]} pixels. Its last axis "
            "looks like its bands: name the axes as they are, xr.DataArray(array, dims=(\"y\", "
            "\"x\", \"band\")), or move the bands first (np.moveaxis(array, -1, 0)).")
    return raster if raster.dims == ("band", *spatial) else raster.transpose("band", *spatial)


def _extra_dims_advice(raster: xr.DataArray, extra: list[Any], model: Any) -> str:
    """What to do with axes other than band, z, y and x: rename the one left to ``band`` when it
    looks like the bands (no band axis, and its size is the model's band count or the model
    takes several bands), else select one image along them."""
    picks = ", ".join(f"{d}=0" for d in extra)
    select = f"one image along it, e.g. raster.isel({picks}), or segment each in turn."
    if len(extra) != 1 or "band" in raster.dims:
        return f"Select {select}"
    name, size = extra[0], raster.sizes[extra[0]]
    rename = f"raster.rename({{{name!r}: 'band'}})"
    wanted = getattr(model, "bands", None) if isinstance(model, Segmenter) else None
    if wanted is None:
        return f"If {name!r} holds the bands, name it so: {rename}; else select {select}"
    if len(wanted) == size or len(wanted) > 1:
        return (f"If {name!r} holds the bands (the model takes {len(wanted)}), name it so: "
                f"{rename}; selecting one of them (isel) would drop the others.")
    return f"Select {select}"


def storage_source(raster: xr.DataArray) -> RasterSource | None:
    """The source behind an unmodified :func:`open_raster` result, else ``None``."""
    source = raster.encoding.get("geoseg_source")
    if source is None or not isinstance(raster.data, da.Array):
        return None
    # Any selection or arithmetic gives a new dask name; only the original reads from storage.
    return source if raster.data.name.startswith("open_raster-") and raster.shape == source.shape else None


def _reader(source: RasterSource | None, cached: bool) -> Any:
    """What the graph's tasks read the stored raster with (``None``: it is not stored). Where
    windows reach past their regions (halos, blended windows), a graph node gives the tasks
    ``source.read`` through a read cache named anew each time the graph is computed: a name
    fixed when the graph was built served a graph computed again after its input was
    rewritten the blocks its last compute decoded, the old pixels."""
    if source is None or not cached:
        return None if source is None else source.read
    return dask.delayed(_cached_read, pure=True)(source)


def _cached_read(source: RasterSource) -> Callable[[tuple[slice, ...]], np.ndarray]:
    """``source.read`` through a read cache of its own (one node per compute of the graph)."""
    return source.with_read_cache().read


def _region_block(work: RegionWork, plan: Plan, raster: xr.DataArray, read: Any,
                  region: tuple[slice, ...], output: str, n_classes: int) -> da.Array:
    shape = tuple(r.stop - r.start for r in region)
    if output == "probabilities":
        shape = (n_classes,) + shape
    dtype = np.float32 if output == "probabilities" else np.dtype(work.class_dtype)
    if read is not None:
        task = dask.delayed(work.block, pure=True)(read, region, output)
    else:
        window = plan.read_window(region)
        pixels = raster.data[(slice(None),) + window]
        task = dask.delayed(work.block_from_array, pure=True)(
            pixels, tuple(w.start for w in window), region, output)
    return da.from_delayed(task, shape, dtype=dtype)


def _nest(blocks: list[Any], shape: Sequence[int], chunks: Sequence[int]) -> list[Any]:
    """Row-major flat list of blocks to the nested lists ``da.block`` wants, any number of axes."""
    counts = [ceil_div(n, c) for n, c in zip(shape, chunks)]
    nested: list[Any] = list(blocks)
    for count in reversed(counts[1:]):
        nested = [nested[i : i + count] for i in range(0, len(nested), count)]
    return nested


def _wrap(data: da.Array, raster: xr.DataArray, segmenter: Segmenter, work: RegionWork,
          output: str) -> xr.DataArray:
    coords = {k: v for k, v in raster.coords.items() if "band" not in v.dims}
    attrs = grid_attrs(raster.attrs)
    _place_window(raster, coords, attrs)
    attrs["class_names"] = [c.name for c in segmenter.classes]
    spatial = raster.dims[1:]
    if output == "classes":
        attrs["nodata"] = work.nodata_class
        return xr.DataArray(data, dims=spatial, coords=coords, attrs=attrs, name="classes")
    coords["class"] = ("class", attrs["class_names"])
    return xr.DataArray(data, dims=("class", *spatial), coords=coords, attrs=attrs, name="probabilities")


def _place_window(raster: xr.DataArray, coords: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Set the result's ``transform`` attribute and ``spatial_ref`` ``GeoTransform`` (those the
    raster has) to the transform its ``x``/``y`` coordinates give, as rioxarray's
    ``rio.transform()`` does (:func:`~geoseg.io.georef.coords_transform`): a window
    selected with ``.isel``/``.sel`` keeps its whole image's transform, and its coordinates say
    where it lies. A volume's ``voxel_affine`` (and NIfTI qform) moves by the voxel indices its
    z/y/x coordinates hold (:func:`~geoseg.io.georef.window_affines`); a raster without a
    transform or coordinates is left as it is."""
    if "voxel_affine" in attrs:
        zyx = [_coordinate(raster, d) for d in raster.dims[1:]]
        _refuse_uneven_voxels(zyx)
        attrs.update(window_affines(attrs, zyx))
        return
    mapping = raster.attrs.get("grid_mapping") or raster.encoding.get("grid_mapping") or "spatial_ref"
    transform = declared_transform(raster, mapping)
    yx = [_coordinate(raster, d) for d in ("y", "x")]
    if transform is None or raster.dims[1:] != ("y", "x") or any(
            c is None or c.dims != (d,) or c.dtype.kind not in "iuf" for c, d in zip(yx, ("y", "x"))):
        return
    _refuse_uneven(yx, transform)
    window = pixel_window_transform(transform, *yx) if transform.b or transform.d else \
        coords_transform(transform, yx[0].values, yx[1].values)
    if window is None or window == transform:
        return
    if "transform" in attrs:
        attrs["transform"] = list(window)[:6]
    if mapping in coords:
        spatial_ref = coords[mapping].copy()
        spatial_ref.attrs["GeoTransform"] = " ".join(repr(float(v)) for v in window.to_gdal())
        coords[mapping] = spatial_ref


def _refuse_uneven(yx: list[xr.DataArray], transform: Affine) -> None:
    """Refuse a window of a georeferenced raster whose pixels along y or x are not evenly
    spaced (picked with a list, ``.isel(x=[0, 100, 390])``): no transform places them, and the
    whole image's would place the mask where its pixels are not. Spacing is judged in pixels
    of ``transform`` (a rotated grid's coordinates are pixel indices), so coordinates stored
    with rounding noise (float32 map coordinates far from the origin) are not refused."""
    rotated = bool(transform.b or transform.d)
    for coord, size in zip(yx, (transform.e, transform.a)):
        if rotated and coord.attrs.get("long_name") != PIXEL_INDEX:
            continue  # no index to judge by: the whole image's transform is kept, as before
        if uneven(np.asarray(coord.values), 1.0 if rotated else abs(size)):
            shown = ", ".join(f"{v:.10g}" for v in coord.values[:4]) + (", ..." if coord.size > 4 else "")
            raise ParameterError(
                f"segment(): raster: its {coord.name} coordinates are not evenly spaced ({shown}), "
                "as a window picked with a list of pixels is; expected a georeferenced raster's "
                "pixels at one step, which its transform can place. Select the window with a "
                f"slice (.isel({coord.name}=slice(start, stop, step))), or segment each evenly "
                "spaced part on its own.")


def _refuse_uneven_voxels(zyx: list[xr.DataArray | None]) -> None:
    """Refuse a window of a volume whose voxels along an axis are not evenly spaced (picked
    with a list, ``.isel(z=[0, 3, 4])``): no affine places them, and the whole volume's kept
    placed the mask where its voxels are not."""
    for coord in zyx:
        if coord is None or coord.attrs.get("long_name") != VOXEL_INDEX or coord.ndim != 1 \
                or coord.dtype.kind not in "iu" or coord.size < 3:
            continue
        steps = np.diff(np.asarray(coord.values, dtype=np.int64))
        if np.all(steps == steps[0]) and steps[0] != 0:
            continue
        shown = ", ".join(str(int(v)) for v in coord.values[:4]) + (", ..." if coord.size > 4 else "")
        raise ParameterError(
            f"segment(): raster: its {coord.name} voxel indices are not evenly spaced ({shown}), "
            "as a window picked with a list of voxels is; expected a volume's voxels at one "
            "step, which its affine can place. Select the window with a slice "
            f"(.isel({coord.name}=slice(start, stop, step))), or segment each evenly spaced part "
            "on its own.")


def _coordinate(raster: xr.DataArray, name: str) -> xr.DataArray | None:
    """The raster's coordinate ``name``; ``None`` for a dimension without one (where xarray's
    ``coords.get`` makes up 0, 1, 2..., which would read as a pixel grid at the origin)."""
    return raster.coords[name] if name in raster.coords else None  # noqa: SIM401 - not .get


def declared_transform(raster: xr.DataArray, mapping: str) -> Affine | None:
    """The transform a DataArray declares, in rioxarray's order: its grid mapping's
    ``GeoTransform``, else its ``transform`` attribute (as :func:`~geoseg.open_raster` sets)."""
    if mapping in raster.coords and "GeoTransform" in raster.coords[mapping].attrs:
        return GeoRef.from_spatial_ref_attrs(dict(raster.coords[mapping].attrs)).affine
    if raster.attrs.get("transform") is not None:
        return GeoRef.from_crs(None, raster.attrs["transform"],
                               source="segment(): raster: attrs['transform']").affine
    return None
