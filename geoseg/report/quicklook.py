"""Quicklooks: a small picture of a chunked output, never read whole.

The classes are read with a stride (every ``step``-th pixel of every chunk, chunk by chunk:
nearest-neighbour downsampling, so class ids stay ids); the input's chosen bands the same way,
stretched between their 2nd and 98th percentiles. The mask lies over the picture in the
model's class colours (the output's ``class_colors``), the nodata class left clear, with a
legend of the classes the picture shows (the most frequent :data:`LEGEND_MAX` of them, the
rest counted in a last entry). A volume gets three orthogonal slices through its middle, each
drawn in the proportions of its voxel spacing (an anisotropic CT's coronal and sagittal slices
as tall as the anatomy, like a radiology viewer's), when the output records a voxel affine. Memory
is bounded by the chunks in flight plus the small picture, whatever the raster's size: the stride
comes from the size drawn, never more than :data:`MAX_SIZE` a side, whatever size is asked. A
picture of (nearly) nothing but the no-data class says so in its caption (:func:`nodata_note`).
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np

from geoseg.core.classes import default_color
from geoseg.io.files import write_whole

DEFAULT_SIZE = 1024  # longest side of the picture, in pixels
MAX_SIZE = 2 * DEFAULT_SIZE  # the longest side a view is drawn at: `geoseg quicklook --size`'s most
NODATA_SHARE = 0.99  # sampled pixels of the no-data class past which the caption says so
LEGEND_MAX = 24  # classes the legend names at most; any others it counts in one last entry
SWATCH_EDGE = "#555555"  # the outline of every legend swatch: a white class shows too


@dataclass(frozen=True)
class Quicklook:
    """What a quicklook shows: one or three views (``rgb`` may be ``None``) and the legend."""

    views: tuple[tuple[str, np.ndarray | None, np.ndarray], ...]  # (title, rgb, classes)
    names: tuple[str, ...]
    colors: np.ndarray  # (n_classes, 3) uint8
    nodata: int | None
    step: int
    note: str = ""
    aspects: tuple[float, ...] = ()  # per view: a row's length over a column's; () all 1


def view_aspects(spacing: Sequence[float] | None) -> tuple[float, ...]:
    """A volume's three views' aspects (row spacing over column spacing) from its ``(z, y, x)``
    spacing: axial ``y / x``, coronal ``z / x``, sagittal ``z / y``; ``()`` (square pixels)
    without a spacing, or with one that is not positive and finite."""
    if spacing is None or not all(math.isfinite(s) and s > 0 for s in spacing):
        return ()
    z, y, x = (float(s) for s in spacing)
    return y / x, z / x, z / y


def display_size(shape: Sequence[int], aspect: float = 1.0,
                 most: int = MAX_SIZE) -> tuple[int, int]:
    """The ``(height, width)`` in picture pixels of a view of ``shape`` sampled pixels whose rows
    are ``aspect`` times as long as its columns: the shorter side stretched, then both shrunk
    to at most ``most`` pixels a side (a 1:1000 spacing draws no 10**6-pixel picture)."""
    height, width = shape[0] * max(aspect, 1.0), shape[1] / min(aspect, 1.0)
    shrink = max(1.0, height / most, width / most)
    return max(1, round(height / shrink)), max(1, round(width / shrink))


def step_for(shape: Sequence[int], size: int = DEFAULT_SIZE) -> int:
    """The stride that brings the longest side of ``shape`` to at most ``size`` pixels."""
    return max(1, math.ceil(max(shape) / size))


def drawn_step(shape: Sequence[int], size: int = DEFAULT_SIZE) -> int:
    """The stride to read ``shape`` with for a picture of ``size``: :func:`step_for` the size
    drawn, at most :data:`MAX_SIZE`. A stride from a larger size read pixels the picture then
    shrank away (``--size 100000`` read a 6000 x 6000 output whole, 5 GB, for a 2048 picture)."""
    return step_for(shape, min(size, MAX_SIZE))


def coarse(array: da.Array, step: int) -> np.ndarray:
    """Every ``step``-th pixel of ``array``'s last two axes, each chunk read on its own."""
    index = (slice(None),) * (array.ndim - 2) + (slice(None, None, step),) * 2
    return np.asarray(array[index].compute())


