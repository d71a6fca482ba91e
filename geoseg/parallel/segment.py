"""``segment``: a lazy DataArray of class ids (or probabilities), one task per region of whole output chunks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from geoseg import config
from geoseg.errors import ParameterError, PlanError
from geoseg.io.sources import RasterSource
from geoseg.models.base import Segmenter
from geoseg.models.modelfile import load_model
from geoseg.parallel.tasks import OUTPUTS, RegionWork
from geoseg.tiling.plan import (
    TilingSpec,
    coerce_per_axis,
    inference_cost,
    read_window,
    region_tiles,
    regions,
    task_region,
)

NODATA_CLASS = 255
DEFAULT_OVERLAP = 0.5
MAX_COST = 1.25  # pixels inferred per pixel of one pass over the image, above which we warn


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
    network's tiles, see :func:`region_work`) and the result comes in ``chunks``.

    Parameters
    ----------
    raster
        ``("band", "y", "x")`` DataArray, ideally from :func:`geoseg.open_raster`, in
        which case each task reads its own window from storage.
    model
        A segmenter (e.g. from :func:`geoseg.load_model`) or a model path/URL.
    output
        ``"classes"`` (class ids, ``(y, x)``) or ``"probabilities"`` (``(class, y, x)``).
    chunks
        Output chunk size per spatial axis; one task per chunk (default: the
        raster's chunks).
    tile, halo
        Network tile core size and context per side (default: ``GEOSEG_TILE`` and
        the model's receptive field). A halo below the receptive field trades
        exactness for speed.
    batch_size
        Tiles per network call (default ``GEOSEG_BATCH_SIZE``).
    nodata_class
        Class id written where the input has no data (default 255, or 65535
        beyond 255 classes).
    blend, overlap
        ``"crop"`` (tile cores with a halo; exact when the halo covers the receptive
        field; the default for local models) or a blend of overlapping windows,
        ``"gaussian"`` (the default for models with global context), ``"constant"``,
        ``"linear"`` or ``"cosine"``, with neighbouring windows overlapping by the
        fraction ``overlap`` (default 0.5).
    """
    if output not in OUTPUTS:
        raise ParameterError(f"output={output!r}; expected one of {OUTPUTS}.")
    segmenter = load_model(model) if isinstance(model, str) else model
    raster = _band_first(raster)
    segmenter.check_bands(list(map(str, raster["band"].values)), "the raster")
    out_chunks = _output_chunks(raster, chunks)
    work = region_work(segmenter, raster.shape[1:], tile=tile, halo=halo, batch_size=batch_size,
                       nodata=raster.attrs.get("nodata"), nodata_class=nodata_class, blend=blend,
                       overlap=overlap, regions=out_chunks)
    source = storage_source(raster)
    if source is not None and work.windows_reach_past_regions:
        source = source.with_read_cache()
    blocks = [_region_block(work, raster, source, region, output, segmenter.n_classes)
              for region in regions(raster.shape[1:], work.region)]
    data = da.block(_nest(blocks, raster.shape[1:], work.region))
    if work.region != out_chunks:  # a task computes several output chunks: split its block
        lead = data.shape[:1] if output == "probabilities" else ()
        data = data.rechunk((*lead, *out_chunks))
    return _wrap(data, raster, segmenter, work, output)


