"""What a job is checked for before it computes, beyond keys, types, bands and budgets.

:func:`geoseg.jobs.prepare` (and so ``geoseg validate``) calls :func:`check_job`, which
checks everything that can be checked without computing, so that a job ``validate`` passes
does not fail on it later:

* the input: a Zarr array's absent chunks (one listing; :mod:`geoseg.io.missing`) and its
  first chunk decoding as its metadata says (dtype, chunk shape, codecs);
* the model: a classical method's parameters and feature bands against the input (fitted
  methods are otherwise first built when the job runs); a manual threshold against the values
  the input's dtype can hold; an ensemble or TTA holding a method still to be fitted built with
  a stand-in for it (:func:`geoseg.methods.build.stand_in`: the classes, bands and geometry the
  fit will give), so members whose classes or bands disagree are refused before any fit;
* the output: a local folder that can be written, a ``nodata_class`` the class array can hold.

A model file's classes are checked against its network's outputs when its header is read
(:func:`geoseg.models.modelfile.meta_network`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import inspect
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from geoseg import budgets, logs
from geoseg.core.segmenter import Segmenter
from geoseg.core.urls import public_url
from geoseg.ensembles import TTA, Ensemble
from geoseg.errors import BandMismatchError, GeosegError, JobSpecError, SettingError
from geoseg.io import missing, remote
from geoseg.io.sources import RasterSource, ZarrSource
from geoseg.jobs.provenance import runs_dir
from geoseg.methods.build import build_method, params_for_input, stand_in
from geoseg.methods.features import as_feature
from geoseg.methods.histogram import fit_histogram_modes
from geoseg.methods.histogram import fit_name as modes_fit_name
from geoseg.methods.kmeans import DEFAULT_N_INIT, fit_kmeans, parse_n_init
from geoseg.methods.kmeans import check_cache as check_kmeans_cache
from geoseg.methods.params import check_params
from geoseg.methods.stats import check_feature_cache
from geoseg.methods.threshold import METHODS, check_in_range, fit_threshold
from geoseg.methods.threshold import fit_name as threshold_fit_name
from geoseg.models.modelfile import check_weights, read_header
from geoseg.tiling.plan import read_window, region_tiles

if TYPE_CHECKING:
    from geoseg.jobs.prepared import PreparedJob
    from geoseg.jobs.spec import ModelSpec, OutputSpec

MAX_PROBE_BYTES = 64 << 20  # the first input chunk is decoded when it is at most this large
FITS: dict[str, tuple[Any, tuple[Any, ...]]] = {  # fitted method -> its fit function, leading args
    **{name: (fit_threshold, (name,)) for name in METHODS},
    "kmeans": (fit_kmeans, ()),
    "histogram": (fit_histogram_modes, ()),
}


def with_missing_chunks(source: RasterSource, mode: str) -> RasterSource:
    """``source`` reading absent Zarr chunks as ``input.missing_chunks`` says."""
    if isinstance(source, ZarrSource):
        return dataclasses.replace(source, missing_chunks=missing.check_mode(mode))
    return source


def largest_window(prepared: PreparedJob) -> tuple[int, ...]:
    """The input window one task of ``prepared`` reads: a region in the middle of the raster
    with its halo or blended windows (edge regions read less)."""
    shape, region = prepared.source.shape[1:], prepared.chunks
    middle = tuple(slice(s, min(s + r, n))
                   for n, r in zip(shape, region) for s in [(n // r // 2) * r if n > r else 0])
    if prepared.work is None:  # a method to be fitted: no tiling yet, its region is what it reads
        return tuple(s.stop - s.start for s in middle)
    window = read_window(region_tiles(prepared.work.tiling, middle))
    return tuple(min(w.stop, n) - w.start for w, n in zip(window, shape))


def check_budgets(prepared: PreparedJob) -> None:
    """Refuse a prepared job of more tasks than ``GEOSEG_MAX_TASKS``, or whose tasks each read
    more than ``GEOSEG_MAX_WINDOW_BYTES`` or ``GEOSEG_MAX_WINDOW_CHUNKS``; from its plan alone,
    before anything is read."""

    what = f"the job on {public_url(prepared.spec.input.url)}"
    budgets.check_tasks(prepared.n_tasks, what)
    window = largest_window(prepared)
    budgets.check_window(window, prepared.source.shape[0], prepared.source.dtype, what)
    budgets.check_window_chunks(window, prepared.source.chunks, prepared.source.shape[1:], what)


def check_job(prepared: PreparedJob) -> Segmenter | None:
    """Raise the geoseg error a run of ``prepared`` would meet, found without computing; return
    the model checked: ``prepared``'s, or the one planned with stand-ins for the methods still
    to be fitted (:func:`planned_model`; ``None`` when a plugin's fit decides it)."""
    spec, source = prepared.spec, prepared.source
    if isinstance(source, ZarrSource):
        with _key("input.url"):
            check_first_chunk(source)
            check_missing_chunks(source)
    check_methods(spec.model, source)
    model = prepared.model if prepared.model is not None else planned_model(
        spec.model, source, f"input {public_url(spec.input.url)}")
    with _key("output.url"):
        check_not_a_link(spec.output.url)
        check_writable(spec.output.url)
    with _key("runs_dir"):
        check_writable(runs_dir(spec))
    check_nodata_class(spec.output, prepared, None if model is None else model.n_classes)
    return model


# --- the input -----------------------------------------------------------------------------


def check_missing_chunks(source: ZarrSource) -> None:
    """Refuse (or, when filling them is meant, log the count of) chunks the store lacks."""
    array = source.open_array()
    found = missing.count_missing(array)
    if found is None or not found[0]:
        return
    absent, total = found
    if not missing.fills(source.missing_chunks, array, source.georef.nodata):
        raise missing.missing_error(source.url, absent, array.fill_value, len(absent), total)
    # absent chunks whose fill value is the nodata are no data by the store's own convention
    # (a sparse mosaic, geoseg convert skipping empty chunks): worth a line, not an alarm
    sparse = missing.fill_is_nodata(array.fill_value, source.georef.nodata)
    logs.log.log(
        logging.INFO if sparse else logging.WARNING,
        f"input {public_url(source.url)}: {len(absent)} of {total} chunks are absent from "
        f"the store and read as the fill value {array.fill_value}"
        f"{', its nodata' if sparse else ''} (input.missing_chunks: {source.missing_chunks})",
        extra={"missing_chunks": len(absent), "chunks_total": total})


def check_first_chunk(source: RasterSource) -> None:
    """Decode the input's first stored chunk: metadata that parses but does not describe the
    chunks (another dtype, chunk shape or codec) fails here, not in the middle of a run."""
    window = tuple(slice(0, min(c, n)) for c, n in zip(source.chunks, source.shape[1:]))
    size = math.prod(s.stop for s in window) * source.shape[0] * np.dtype(source.dtype).itemsize
    if size <= MAX_PROBE_BYTES:
        source.read(window)


# --- the model -----------------------------------------------------------------------------


def check_methods(spec: ModelSpec, source: RasterSource, key: str = "model") -> None:
    """A fitted classical method's parameters and feature bands (every member of an ensemble)."""
    if spec.ensemble is not None:
        for i, member in enumerate(spec.ensemble.members):
            check_methods(member, source, f"{key}.ensemble.members.{i}")
        return
    if spec.method == "threshold":
        with _key(f"{key}.params"):
            check_in_range(build_method(spec.method, spec.params), source.dtype)
    if spec.method not in FITS:
        return  # a model file, or a method built (and so checked) by prepare
    check_signature(spec.method, spec.params, f"{key}.params")
    check_params(spec.params, f"{key}.params")
    with _key(f"{key}.params"):
        check_bands(spec.method, spec.params, source.shape[0])
        stand_in(spec.method, spec.params, source.band_names)  # what the fit would refuse
        if spec.params.get("cache") is True:
            check_cache(spec.method, spec.params, source)


def check_signature(method: str, params: dict[str, Any], key: str) -> None:
    """Refuse parameters a fitted method does not take, or lacking one it needs, naming each."""
    fit, _ = FITS[method]
    taken = {name: p for name, p in inspect.signature(fit).parameters.items()
             if name not in ("raster", "method")}
    unknown = sorted(set(params) - set(taken))
    needed = [name for name, p in taken.items() if p.default is p.empty and name not in params]
    if not unknown and not needed:
        return
    given = f"received {sorted(params)}" if params else "received no parameters"
    problems = ([f"unknown: {', '.join(unknown)}"] if unknown else []) + (
        [f"missing, and required: {', '.join(needed)}"] if needed else [])
    raise JobSpecError(f"{key}: {method}: {given}; {'; '.join(problems)}. Its parameters are "
                       f"{', '.join(taken)} (README, Classical methods).")


def check_cache(method: str, params: dict[str, Any], source: RasterSource) -> None:
    """A fit asked to keep its bands in memory (``cache: true``) fits
    ``GEOSEG_MAX_FIT_CACHE_BYTES``, from the input's shape alone."""
    shape, dtype, nodata = source.shape, source.dtype, source.georef.nodata
    if method == "kmeans":
        check_kmeans_cache(shape, dtype, nodata, params.get("bands"))
        return
    feature = as_feature(params.get("feature"))  # a threshold's or the histogram modes'
    what = modes_fit_name(feature) if method == "histogram" else threshold_fit_name(method, feature)
    check_feature_cache(shape, dtype, nodata, feature, what)


def planned_model(spec: ModelSpec, source: RasterSource, where: str) -> Segmenter | None:
    """The segmenter a run of ``spec`` builds once its methods are fitted, with stand-ins for
    them: built, it refuses members whose classes, bands or axes disagree, and is checked
    against the bands of ``where`` (the input), before any fit. ``None`` when a plugin's
    method is still to be fitted (what it gives is known only then)."""
    model = _planned(spec, source)
    if model is not None:
        with _key("input.bands"):
            model.check_bands(source.band_names, where)
    return model


def _planned(spec: ModelSpec, source: RasterSource) -> Segmenter | None:
    if spec.path is not None:
        with _key("model.path"):
            model: Segmenter | None = read_header(spec.path, storage_options=spec.storage_options)
    elif spec.method is not None:
        model = stand_in(spec.method, params_for_input(spec.method, spec.params, source.dtype),
                         source.band_names)
    else:
        members = [_planned(m, source) for m in spec.ensemble.members]
        if any(m is None for m in members):
            return None
        with _key("model.ensemble"):
            model = Ensemble(members, weights=spec.ensemble.weights, combine=spec.ensemble.combine)
    return TTA(model, transforms=spec.tta) if spec.tta and model is not None else model


def check_model_weights(spec: ModelSpec, key: str = "model") -> None:
    """Hash the weights of every model file ``spec`` names (ensemble members too) against the
    sha256 its header records, as a run's workers do when they load it: ``geoseg validate``
    then finds a damaged file before a run does. Reads each file whole, a tensor at a time;
    a run's client reads only the headers."""
    if spec.path is not None:
        with _key(f"{key}.path"):
            check_weights(spec.path, storage_options=spec.storage_options)
    for i, member in enumerate(spec.ensemble.members if spec.ensemble else ()):
        check_model_weights(member, f"{key}.ensemble.members.{i}")


def check_bands(method: str, params: dict[str, Any], n_bands: int) -> None:
    """The bands ``feature`` (or k-means' ``bands``) names exist in an input of ``n_bands``;
    k-means' ``n_init`` is a number of starts."""
    where = "the input"
    if method != "kmeans":
        as_feature(params.get("feature")).check(n_bands, where)  # its errors name the feature
        return
    parse_n_init(params.get("n_init"), DEFAULT_N_INIT)  # starts: a whole number >= 1
    bands = params.get("bands")
    bad = None if bands is None else [b for b in bands if not 1 <= int(b) <= n_bands] or (
        [] if bands else ["none"])
    if bad:
        raise BandMismatchError(f"bands: received {list(bands)}, but {where} has bands "
                                f"1 to {n_bands} (1-based); {bad} are not among them.")


# --- the output ----------------------------------------------------------------------------


def check_not_a_link(url: str) -> None:
    """Refuse a local output given as a symbolic link: --overwrite would delete its target's
    contents and put a new folder in the link's place, leaving the target half deleted."""
    if not remote.is_local(url):
        return
    path = Path(fsspec.core.strip_protocol(url).rstrip("/"))
    if path.is_symlink():
        raise JobSpecError(
            f"received {url}, a symbolic link to {os.path.realpath(path)}; expected the "
            "output's own path. Give the path it links to (a run, its lease and --overwrite act "
            "on the path given, not on the link's target).")


def check_writable(url: str) -> None:
    """A local output can be created (or resumed): its nearest existing folder is a folder this
    process may write. Remote stores are not probed (that would write)."""
    if fsspec.utils.get_protocol(url) not in ("file", "local"):
        return
    path = Path(fsspec.core.strip_protocol(url))
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise JobSpecError(f"cannot write {url}: {existing} is a file, not a folder. Choose an "
                           "output path inside a folder.")
    if os.access(existing, os.W_OK | os.X_OK):
        return
    code = errno.EROFS if os.statvfs(existing).f_flag & os.ST_RDONLY else errno.EACCES
    # the error a run would meet when it writes there, named the same way
    raise remote.translate(OSError(code, os.strerror(code), str(existing)), url, {}, "Writing")


def check_nodata_class(out: OutputSpec, prepared: PreparedJob, n_classes: int | None) -> None:
    """``output.nodata_class`` fits the class array (uint8 up to 255 classes, else uint16) of a
    model of ``n_classes`` (``None``: not known before a fit)."""
    if out.nodata_class is None:
        return
    dtype = prepared.work.class_dtype if prepared.work is not None else (
        "uint8" if n_classes is not None and n_classes <= 255 else "uint16")
    top, low = np.iinfo(dtype).max, n_classes or 0
    if not low <= out.nodata_class <= top:
        classes = f"{n_classes} classes (ids 0 to {n_classes - 1})" if n_classes else "its classes"
        raise JobSpecError(
            f"output.nodata_class: received {out.nodata_class}, but the model's {classes} are "
            f"stored as {dtype}, which holds 0 to {top}; give an id from {low} to {top} (by "
            f"default {top}), above the class ids, so no-data is never taken for a class.")


@contextlib.contextmanager
def _key(key: str) -> Iterator[None]:
    """Prefix a geoseg error raised inside with the job-spec key it concerns; a bad setting
    (``GEOSEG_*``) is no fault of that key, and goes through as it is."""
    try:
        yield
    except SettingError:
        raise
    except GeosegError as exc:
        raise type(exc)(f"{key}: {exc}") from None