def stretch(rgb: np.ndarray, low: float = 2, high: float = 98,
            valid: np.ndarray | None = None) -> np.ndarray:
    """``(band, y, x)`` to ``(y, x, 3)`` floats in [0, 1], each band stretched between its
    ``low`` and ``high`` percentiles (of ``valid`` pixels, finite ones); one band is shown grey,
    NaN as 0 and infinities at the ends."""
    bands = rgb.astype(np.float64)
    out = np.zeros(bands.shape, np.float64)
    for i, band in enumerate(bands):
        values = band[valid] if valid is not None and valid.any() else band.ravel()
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, [low, high]) if values.size else (0.0, 1.0)
        scaled = (np.nan_to_num(band, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
        out[i] = np.clip(scaled, 0, 1)
    if out.shape[0] < 3:
        out = np.repeat(out[:1], 3, axis=0)
    return np.moveaxis(out[:3], 0, -1)


def class_colors(colors: Sequence[Sequence[int]] | None, n: int) -> np.ndarray:
    """``(n, 3)`` uint8 colours: the model's where it gives them, else those exports give the
    classes (:func:`~geoseg.core.classes.default_color`)."""
    out = np.array([default_color(i) for i in range(n)], np.uint8).reshape(n, 3)
    for i, color in enumerate(list(colors or [])[:n]):
        out[i] = np.asarray(color, np.uint8)[:3]
    return out


def overlay(rgb: np.ndarray | None, classes: np.ndarray, colors: np.ndarray,
            nodata: int | None, alpha: float = 0.45) -> np.ndarray:
    """``(y, x, 3)`` floats: the class colours blended over ``rgb`` (grey without it); pixels
    of the nodata class, or of ids without a colour, show the picture alone."""
    base = np.full((*classes.shape, 3), 0.5) if rgb is None else rgb
    known = classes < len(colors)
    if nodata is not None:
        known &= classes != nodata
    paint = colors[np.where(known, classes, 0)].astype(np.float64) / 255
    weight = np.where(known, alpha if rgb is not None else 1.0, 0.0)[..., None]
    return base * (1 - weight) + paint * weight


def legend(look: Quicklook, most: int = LEGEND_MAX) -> tuple[tuple[int, ...], int]:
    """The class ids the legend names, and how many more classes it only counts: the classes
    in the drawn views (never the nodata class, nor ids without a name), :func:`ranked`."""
    return ranked(_counts(look), most)


def ranked(counts: np.ndarray, most: int = LEGEND_MAX) -> tuple[tuple[int, ...], int]:
    """The ids of nonzero ``counts`` in id order; of more than ``most``, the ``most`` largest,
    largest first (ties in id order); and how many more ids have a nonzero count."""
    present = np.flatnonzero(counts)
    if len(present) <= most:
        return tuple(int(i) for i in present), 0
    order = np.argsort(-counts[present], kind="stable")
    return tuple(int(i) for i in present[order[:most]]), len(present) - most


def _counts(look: Quicklook) -> np.ndarray:
    """Sampled pixels of each named class in the views; 0 for the nodata class."""
    n = len(look.names)
    ids = np.concatenate([classes.ravel() for _, _, classes in look.views]).astype(np.int64)
    counts = np.bincount(ids[(ids >= 0) & (ids < n)], minlength=n)
    if look.nodata is not None and 0 <= look.nodata < n:
        counts[look.nodata] = 0
    return counts


def build(output_url: str, *, image_url: str | None = None, variable: str | None = None,
          bands: Sequence[int] | None = None, size: int = DEFAULT_SIZE,
          storage_options: dict[str, Any] | None = None,
          image_options: dict[str, Any] | None = None, check: bool = True) -> Quicklook:
    """The quicklook of a geoseg output: its classes over the input's bands (the input the run
    record names, unless ``image_url`` is given; none when it cannot be read).

    With ``check``, the caption says when the output is unfinished or damaged (its missing
    regions are drawn as no-data): one listing of the output's objects
    (:func:`state_note`). A run's own report, drawn as the run ends, skips it. Stored chunks
    of ``classes`` that do not decode are drawn as no-data too, and the caption names them
    (:func:`undecodable_note`), checked or not.

    ``storage_options`` read the output; ``image_options`` the image, by default the same (an
    image in the output's bucket). A job's input has its own, which its report passes here.

    ``size`` is the longest side of the mask in the picture, at most :data:`MAX_SIZE` (a larger
    one draws that, and reads no more than it draws: :func:`drawn_step`). A picture of only, or
    nearly only, the no-data class says so in the caption (:func:`nodata_note`)."""
    from geoseg.io.output import OutputTarget

    target = OutputTarget(output_url, dict(storage_options or {}))
    attrs = _output_attrs(target)
    classes = _classes_source(target)
    image, note = _image(attrs, image_url, variable, bands,
                         storage_options if image_options is None else image_options, classes)
    if check:
        note = "; ".join(filter(None, [state_note(target, attrs), note]))
    step = drawn_step(classes.shape[1:], size)
    fill = attrs.get("nodata_class")
    views, bad = _views(classes, image, step, np.iinfo(classes.dtype).max if fill is None else fill)
    note = "; ".join(filter(None, [undecodable_note(bad), nodata_note(views, fill), note]))
    names = attrs.get("class_names") or range(max(int(v[2].max()) for v in views) + 1)
    aspects = view_aspects(classes.georef.spacing) if len(views) == 3 else ()
    return Quicklook(views, tuple(str(n) for n in names),
                     class_colors(attrs.get("class_colors"), len(names)),
                     attrs.get("nodata_class"), step, note, aspects)


def nodata_note(views: Sequence[tuple[Any, ...]], nodata: int | None,
                share: float = NODATA_SHARE) -> str:
    """What the caption says when every sampled pixel of ``views``, or at least ``share`` of
    them, is the ``nodata`` class; ``""`` otherwise. Such a picture is blank, or the input alone,
    with no legend: without a word it passes for a picture that failed to draw."""
    if nodata is None:
        return ""
    total = sum(v[2].size for v in views)
    empty = sum(int(np.count_nonzero(v[2] == nodata)) for v in views)
    if not total or empty < share * total:
        return ""
    if empty == total:
        return (f"no data: every sampled pixel is the no-data class {nodata}, so no class is "
                "drawn; check the input's nodata value and its coverage")
    shown = math.floor(1000 * empty / total) / 10  # never 100.0% while some class shows
    return (f"nearly no data: {shown}% of the sampled pixels are the no-data class {nodata}, so "
            "almost no class is drawn")


def state_note(target: Any, attrs: dict[str, Any]) -> str:
    """Why some of the output is drawn as no-data: its run did not finish, or regions its run
    wrote are gone from storage; ``""`` for a complete, whole output."""
    from geoseg.io.integrity import damage_found

    status = attrs.get("status")
    if status is None:  # no run's state recorded: nothing to say about it
        return ""
    if status != "complete":
        done, planned = len(target.done_keys()), int(attrs.get("n_chunks", 0))
        return (f"not finished (status {status}): {done} of {planned} task regions written, the "
                "rest drawn as no-data")
    problem = damage_found(target, attrs)
    return f"damaged: {problem}; drawn as no-data (geoseg verify names them)" if problem else ""


def _output_attrs(target: Any) -> dict[str, Any]:
    """The ``geoseg`` attributes of the output ``target``; nothing there, or something geoseg did
    not write (an input, say), refused naming it."""
    from geoseg.core.urls import public_url
    from geoseg.errors import ExportError
    from geoseg.io.output import being_removed, half_deleted, output_exists
    from geoseg.jobs.status import no_output

    attrs = target.attrs()
    url = public_url(target.url)
    if being_removed(attrs):  # part of it is gone: nothing to draw
        raise ExportError(half_deleted(target.url, "nothing to draw"))
    if attrs:
        return attrs
    if not output_exists(target.url, target.storage_options):
        raise no_output(target.url, target.storage_options)
    raise ExportError(f"{url} is not a geoseg output (no `geoseg` attributes): give an output a "
                      "geoseg run wrote (its output.url), not an input.")


def _image(attrs: dict[str, Any], url: str | None, variable: str | None,
           bands: Sequence[int] | None, storage_options: dict[str, Any] | None,
           classes: Any) -> tuple[da.Array | None, str]:
    """The input's bands to draw under the mask (whose raster source is ``classes``), lazily;
    ``(None, why)`` when there are none. The run's input may have moved or changed since: then
    the mask is drawn alone and the caption says why. An image or bands the caller named that
    cannot be read, or that lie on another grid than the mask, are an error instead."""
    from geoseg.core.urls import public_url
    from geoseg.errors import ExportError
    from geoseg.io.georef import grid_difference
    from geoseg.io.readers import GROUPED, open_source, source_to_dataarray

    job = _recorded_job_input(attrs)
    asked = url is not None or bands is not None or variable is not None
    url = url or recorded_input(attrs)
    if url is None:
        return None, "no input named: the mask alone"
    try:
        source = open_source(url, storage_options, variable=variable or (
            job.get("variable") if url == job.get("url") else None), bands=bands)
    except Exception as exc:  # the picture is drawn without it, and says so
        if asked:
            raise
        return None, f"input {url} not readable ({type(exc).__name__}): the mask alone"
    differs = grid_difference(source.shape[1:], source.georef, classes.shape[1:], classes.georef)
    if differs is not None:
        if asked:
            raise ExportError(
                f"--image {public_url(url)} is not on the output's grid ({differs}, the image's "
                "first): the mask cannot be drawn over it. Give the raster the job read, or one "
                "on its grid.")
        return None, f"input {public_url(url)} is on another grid now ({differs}): the mask alone"
    # read in windows of whole stored chunks of 512 pixels or more: one task per stored chunk
    # of a finely chunked input (4 x 4 pixels, say) cost the picture ten times the job's time
    data = source_to_dataarray(source, GROUPED).data
    if bands is None:
        data = data[:3]
    return data, ""


def recorded_input(attrs: dict[str, Any]) -> str | None:
    """The input URL an output's run record names (``attrs``: its ``geoseg`` attributes)."""
    url = _recorded_job_input(attrs).get("url")
    return url if isinstance(url, str) else None


def _recorded_job_input(attrs: dict[str, Any]) -> dict[str, Any]:
    part: Any = attrs
    for key in ("provenance", "job", "input"):
        part = part.get(key) if isinstance(part, dict) else None
    return part if isinstance(part, dict) else {}


def _views(classes: Any, image: da.Array | None, step: int,
           fill: int) -> tuple[tuple[Any, ...], list[str]]:
    """One view of an image; three orthogonal middle slices of a volume. ``classes`` is the
    output's raster source; also returns the names of its chunks that do not decode."""
    shape = tuple(classes.shape[1:])
    if len(shape) == 2:
        mask, bad = sampled(classes, (slice(None),) * 2, step, fill)
        picture = None if image is None else coarse(image, step)
        return (("", picture, mask),), bad
    z, y, x = (n // 2 for n in shape)
    cuts = ((f"axial z={z}", (z, slice(None), slice(None))),
            (f"coronal y={y}", (slice(None), y, slice(None))),
            (f"sagittal x={x}", (slice(None), slice(None), x)))
    views, bad = [], []
    for title, cut in cuts:
        mask, failed = sampled(classes, cut, step, fill)
        bad += [name for name in failed if name not in bad]
        views.append((title, None if image is None else coarse(image[(slice(None), *cut)], step),
                      mask))
    return tuple(views), bad


def sampled(source: Any, cut: Sequence[int | slice], step: int,
            fill: int) -> tuple[np.ndarray, list[str]]:
    """Every ``step``-th pixel of the plane ``cut`` (an index on at most one spatial axis,
    ``slice(None)`` on the others) of a one-band raster ``source``, read chunk by chunk through
    ``source.read`` (:mod:`geoseg.io.faults`). A chunk that does not decode
    (:class:`~geoseg.errors.CorruptInputError`) is drawn as ``fill``; the names of those
    chunks (their storage keys) come back beside the picture."""
    shape, chunks = tuple(source.shape[1:]), tuple(source.chunks)
    spans = [[(i, i + 1)] if isinstance(i, int) else
             [(s, min(s + c, n)) for s in range(0, n, c)] for i, c, n in zip(cut, chunks, shape)]
    cells = list(itertools.product(*spans))
    found = dask.compute(*[dask.delayed(_sample_chunk)(source, cell, cut, step)
                           for cell in cells])
    out = np.full([-(-n // step) for i, n in zip(cut, shape) if not isinstance(i, int)], fill,
                  np.dtype(source.dtype))
    bad = []
    for cell, (block, name) in zip(cells, found):
        place = tuple(slice(-(-a // step), -(-b // step))
                      for (a, b), i in zip(cell, cut) if not isinstance(i, int))
        if name is None:
            out[place] = block
        elif name not in bad:
            bad.append(name)
    return out, bad


def _sample_chunk(source: Any, cell: Sequence[tuple[int, int]], cut: Sequence[int | slice],
                  step: int) -> tuple[np.ndarray | None, str | None]:
    """The sampled pixels of one chunk's part of the plane ``cut``; ``(None, the chunk's
    name)`` when it does not decode."""
    from geoseg.errors import CorruptInputError

    window = tuple(slice(a, b) for a, b in cell)
    try:
        block = source.read(window)[0]
    except CorruptInputError:
        return None, _chunk_name(source, cell, cut)
    index = tuple(0 if isinstance(i, int) else slice((-a) % step, None, step)
                  for (a, _), i in zip(cell, cut))
    return block[index], None


def _chunk_name(source: Any, cell: Sequence[tuple[int, int]], cut: Sequence[int | slice]) -> str:
    """The storage key of the chunk at ``cell``, with its pixel window."""
    from geoseg.io.faults import window_text

    index = tuple(a // c for (a, _), c in zip(cell, source.chunks))
    full = tuple(slice(i * c, min((i + 1) * c, n))
                 for i, c, n in zip(index, source.chunks, source.shape[1:]))
    try:
        key = str(source.chunk_name(index))
    except Exception:  # noqa: BLE001 - the metadata itself may be what fails
        key = "chunk"
    return f"{key} at {window_text(full)}"


def undecodable_note(bad: Sequence[str]) -> str:
    """What the caption says of ``classes`` chunks that did not decode; ``""`` for none."""
    if not bad:
        return ""
    from geoseg.io.faults import SHOWN

    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return (f"undecodable: {len(bad)} stored chunk(s) of classes do not decode "
            f"({', '.join(bad[:SHOWN])}{more}); drawn as no-data. To fix: delete those chunk "
            "files and run the job again (it recomputes only the missing regions), or restore "
            "the output from a copy; geoseg verify names every such region")


def _classes_source(target: Any) -> Any:
    """The output's ``classes`` as a raster source, whose reads name a chunk that fails. Storage
    options beside a local output are ignored, with a warning that calls it the output."""
    from geoseg.io import remote
    from geoseg.io.readers import open_source

    remote.local_options_ignored(target.url, target.storage_options, "output")
    options = {} if remote.is_local(target.url) else target.storage_options
    return open_source(target.url, options, variable="classes")


def render(look: Quicklook, *, dpi: int = 100) -> bytes:
    """The quicklook as PNG bytes: views side by side at one picture pixel per sampled pixel
    (so the build's ``size`` sets the picture's size), a volume's slices stretched to the
    proportions of its voxel spacing (:func:`display_size`), a title and a legend of the
    classes."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    handles = _handles(look)
    aspects = look.aspects or (1.0,) * len(look.views)
    sizes = [display_size(v[2].shape, a) for v, a in zip(look.views, aspects)]
    layout = _Layout.of(sizes, [h.get_label() for h in handles],
                        bool(look.note), [v[0] for v in look.views])
    fig = Figure(figsize=(layout.width / dpi, layout.height / dpi), dpi=dpi)
    for box, (title, rgb, classes) in zip(layout.boxes(), look.views):
        ax = fig.add_axes(box)
        picture = rgb if rgb is None else stretch(rgb, valid=classes != look.nodata)
        ax.imshow(overlay(picture, classes, look.colors, look.nodata), interpolation="nearest",
                  aspect="auto")  # the box has the view's physical proportions
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=layout.columns, fontsize=8,
                   frameon=False)
    fig.suptitle(literal(_title(look) + (f"\n{look.note}" if look.note else "")), fontsize=8,
                 wrap=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _title(look: Quicklook) -> str:
    """What one picture pixel is; for a volume of unequal spacing, that it is drawn to scale."""
    if any(not math.isclose(a, 1.0, rel_tol=1e-3) for a in look.aspects):
        return f"1 sample = {look.step} x {look.step} output voxels, drawn to voxel spacing"
    return f"1 picture pixel = {look.step} x {look.step} output pixels"


def _handles(look: Quicklook) -> list[Any]:
    """The legend's entries (:func:`legend`, :func:`legend_handles`)."""
    shown, more = legend(look)
    return legend_handles(shown, more, look.names, look.colors / 255)


def literal(text: str) -> str:
    """``text`` as matplotlib draws it as written: a ``$`` would begin mathematical notation
    (``US$`` drawn wrongly, ``$\\frac{x$`` failing the whole figure)."""
    return text.replace("$", r"\$")


def legend_handles(shown: Sequence[int], more: int, names: Sequence[str],
                   colors: np.ndarray) -> list[Any]:
    """Legend entries: each class of ``shown`` in its colour (``colors`` in 0..1), outlined in
    grey so that a white (or very light) class shows on the white background, then, when
    ``more`` are left out, one uncoloured entry counting them."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[i], edgecolor=SWATCH_EDGE, linewidth=0.8,
                     label=literal(names[i])) for i in shown]
    if more:
        handles.append(Patch(facecolor="none", edgecolor="none",
                             label=f"+ {more} more class{'es' * (more > 1)}"))
    return handles


@dataclass(frozen=True)
class _Layout:
    """Where the views go, in picture pixels: side by side at their own size, centred, under
    the title and the views' titles, over the legend's rows."""

    sizes: tuple[tuple[int, int], ...]  # (height, width) per view
    slots: tuple[int, ...]  # the width each view takes: its own, or its title's when wider
    columns: int  # of the legend
    width: int
    height: int
    top: int
    gap: ClassVar[int] = 12

    @classmethod
    def of(cls, sizes: Sequence[tuple[int, ...]], labels: Sequence[str],
           note: bool = False, titles: Sequence[str] = ()) -> _Layout:
        """The layout of views of ``sizes`` (under their ``titles``) over a legend of
        ``labels`` (under a ``note``): as many columns as the longest label leaves room for,
        at most 6, and as many rows as they need."""
        sizes = tuple((int(h), int(w)) for h, w in sizes)
        titles = tuple(titles) or ("",) * len(sizes)
        slots = tuple(max(w, 7 * len(t)) for (_, w), t in zip(sizes, titles))  # ~7 px a char
        views = sum(slots) + cls.gap * (len(sizes) + 1)
        width = max(views, 360)
        column = max(110, 56 + 7 * max(map(len, labels), default=0))  # patch, gaps, ~7 px a char
        columns = max(1, min(len(labels), 6, width // column))
        bottom = 16 + 16 * math.ceil(len(labels) / columns)
        top = 44 + 24 * note  # the title (and a note under it), then each view's
        return cls(sizes, slots, columns, width, top + max(h for h, _ in sizes) + bottom, top)

    def boxes(self) -> list[tuple[float, float, float, float]]:
        """Each view's axes as figure fractions (left, bottom, width, height), centred in its
        slot."""
        x = (self.width - sum(self.slots) - self.gap * (len(self.sizes) - 1)) // 2
        boxes = []
        for (h, w), slot in zip(self.sizes, self.slots):
            bottom, left = self.height - self.top - h, x + (slot - w) // 2
            boxes.append((left / self.width, bottom / self.height, w / self.width, h / self.height))
            x += slot + self.gap
        return boxes


def write_quicklook(output_url: str, png: str | os.PathLike[str], **options: Any) -> Quicklook:
    """Build the quicklook of ``output_url`` (options of :func:`build`), write it as a PNG file
    at ``png`` (a path or a URL, written with fsspec) and return it (its ``note`` says what the
    caption warns of). A ``png`` inside the output or the image it reads (the run's input by
    default) is refused first."""
    from geoseg.io.output import OutputTarget

    dest = os.fspath(png)  # a URL stays one: a Path would make s3://b/q.png the folder s3:/b
    output_options = options.get("storage_options")
    refuse_inside(dest, output_url, output_options)
    image_options = options.get("image_options")  # the output's options unless its own
    if options.get("image_url") is not None:
        refuse_inside(dest, options["image_url"], output_options
                      if image_options is None else image_options, "image")
    elif (drawn := recorded_input(OutputTarget(output_url, dict(output_options or {})).attrs())):
        refuse_inside(dest, drawn, output_options if image_options is None else image_options,
                      "run's input")
    look = build(output_url, **options)
    picture = render(look)
    write_whole(dest, picture, what="Writing the quicklook")  # its folder made, as report --out
    return look


def refuse_inside(png: str, store: str, storage_options: dict[str, Any] | None = None,
                  what: str = "output store") -> None:
    """Refuse (:class:`~geoseg.errors.ExportError`) a picture ``png`` that is the store it is
    drawn from, lies inside it or holds it: a file written there changes the store (a run on
    the output, or ``geoseg verify``, would find an object its run never wrote)."""
    from geoseg.core.urls import public_url
    from geoseg.errors import ExportError
    from geoseg.io.allow import overlapping

    if not overlapping(png, None, store, storage_options):
        return
    beside = store.rstrip("/").removesuffix(".zarr") + ".png"
    raise ExportError(
        f"PNG {public_url(png)}: received a path inside the {what} {public_url(store)} the "
        f"quicklook reads, or one holding it; expected a file outside it, such as "
        f"{public_url(beside)}. Nothing was written: a file there would change the store it reads.")
