"""Budgets: limits on what an input, a job or a model file may declare, checked before any
read or allocation.

A file's header costs nothing to write and can declare anything: a 10 KB TIFF declaring
10**12 pixels, a 2 MB model file whose config builds a network of 10**13 parameters. Each
figure is checked here, from metadata alone, against a limit that a ``GEOSEG_*`` setting
raises (see :data:`geoseg.config.DEFAULTS`):

==============================  =========================================  ================
setting                         bounds                                     default
==============================  =========================================  ================
``GEOSEG_MAX_PIXELS``           spatial pixels (or voxels) of one input    ``1e11``
``GEOSEG_MAX_BANDS``            bands (or NIfTI volumes) of one input      ``1e5``
``GEOSEG_MAX_TASKS``            tasks (output chunks or shards) of a job   ``1e6``
``GEOSEG_MAX_WINDOW_BYTES``     bytes of the input window one task reads   ``2 GiB``
``GEOSEG_MAX_WINDOW_CHUNKS``    stored chunks one task's window spans      ``1e5``
``GEOSEG_MAX_CHUNK_BYTES``      decoded bytes of one stored input chunk    ``1 GiB``
``GEOSEG_MAX_METADATA_BYTES``   bytes of one Zarr metadata document        ``64 MiB``
``GEOSEG_MAX_MODEL_PARAMETERS`` values in a model file's network           ``1e9``
``GEOSEG_MAX_MODEL_BYTES``      memory the network's weights take          ``8 GiB``
``GEOSEG_MAX_MODEL_TENSORS``    tensors a model file's header lists        ``1e5``
``GEOSEG_MAX_FIT_CACHE_BYTES``  raster bytes a fit keeps in memory         ``2 GiB``
``GEOSEG_MAX_MULTIOTSU_BINS``   histogram bins a multi-Otsu search takes   ``8192``
``GEOSEG_MAX_MULTIOTSU_SEARCH`` threshold combinations multi-Otsu tries    ``1e10``
``GEOSEG_MAX_KERNEL``           side of a method's kernel or footprint     ``1025``
``GEOSEG_MAX_SMOOTHING``        bins x passes a histogram is smoothed      ``1e8``
``GEOSEG_MAX_OBJECTS``          objects one table and its polygons hold    ``1e6``
==============================  =========================================  ================

Every refusal is a :class:`~geoseg.errors.BudgetError` that says the figure, the limit and
the setting that raises it. ``GEOSEG_MAX_FIT_CACHE_BYTES`` is a threshold as much as a limit:
a fit (k-means, a global threshold, histogram modes) whose features take at most that many
bytes reads the raster once and keeps it in memory (the workers' under a distributed client)
for its passes; a larger one reads it once per pass, and only a fit that asks for the cache
(``cache=True``) is refused. The checks are pure arithmetic on figures; this module imports
neither dask nor torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from geoseg import config
from geoseg.errors import BudgetError

MAX_PIXELS = "GEOSEG_MAX_PIXELS"
MAX_BANDS = "GEOSEG_MAX_BANDS"
MAX_TASKS = "GEOSEG_MAX_TASKS"
MAX_WINDOW_BYTES = "GEOSEG_MAX_WINDOW_BYTES"
MAX_WINDOW_CHUNKS = "GEOSEG_MAX_WINDOW_CHUNKS"
MAX_CHUNK_BYTES = "GEOSEG_MAX_CHUNK_BYTES"
MAX_METADATA_BYTES = "GEOSEG_MAX_METADATA_BYTES"
MAX_MODEL_PARAMETERS = "GEOSEG_MAX_MODEL_PARAMETERS"
MAX_MODEL_BYTES = "GEOSEG_MAX_MODEL_BYTES"
MAX_MODEL_TENSORS = "GEOSEG_MAX_MODEL_TENSORS"
MAX_FIT_CACHE_BYTES = "GEOSEG_MAX_FIT_CACHE_BYTES"
MAX_MULTIOTSU_BINS = "GEOSEG_MAX_MULTIOTSU_BINS"
MAX_MULTIOTSU_SEARCH = "GEOSEG_MAX_MULTIOTSU_SEARCH"
MAX_OBJECTS = "GEOSEG_MAX_OBJECTS"
MAX_KERNEL = "GEOSEG_MAX_KERNEL"
MAX_SMOOTHING = "GEOSEG_MAX_SMOOTHING"


def limit(setting: str) -> int:
    """The limit ``setting`` (e.g. ``"GEOSEG_MAX_PIXELS"``) holds now: a whole number > 0,
    written as digits or in exponent form (``100000000000``, ``1e11``).

    Raises
    ------
    SettingError
        When the value is not a whole number > 0.
    """
    return config.whole(setting, "a limit; raise it for larger inputs", least=1)


def figure(n: float) -> str:
    """``n`` as the messages write it: digits below a million, else ``1e12``, ``1.53e7``."""
    if n < 1e6:
        return str(int(n))
    if isinstance(n, int) and n.bit_length() > 1000:  # too large for a float ('g' overflows)
        digits = str(n)
        return f"{int(digits[:3]) / 100:.3g}e{len(digits) - 1}"
    mantissa, exponent = f"{n:.3g}".split("e")
    return f"{mantissa}e{int(exponent)}"


def size(n_bytes: float) -> str:
    """Bytes in binary units: ``512 MiB``, ``2 GiB``, ``3.73 TiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n_bytes)} B"