def region_work(segmenter: Segmenter, shape: Sequence[int], *, tile: Any = None, halo: Any = None,
                batch_size: int | None = None, nodata: float | None = None,
                nodata_class: int | None = None, blend: str | None = None,
                overlap: float | None = None, regions: Sequence[int] | None = None,
                compile: bool = False) -> RegionWork:
    """Everything the regions of one run share, with defaults filled in.

    ``regions`` is the unit a task writes (output chunks or shards; default: one default
    chunk). A task computes a region of whole units grown until halos and overlaps cost at
    most about 1.25x one pass over the image (:func:`~geoseg.tiling.plan.task_region`), so
    small output chunks neither shrink tiles nor make neighbouring tasks rerun the same
    blended windows. A warning gives the factor when the region cannot grow enough
    (``GEOSEG_REGION_BYTES`` bounds it). Without a ``tile``, cropped tiles are
    ``GEOSEG_TILE`` (``GEOSEG_VOLUME_TILE``) long, or as long as the region when it is
    shorter (blended windows keep their size: it sets the blend)."""
    ndim = len(shape)
    global_context = segmenter.global_context
    blend = blend or ("gaussian" if global_context else "crop")
    if global_context and blend == "crop":
        warnings.warn(f"{segmenter.name} pools over its whole input (global context): cropped tiles cannot "
                      "equal whole-image inference; blend='gaussian' hides the seams.", stacklevel=3)
    spec = _tiling(segmenter, shape, tile if tile is not None else config.tile_size(ndim), halo, blend, overlap)
    unit = tuple(regions) if regions is not None else tuple(min(default_chunk(ndim), n) for n in shape)
    region = task_region(spec, unit, max_cost=MAX_COST,
                         max_pixels=config.region_bytes() // (4 * segmenter.n_classes + 16))
    if tile is None and blend == "crop":
        spec = _tiling(segmenter, shape, tuple(min(t, r) for t, r in zip(spec.tile, region)), halo, blend,
                       overlap)
    _warn_recompute(spec, unit, region)
    dtype = "uint8" if segmenter.n_classes <= 255 else "uint16"
    default_nodata = NODATA_CLASS if dtype == "uint8" else 65535
    return RegionWork(segmenter.ref(), spec, nodata, batch_size or config.batch_size(),
                      default_nodata if nodata_class is None else int(nodata_class), dtype, region, compile)


def _tiling(segmenter: Segmenter, shape: Sequence[int], tile: Any, halo: Any, blend: str,
            overlap: float | None) -> TilingSpec:
    ndim = len(shape)
    return TilingSpec.create(
        shape,
        tile=tile,
        halo=halo if halo is not None else _isotropic(segmenter.halo, ndim),
        stride=coerce_per_axis(_isotropic(segmenter.stride, ndim), ndim, "stride"),
        blend=blend,
        overlap=DEFAULT_OVERLAP if overlap is None and blend != "crop" else (overlap or 0.0),
    )


def _warn_recompute(spec: TilingSpec, unit: Sequence[int], region: Sequence[int]) -> None:
    cost = inference_cost(spec, region)
    if cost > MAX_COST:
        warnings.warn(
            f"Output chunks {tuple(unit)} make tasks of {tuple(region)} pixels infer {cost:.2f}x the pixels "
            f"of one pass over the image (halos and overlapping windows computed again by neighbouring "
            f"tasks). Use output chunks (or shards) of at least {_advice(spec)} pixels per axis, or raise "
            "GEOSEG_REGION_BYTES so tasks may compute larger regions.", stacklevel=3)


def _advice(spec: TilingSpec) -> int:
    """A per-axis region length that keeps the recompute cost low for ``spec``."""
    if spec.blend == "crop":
        return max(spec.tile)
    return 8 * max(w - s for w, s in zip(spec.window_shape, spec.steps))


def _isotropic(value: Sequence[int], ndim: int) -> Sequence[int] | int:
    """A segmenter's per-axis geometry; one value repeated on every axis (a pixel-wise method's
    ``(1, 1)`` stride, say) applies to any number of axes."""
    values = tuple(value)
    return values[0] if len(values) != ndim and len(set(values)) == 1 else values


SPATIAL_DIMS = (("y", "x"), ("z", "y", "x"))


def _band_first(raster: xr.DataArray) -> xr.DataArray:
    """``(band, y, x)`` or ``(band, z, y, x)``, adding a band axis to single-band input."""
    spatial = next((d for d in SPATIAL_DIMS if set(raster.dims) - {"band"} == set(d)), None)
    if spatial is None:
        raise PlanError(
            f"segment() needs a DataArray with dims (band, y, x), (band, z, y, x) or those without band; "
            f"got {raster.dims}. Rename the spatial dimensions to z, y and x (DataArray.rename)."
        )
    if "band" not in raster.dims:
        raster = raster.expand_dims(band=["band_1"])
    return raster if raster.dims == ("band", *spatial) else raster.transpose("band", *spatial)


def storage_source(raster: xr.DataArray) -> RasterSource | None:
    """The source behind an unmodified :func:`open_raster` result, else ``None``."""
    source = raster.encoding.get("geoseg_source")
    if source is None or not isinstance(raster.data, da.Array):
        return None
    # Any selection or arithmetic gives a new dask name; only the original reads from storage.
    return source if raster.data.name.startswith("open_raster-") and raster.shape == source.shape else None


def _region_block(work: RegionWork, raster: xr.DataArray, source: RasterSource | None,
                  region: tuple[slice, ...], output: str, n_classes: int) -> da.Array:
    shape = tuple(r.stop - r.start for r in region)
    if output == "probabilities":
        shape = (n_classes,) + shape
    dtype = np.float32 if output == "probabilities" else np.dtype(work.class_dtype)
    if source is not None:
        task = dask.delayed(work.block, pure=True)(source.read, region, output)
    else:
        window = tuple(slice(w.start, min(w.stop, n)) for w, n in
                       zip(read_window(region_tiles(work.spec, region)), work.spec.shape))
        pixels = raster.data[(slice(None),) + window]
        task = dask.delayed(work.block_from_array, pure=True)(
            pixels, tuple(w.start for w in window), region, output)
    return da.from_delayed(task, shape, dtype=dtype)


def _output_chunks(raster: xr.DataArray, chunks: int | Sequence[int] | None) -> tuple[int, ...]:
    if chunks is not None:
        out = coerce_per_axis(chunks, raster.ndim - 1, "chunks")
    elif raster.chunks is not None:
        out = tuple(c[0] for c in raster.chunks[1:])
    else:
        out = tuple(min(default_chunk(raster.ndim - 1), n) for n in raster.shape[1:])
    if any(c < 1 for c in out):
        raise PlanError(f"chunks must be positive, got {out}.")
    return out


def default_chunk(ndim: int) -> int:
    """Output chunk per axis when none is given: 1024 for images, 128 for volumes."""
    return 1024 if ndim == 2 else 128


def _nest(blocks: list[Any], shape: Sequence[int], chunks: Sequence[int]) -> list[Any]:
    """Row-major flat list of blocks to the nested lists ``da.block`` wants, any number of axes."""
    counts = [-(-n // c) for n, c in zip(shape, chunks)]
    nested: list[Any] = list(blocks)
    for count in reversed(counts[1:]):
        nested = [nested[i : i + count] for i in range(0, len(nested), count)]
    return nested


def _wrap(data: da.Array, raster: xr.DataArray, segmenter: Segmenter, work: RegionWork,
          output: str) -> xr.DataArray:
    coords = {k: v for k, v in raster.coords.items() if "band" not in v.dims}
    attrs = {k: v for k, v in raster.attrs.items() if k != "nodata"}
    attrs["class_names"] = [c.name for c in segmenter.classes]
    spatial = raster.dims[1:]
    if output == "classes":
        attrs["nodata"] = work.nodata_class
        return xr.DataArray(data, dims=spatial, coords=coords, attrs=attrs, name="classes")
    coords["class"] = ("class", attrs["class_names"])
    return xr.DataArray(data, dims=("class", *spatial), coords=coords, attrs=attrs, name="probabilities")
