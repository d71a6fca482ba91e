"""The NIfTI format: header magic, scaling and the affine between NIfTI's ``(i, j, k)`` voxel
order and geoseg's ``(z, y, x)``; shared by the reader (:mod:`geoseg.io.readers._nifti`),
``geoseg convert`` and the NIfTI export.

Voxels are stored in Fortran order ``(i, j, k[, t])``, so geoseg presents a volume as
``(band, z, y, x) = (t, k, j, i)``. The header's best affine (sform, else qform) maps
``(i, j, k)`` to scanner ``(X, Y, Z)``; :func:`voxel_affine` reorders its columns to geoseg's
``(z, y, x)`` index order and keeps its rows, world x, y, z as every ``voxel_affine`` has them
(see :class:`~geoseg.io.georef.GeoRef`), and :func:`nifti_affine` undoes that for output: any
volume's affine, an OME-Zarr's included, becomes an x-first NIfTI affine. The header's qform
and sform codes travel beside the affine (``GeoRef.nifti_codes``), with a qform of another
matrix than the sform (``GeoRef.nifti_qform``), to be written back by the
export.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import nibabel as nib
import numpy as np

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.georef import GeoRef, places_voxels

NIFTI1_MAGIC = (b"n+1\x00", 344)
NIFTI2_MAGIC = (b"n+2\x00", 4)
GZIP_MAGIC = b"\x1f\x8b"
HEAD_BYTES = 544  # read first: a NIfTI-2 header (540 bytes) and its extension flag (4)
MAX_HEADER_BYTES = 64 * 2**20  # header and extensions read at most (CIfTI/AFNI XML: a few MiB)
_ZYX = [2, 1, 0, 3]  # (i, j, k, 1) columns in (z, y, x, 1) order, and back


def is_nifti(head: bytes) -> bool:
    """Whether the first 348 bytes of a file are a single-file NIfTI-1 or NIfTI-2 header."""
    return any(head[at : at + 4] == magic for magic, at in (NIFTI1_MAGIC, NIFTI2_MAGIC))


def header_class(head: bytes) -> type[nib.Nifti1Header]:
    """nibabel's header class for a file starting with ``head``: NIfTI-2 or NIfTI-1."""
    return nib.Nifti2Header if head[4:8] == NIFTI2_MAGIC[0] else nib.Nifti1Header


def parse_header(head: bytes, more: Callable[[int], bytes], url: str, *,
                 check: bool = True) -> nib.Nifti1Header:
    """The header, with its extensions, of a single-file NIfTI starting with ``head`` (its
    first :data:`HEAD_BYTES`, or all of a shorter file). ``more(n)`` returns the next ``n`` bytes after
    ``head``; it is called once, for the bytes up to the voxel offset, only when the header
    says extensions follow it. nibabel parses exactly those bytes, as it parses a whole file,
    so what a header declares never makes it read further: extensions ending past
    :data:`MAX_HEADER_BYTES` are refused before any read, and extensions that break off
    (a truncated file) or run past the voxel offset raise :class:`CorruptInputError`."""
    klass = header_class(head)
    end = extensions_end(head, url)
    if end is None:  # no extension to read: the fixed header (and the 4 extension flag bytes)
        return klass.from_fileobj(io.BytesIO(head[: klass.template_dtype.itemsize + 4]),
                                  check=check)
    klass.from_fileobj(io.BytesIO(head[: klass.template_dtype.itemsize]), check=check)
    block = head[:end] if end <= len(head) else head + more(end - len(head))
    try:
        return klass.from_fileobj(io.BytesIO(block), check=check)
    except nib.spatialimages.HeaderDataError as exc:
        raise _broken_extensions(url, len(block), end, exc) from None