def check(value: int, setting: str, said: str, advice: str) -> None:
    """Raise :class:`BudgetError` when ``value`` exceeds the limit ``setting`` holds.

    Parameters
    ----------
    value
        The figure declared or implied.
    setting
        The ``GEOSEG_*`` setting that holds its limit.
    said
        What declares the figure and the figure itself, e.g. ``"input x declares 3 x 4 = 12
        pixels"``; the limit and the setting follow it in the message.
    advice
        What to do instead of (or besides) raising the limit.
    """
    allowed = limit(setting)
    if value > allowed:
        raise BudgetError(f"{said}; the limit is {figure(allowed)} ({setting}). {advice}")


def check_pixels(shape: Sequence[int], what: str) -> None:
    """Refuse an input whose spatial ``shape`` (``(y, x)`` or ``(z, y, x)``) holds more pixels
    than ``GEOSEG_MAX_PIXELS``; ``what`` names the input (a public URL)."""
    pixels = math.prod(int(n) for n in shape)
    unit = "voxels" if len(shape) == 3 else "pixels"
    declared = " x ".join(str(int(n)) for n in shape)
    check(pixels, MAX_PIXELS, f"{what} declares {declared} = {figure(pixels)} {unit}",
          "Raise it if the raster is real: a header can declare any size, and one this "
          "large is more often a corrupt or hostile file.")
    side = max((int(n) for n in shape), default=0)  # a 1 x 1e11 strip passes the pixel budget,
    check(8 * side, MAX_WINDOW_BYTES,  # but its coordinates (8 bytes a pixel) take 800 GB
          f"{what} declares a side of {figure(side)} {unit}, whose coordinates alone (float64) "
          f"take {size(8 * side)}", "Raise it if the raster is real: a header can declare any "
          "size, and one this long is more often a corrupt or hostile file.")


def check_bands(n_bands: int, what: str, field: str = "bands") -> None:
    """Refuse an input declaring more than ``GEOSEG_MAX_BANDS`` bands, before anything per band
    (band numbers, names) is built: the pixel budget counts spatial pixels only, so a header
    declaring 10**9 bands of 16 x 16 pixels passes it. ``field`` names what declares them."""
    check(int(n_bands), MAX_BANDS, f"{what} declares {figure(int(n_bands))} {field}",
          "Raise it if the input really has that many bands: a header can declare any size, "
          "and one this large is more often a corrupt or hostile file.")