def extensions_end(head: bytes, url: str) -> int | None:
    """Where the extensions of the header ``head`` end: its voxel offset, when the extension
    flag after the header is set and there is room for an extension (16 bytes) before the
    voxels; else ``None``. A voxel offset past :data:`MAX_HEADER_BYTES`, or one inside the
    header itself while extensions are flagged (nibabel would read them to the end of the
    file), is refused."""
    klass = header_class(head)
    size = klass.template_dtype.itemsize
    if len(head) < size + 4 or head[size] == 0:
        return None
    offset = float(klass(head[:size], check=False)["vox_offset"])
    if math.isfinite(offset) and size + 4 <= offset < size + 4 + 16:
        return None  # room for no extension: nibabel reads none
    if not math.isfinite(offset) or offset < size + 4:
        raise CorruptInputError(
            f"NIfTI file {public_url(url)} is corrupt: its header says extensions follow it, but "
            f"its voxel offset (vox_offset) is {offset:g}, not past the header's {size + 4} "
            "bytes, so nothing says where the extensions end. Re-download or re-export the file.")
    end = math.ceil(offset)
    if end > MAX_HEADER_BYTES:
        raise UnsupportedFormatError(
            f"NIfTI file {public_url(url)} declares header extensions up to byte {end:,} (its "
            f"vox_offset, where the voxels start): {end - size - 4:,} bytes of extensions; "
            f"geoseg reads at most {MAX_HEADER_BYTES:,} bytes of header and extensions. A header "
            "this large is more often corrupt or hostile. If the file is genuine, save it without "
            "its extensions, e.g. with nibabel: `img = nibabel.load(NAME); "
            "img.header.extensions.clear(); nibabel.save(img, 'plain.nii')`, and give plain.nii.")
    return end


def _broken_extensions(url: str, held: int, end: int, exc: Exception) -> CorruptInputError:
    """The error for header extensions nibabel cannot read from the ``held`` bytes before the
    voxel offset ``end``: the file stops short of it, or its extensions do not fit before it."""
    if held < end:
        fault = (f"truncated: it holds {held:,} bytes, but its header declares extensions up to "
                 f"byte {end:,} (vox_offset, where the voxels start)")
    else:
        fault = (f"corrupt: its header extensions do not fit in the {end:,} bytes before its "
                 f"voxels (vox_offset) ({exc})")
    return CorruptInputError(f"NIfTI file {public_url(url)} is {fault}. Re-download or "
                             "re-export the file, then try again.")


def data_shape(header: nib.Nifti1Header, url: str) -> tuple[int, ...]:
    """The header's data shape ``(i, j, k[, t])``, each size checked to be >= 1: a header may say
    0 or a negative size, which would plan no task, or divide by zero, far from the file."""
    shape = tuple(int(n) for n in header.get_data_shape())
    for axis, n in enumerate(shape, start=1):
        if n < 1:
            raise CorruptInputError(
                f"NIfTI file {public_url(url)} has dim[{axis}] = {n} in its header (data shape "
                f"{shape}); every size must be >= 1. The header is corrupt: re-write or "
                "re-download the file.")
    return shape


def check_dimensions(shape: tuple[int, ...], url: str) -> None:
    """Refuse a data shape that is not 3D ``(i, j, k)`` or 4D ``(i, j, k, t)``, with the
    nibabel line that makes one of it (a 2D image as one slice, axes after the third as bands)."""
    if 3 <= len(shape) <= 4:
        return
    if len(shape) < 3:
        sizes, what = (*shape, 1, 1)[:3], "a one-slice volume"
    else:
        sizes, what = (*shape[:3], -1), f"a 4D volume of {math.prod(shape[3:])} bands"
    name = public_url(url)
    raise UnsupportedFormatError(
        f"NIfTI file {name} has data shape {shape}; geoseg reads 3D volumes (i, j, k) and 4D ones "
        f"(i, j, k, t), whose t axis becomes bands. Save it as {what}, e.g. with nibabel: "
        f"`img = nibabel.load({name!r}); v = numpy.asanyarray(img.dataobj).reshape({sizes}, "
        "order='F'); nibabel.save(nibabel.Nifti1Image(v, img.affine), 'volume.nii')`, then give "
        "volume.nii as the input.")


def voxel_dtype(header: nib.Nifti1Header, url: str) -> np.dtype:
    """The header's stored voxel dtype (with byte order). RGB24 and RGBA32 voxels, several
    ``uint8`` channels packed in one voxel, are refused with a way to split them: geoseg reads
    one number per voxel, and numpy names such a dtype ``void24``, which nothing computes on."""
    dtype = header.get_data_dtype()
    if dtype.fields is None and dtype.kind != "V":
        return dtype
    code = int(header["datatype"])
    label = nib.nifti1.data_type_codes.label.get(code, "packed")
    channels = list(dtype.names or ())
    name = public_url(url)
    raise UnsupportedFormatError(
        f"NIfTI file {name} stores {label} voxels (datatype code {code}: {len(channels) or 'several'} "
        f"uint8 channels {', '.join(channels)} in each voxel); geoseg reads volumes of one number "
        "per voxel (integer or floating point). Split the channels into the volumes of a 4D file, "
        f"whose volumes geoseg reads as bands, e.g. with nibabel: `img = nibabel.load({name!r}); "
        "v = numpy.asanyarray(img.dataobj); nibabel.save(nibabel.Nifti1Image(numpy.stack("
        f"[v[c] for c in {channels!r}], axis=-1), img.affine), 'bands.nii')`, then give "
        "bands.nii as the input.")


def data_bytes(header: nib.Nifti1Header, shape: tuple[int, ...]) -> int:
    """How many bytes the header says the file holds: its voxel offset and the voxels after it."""
    return int(header.get_data_offset()) + int(np.prod(shape, dtype=object)) * voxel_size(header)


def voxel_size(header: nib.Nifti1Header) -> int:
    """Bytes per stored voxel."""
    return int(header.get_data_dtype().itemsize)


def check_file_size(url: str, size: int | None, header: nib.Nifti1Header,
                    shape: tuple[int, ...]) -> None:
    """Refuse an uncompressed NIfTI file of ``size`` bytes, shorter than its header declares
    (a failed download or copy): without this check it opens as the full volume and fails only
    when a task reads past its end. A size the store does not say (``None``) is not checked."""
    if size is None or int(size) >= data_bytes(header, shape):
        return
    raise CorruptInputError(
        f"NIfTI file {public_url(url)} is truncated or corrupt: it holds {int(size):,} bytes, but "
        f"{declared(header, shape)}. Re-download or re-export the file, then try again.")


def declared(header: nib.Nifti1Header, shape: tuple[int, ...]) -> str:
    """What the header declares the file holds, for messages: bytes, offset, shape, dtype."""
    return (f"its header declares {data_bytes(header, shape):,} bytes (voxels from byte "
            f"{int(header.get_data_offset())} on, data shape {shape} of "
            f"{header.get_data_dtype()}, {voxel_size(header)} byte(s) each)")


def voxel_affine(nifti: np.ndarray) -> np.ndarray:
    """NIfTI's ``(i, j, k)`` affine as geoseg's ``(z, y, x)`` one."""
    return np.asarray(nifti, dtype=float)[:, _ZYX]


def nifti_affine(georef: GeoRef) -> np.ndarray:
    """The NIfTI ``(i, j, k)`` affine of a geoseg volume (identity if it has none)."""
    return np.eye(4) if georef.voxel_affine is None else nifti_order(georef.voxel_affine)


def nifti_order(matrix: Any) -> np.ndarray:
    """A geoseg voxel affine (16 values or 4 x 4, over ``(z, y, x, 1)``) as a NIfTI
    ``(i, j, k)`` affine: :func:`voxel_affine` undone."""
    return np.asarray(matrix, dtype=float).reshape(4, 4)[:, _ZYX]


def scaling(header: nib.Nifti1Header) -> tuple[float, float]:
    """The header's ``(slope, intercept)``; ``(1, 0)`` where they are unset or not finite."""
    slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


def _units(header: nib.Nifti1Header) -> str | None:
    space, _ = header.get_xyzt_units()
    return None if space == "unknown" else space