def check_tasks(n_tasks: int, what: str, advice: str = "") -> None:
    """Refuse a job, or an output, of more than ``GEOSEG_MAX_TASKS`` tasks (chunks); ``advice``
    replaces the default (larger chunks, or a higher limit)."""
    check(n_tasks, MAX_TASKS, f"{what} has {figure(n_tasks)} tasks (chunks)",
          advice or "Use larger output.chunks (or output.shards) so each task writes more, or "
          "raise the limit if the scheduler has the memory for so many tasks.")


def window_bytes(window: Sequence[int], n_bands: int, dtype: str) -> int:
    """Bytes of a ``(n_bands, *window)`` block of ``dtype``."""
    return n_bands * math.prod(int(n) for n in window) * np.dtype(dtype).itemsize


def check_window(window: Sequence[int], n_bands: int, dtype: str, what: str) -> None:
    """Refuse a read window of ``n_bands`` x ``window`` values of ``dtype`` over
    ``GEOSEG_MAX_WINDOW_BYTES``."""
    n_bytes = window_bytes(window, n_bands, dtype)
    shape = " x ".join(str(int(n)) for n in (n_bands, *window))
    check(n_bytes, MAX_WINDOW_BYTES,
          f"{what} reads windows of {shape} {dtype} = {size(n_bytes)} ({figure(n_bytes)} bytes)",
          "Use smaller output.chunks, inference.tile or inference.halo, select fewer "
          "bands, or raise the limit if the workers have the memory.")