def xform_codes(header: nib.Nifti1Header) -> tuple[int, int] | None:
    """The header's ``(qform_code, sform_code)``: the spaces its affines are in (scanner,
    aligned, Talairach, MNI, ...); ``None`` when it names neither, or a code NIfTI does not
    define (nothing an export could write back). The best affine (the sform's, when it has a
    code) travels with the data; a coded qform of another matrix travels beside it
    (:func:`distinct_qform`), so each code is written back with its own matrix."""
    codes = int(header["qform_code"]), int(header["sform_code"])
    return codes if any(codes) and known_codes(codes) else None


def distinct_qform(header: nib.Nifti1Header) -> np.ndarray | None:
    """The header's qform as a geoseg voxel affine, where both forms are coded and the qform
    is another matrix than the sform (the best affine); ``None`` otherwise."""
    qform, sform = int(header["qform_code"]), int(header["sform_code"])
    if not (qform and sform) or np.allclose(header.get_qform(), header.get_sform(), atol=1e-4):
        return None
    matrix = voxel_affine(header.get_qform())  # one no export could write is not carried on
    return matrix if places_voxels(matrix) else None


def _best_affine_name(header: nib.Nifti1Header) -> str:
    """Which of the header's affines ``get_best_affine`` returns: the sform, the qform, or the
    one made of the voxel sizes (pixdim) where neither is coded."""
    if int(header["sform_code"]) > 0:
        return "sform"
    return "qform" if int(header["qform_code"]) > 0 else "pixdim"


def known_codes(codes: tuple[int, int]) -> bool:
    """Whether both codes are NIfTI xform codes (0 unknown, 1 scanner, ... 4 MNI, ...)."""
    return all(code in nib.nifti1.xform_codes.value_set() for code in codes)


def header_georef(header: nib.Nifti1Header, url: str = "the NIfTI file") -> GeoRef:
    """The georeference of a file with this header: its voxel affine in ``(z, y, x)`` order,
    with the header's xform codes, so that an export can say which space that affine is in
    without the file. An affine that places no voxel (a NaN, or a zero volume) is refused."""
    codes = xform_codes(header)
    return GeoRef.from_voxel_affine(
        voxel_affine(header.get_best_affine()), units=_units(header), nifti_codes=codes,
        nifti_qform=None if codes is None else distinct_qform(header),
        source=f"the {_best_affine_name(header)} of NIfTI file {public_url(url)}",
        shape=tuple(reversed((tuple(header.get_data_shape()[:3]) + (1, 1, 1))[:3])),
        fix="Set a valid one, e.g. with nibabel: img.set_sform(affine, code=1) and "
            "img.set_qform(affine, code=1), then save the file")


def is_scaled(header: nib.Nifti1Header) -> bool:
    """Whether the header's slope and intercept change the stored values (read as
    :func:`scaled_dtype`)."""
    return scaling(header) != (1.0, 0.0)


def scaled_dtype(stored: np.dtype, slope: float = 1.0, inter: float = 0.0) -> str:
    """The dtype voxels stored as ``stored`` and scaled by ``slope`` and ``inter`` are read as:
    float32 where it holds every stored value exactly (integers of up to 16 bits, float32 and
    narrower) and every scaled one (a slope of 1e36 on int16 overflows float32 into infinities,
    which read as no data), else float64, as nibabel's ``get_fdata`` gives (a 32-bit integer
    above 2**24 would be rounded)."""
    stored = np.dtype(stored)
    exact = stored.itemsize <= 2 if stored.kind in "iub" else stored.itemsize <= 4
    info = np.iinfo(stored) if stored.kind in "iu" else None
    largest = 1.0 if stored.kind == "b" else float(info.max if info else np.finfo(stored).max)
    fits = abs(slope) * max(largest, float(-info.min) if info else largest) + abs(inter) \
        <= float(np.finfo(np.float32).max)
    return "float32" if exact and fits else "float64"


def read_dtype(header: nib.Nifti1Header, stored: np.dtype) -> str:
    """The dtype voxels stored as ``stored`` under ``header`` are read as: the stored one (in
    native byte order), or :func:`scaled_dtype` where the header scales them."""
    if not is_scaled(header):
        return np.dtype(stored).newbyteorder("=").name
    return scaled_dtype(stored, *scaling(header))