def check_window_chunks(window: Sequence[int], chunks: Sequence[int], shape: Sequence[int],
                        what: str) -> None:
    """Refuse a read window that spans more stored input chunks (of spatial size ``chunks``, of
    an image of spatial ``shape``) than ``GEOSEG_MAX_WINDOW_CHUNKS``: each is a request and a
    decode, whatever its size. A window of ``w`` pixels spans at most ``(w + c - 2) // c + 1``
    chunks of ``c`` on an axis, and no more than the axis holds."""
    spanned = math.prod(min((int(w) + int(c) - 2) // int(c) + 1, -(-int(size) // int(c)))
                        for w, c, size in zip(window, chunks, shape))
    chunk = " x ".join(str(int(c)) for c in chunks)
    check(spanned, MAX_WINDOW_CHUNKS,
          f"{what} reads windows that span up to {figure(spanned)} stored chunks of {chunk} pixels",
          "Rechunk the input into larger chunks once (geoseg convert IN OUT.zarr), or raise the "
          "limit if its store answers so many requests per task quickly.")


def check_chunk(chunk: Sequence[int], dtype: str, what: str) -> None:
    """Refuse an input whose stored chunk (a Zarr chunk, a shard's inner chunk, a GeoTIFF tile
    or strip), ``chunk`` values of ``dtype`` with every axis it spans, decodes to more than
    ``GEOSEG_MAX_CHUNK_BYTES``.

    A read decodes every stored chunk its window touches whole, however small the window: the
    window budget does not bound it, and a few hundred KB of zstd can declare a 10 GB chunk.
    The default, 1 GiB, is far above the chunks tools write (a few MiB to 64 MiB) and half the
    default window budget, so a legitimate input's decode fits the memory that budget assumes.
    """
    n_bytes = window_bytes(chunk[1:], int(chunk[0]), dtype) if chunk else 0
    shape = " x ".join(str(int(n)) for n in chunk)
    check(n_bytes, MAX_CHUNK_BYTES,
          f"{what} stores chunks of {shape} {dtype}, {size(n_bytes)} ({figure(n_bytes)} bytes) "
          "decoded, and any read decodes a whole chunk",
          "Rechunk the input into smaller chunks (e.g. `geoseg convert` to a Zarr, run once with "
          "the limit raised where the memory is), or raise the limit if the workers have the "
          "memory to decode one chunk per thread.")


def check_model(n_parameters: int, n_bytes: int, what: str) -> None:
    """Refuse a network of more than ``GEOSEG_MAX_MODEL_PARAMETERS`` values or whose weights
    take more than ``GEOSEG_MAX_MODEL_BYTES``, before it is built.

    Parameters
    ----------
    n_parameters
        Values in the network's parameters and buffers, counted on torch's meta device.
    n_bytes
        Bytes those values take once built (each at its dtype's size).
    what
        Names the model file and its architecture and config.
    """
    advice = "Check the file's config; raise the limit only if the network is meant to be so large."
    check(n_parameters, MAX_MODEL_PARAMETERS,
          f"{what} builds a network of {figure(n_parameters)} parameters", advice)
    check(n_bytes, MAX_MODEL_BYTES,
          f"{what} builds a network whose weights take {size(n_bytes)} ({figure(n_bytes)} bytes)",
          advice)


def check_model_tensors(n_tensors: int, what: str) -> None:
    """Refuse a model file whose header lists more than ``GEOSEG_MAX_MODEL_TENSORS`` tensors
    (``n_tensors`` bounds them: the JSON objects in the header),
    before that header is parsed: each entry costs about a kilobyte to read into Python, where
    the largest networks of the zoo hold a few hundred tensors."""
    check(n_tensors, MAX_MODEL_TENSORS,
          f"{what}: its header holds {figure(n_tensors)} JSON objects, one per tensor",
          "Check that the file is the model itself; raise the limit only if its network is "
          "meant to hold so many tensors.")


OBJECT_BYTES = 2200  # a table row and its polygon, measured in the process writing them


def check_objects(count: int, what: str) -> None:
    """Refuse an object table and polygons of more than ``GEOSEG_MAX_OBJECTS`` objects before
    they are built: they are gathered in the one process that writes them, about
    :data:`OBJECT_BYTES` a object, where the labels themselves are written chunk by chunk."""
    check(count, MAX_OBJECTS,
          f"{what} holds {figure(count)} objects, whose table and polygons would take about "
          f"{size(count * OBJECT_BYTES)} in this process",
          "The instance labels are written; leave the table and polygons out (--no-table "
          "--no-polygons, or instances.table / instances.polygons: false), or raise the limit "
          "where memory allows.")


def fits_cache(n_bytes: int) -> bool:
    """Whether a fit's features of ``n_bytes`` may be kept in memory for all its passes
    (at most ``GEOSEG_MAX_FIT_CACHE_BYTES``)."""
    return n_bytes <= limit(MAX_FIT_CACHE_BYTES)


def check_fit_cache(n_bytes: int, what: str) -> None:
    """Refuse a fit asked to keep its features in memory (``cache=True``) when they take more
    than ``GEOSEG_MAX_FIT_CACHE_BYTES``; ``what`` names the fit and its features."""
    check(n_bytes, MAX_FIT_CACHE_BYTES,
          f"{what} would keep {size(n_bytes)} ({figure(n_bytes)} bytes) in memory (cache=True)",
          "Leave cache out (or false) to read the raster once per pass instead, select fewer "
          "bands, or raise the limit if the workers have the memory to hold it.")


def multiotsu_table_bytes(n_bins: int) -> int:
    """Bytes of the lookup table scikit-image's multi-Otsu search builds for ``n_bins`` bins: one
    float32 per pair of bins, ``n_bins * (n_bins + 1) / 2``."""
    return n_bins * (n_bins + 1) // 2 * 4


def check_multiotsu_bins(n_bins: int, what: str, advice: str) -> None:
    """Refuse a multi-Otsu search over more than ``GEOSEG_MAX_MULTIOTSU_BINS`` histogram bins,
    before scikit-image allocates its table (memory grows as ``n_bins ** 2``, time as
    ``n_bins ** (classes - 1)``, in the process that fits). ``what`` names the histogram (the
    method and its feature); ``advice`` says how to bin the values coarser."""
    table = multiotsu_table_bytes(n_bins)
    check(n_bins, MAX_MULTIOTSU_BINS,
          f"{what} has {figure(n_bins)} bins, and scikit-image's multi-Otsu search over them "
          f"builds a table of {size(table)} ({figure(table)} bytes) in this process, its time "
          f"growing with the square of the bins or faster", advice)


def check_multiotsu_search(n_bins: int, classes: int, what: str, advice: str) -> None:
    """Refuse a multi-Otsu search that would try more than ``GEOSEG_MAX_MULTIOTSU_SEARCH``
    threshold combinations: scikit-image tries every choice of ``classes - 1`` of the ``n_bins``
    bins (about 1e8 a second), so 4 classes over 8192 bins would run for a quarter of an hour
    and 7 classes over 256 bins for hours."""
    tries = math.comb(n_bins, classes - 1)
    check(tries, MAX_MULTIOTSU_SEARCH,
          f"{what}: a multi-Otsu search for {classes} classes over {figure(n_bins)} bins tries "
          f"{figure(tries)} threshold combinations (about 1e8 a second)", advice)


def check_kernel(radius: int, parameter: str, what: str) -> None:
    """Refuse a filter whose kernel (or footprint) of ``radius`` pixels, ``2 * radius + 1``
    across, is wider than ``GEOSEG_MAX_KERNEL``, when the segmenter is built: its cost grows
    with the kernel's area (a median's, an opening's) or its side (a gaussian's), and the halo
    every task reads with it. ``parameter`` is the parameter that sets it, with its value;
    ``what`` names the method."""
    side = 2 * int(radius) + 1
    check(side, MAX_KERNEL,
          f"{what}: {parameter} makes a kernel of {figure(side)} pixels across (a halo of "
          f"{figure(int(radius))} pixels on each side of every tile)",
          f"Give a smaller {parameter.split('=')[0]} (or run the method on a downsampled raster), "
          "or raise the limit if the workers have the time and memory for such a filter.")


def smoothing_passes(n_bins: int, passes: int) -> int:
    """How many of ``passes`` smoothing passes over a histogram of ``n_bins`` bins (each a scan
    of every bin in Python, about 1e7 bins a second) ``GEOSEG_MAX_SMOOTHING`` (bins x passes)
    allows; at least one."""
    return max(1, min(int(passes), limit(MAX_SMOOTHING) // max(int(n_bins), 1)))


def refuse_smoothing(n_bins: int, passes: int, what: str, advice: str) -> None:
    """Raise :class:`BudgetError`: ``what`` (a histogram fit) still had too many modes after
    ``passes`` smoothing passes over ``n_bins`` bins, all that ``GEOSEG_MAX_SMOOTHING`` allows."""
    work = int(n_bins) * int(passes)
    raise BudgetError(
        f"{what}: the histogram of {figure(n_bins)} bins still has too many modes after "
        f"{figure(passes)} smoothing passes ({figure(work)} bin scans); the limit is "
        f"{figure(limit(MAX_SMOOTHING))} bin scans ({MAX_SMOOTHING}). {advice}")


def metadata_read_limit() -> int:
    """Bytes to read of a metadata document: one more than ``GEOSEG_MAX_METADATA_BYTES``, so
    that :func:`check_metadata` can tell one over the limit without reading the rest."""
    return limit(MAX_METADATA_BYTES) + 1


def check_metadata(n_bytes: int, what: str) -> None:
    """Refuse a metadata document of more than ``GEOSEG_MAX_METADATA_BYTES`` (``n_bytes``: what
    was read of it, at most :func:`metadata_read_limit`); ``what`` names it."""
    check(n_bytes, MAX_METADATA_BYTES, f"{what} holds {size(n_bytes)} or more of metadata",
          "Zarr metadata of that size is corrupt or hostile (a whole group's consolidated "
          "metadata takes a few MiB): check the URL, or raise the limit for a store that "
          "truly needs it.")
