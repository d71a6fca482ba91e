"""NIfTI-1 export of a finished volume output, with the input's affine.

geoseg stores a NIfTI volume as ``(z, y, x) = (k, j, i)``; read in C order those
are exactly NIfTI's voxel bytes (Fortran order over ``(i, j, k)``). So the file
is a header followed by the output's z-slabs, streamed one chunk-row of planes
at a time (gzip-compressed on the fly for ``.nii.gz``). The affine is the
output's ``voxel_affine`` turned back into ``(i, j, k)`` order (its rows are world
x, y, z for any input, so an OME-Zarr volume is written x-first too), set as both
sform and qform, with the qform and sform codes of the NIfTI file the output came from:
they travel with the data (read from its header when the input was opened, kept in the
output's attributes), so the file itself is not needed. An output written before they did
has them from that file, when its run's provenance names one that is still readable; any
other gets code 2, aligned. The intent is ``label``, and a JSON comment extension names the
classes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from collections.abc import Iterator
from typing import IO, Any

import fsspec
import nibabel as nib
import numpy as np
import zarr

from geoseg.errors import ExportError
from geoseg.io.exports.common import (
    FinishedOutput,
    open_finished,
    published,
    refuse_existing,
    shown,
)
from geoseg.io.georef import spanning
from geoseg.io.nifti import (
    GZIP_MAGIC,
    distinct_qform,
    is_nifti,
    known_codes,
    nifti_affine,
    nifti_order,
)
from geoseg.io.remote import zarr_options

_UNITS = {
    "mm": "mm",
    "millimeter": "mm",
    "millimetre": "mm",
    "micron": "micron",
    "micrometer": "micron",
    "micrometre": "micron",
    "um": "micron",
    "m": "meter",
    "meter": "meter",
    "metre": "meter",
}
ALIGNED = 2  # NIfTI xform code: aligned to another file's (the input's) space
NIFTI1_MAX_DIM = 32767  # NIfTI-1 sizes are 16-bit: a longer axis is written as NIfTI-2


def export_nifti(
    output_url: str,
    dest: str,
    *,
    storage_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write the class ids of the finished volume output at ``output_url`` to ``dest``
    (``.nii``, or ``.nii.gz`` gzip-compressed); returns ``dest``."""
    out = check_nifti(output_url, dest, storage_options=storage_options,
                      dest_options=dest_options, overwrite=overwrite)
    header = nifti_header(out, output_codes(output_url, storage_options, out))
    with (
        published(dest, dest_options, overwrite) as staged,
        open(staged, "wb") as raw,
        _compressed(raw, dest.endswith(".gz")) as stream,
    ):
        _write(stream, header, out)
    return dest


def check_nifti(
    output_url: str,
    dest: str,
    *,
    storage_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> FinishedOutput:
    """What :func:`export_nifti` refuses before writing anything; returns the output."""
    out = open_finished(output_url, storage_options)
    out.require_ndim(3, "NIfTI", "Export an image with --cog.")
    if not dest.endswith((".nii", ".nii.gz")):
        raise ExportError(
            f"NIfTI destination {shown(dest)}: expected a name ending in .nii or .nii.gz."
        )
    refuse_existing(
        dest, dest_options, overwrite, "NIfTI file", source=output_url,
        source_options=storage_options, suffix=".nii.gz" if dest.endswith(".gz") else ".nii",
    )
    return out


def nifti_header(out: FinishedOutput, codes: tuple[int, int] | None = None) -> nib.Nifti1Header:
    """Shape ``(i, j, k)``, label dtype, sform and qform from the output's voxel affine, with
    ``codes`` (qform, sform) as their codes; :data:`ALIGNED` for both without them. NIfTI-1,
    or NIfTI-2 for an axis past :data:`NIFTI1_MAX_DIM` voxels (nibabel reads both)."""
    qform_code, sform_code = codes or (ALIGNED, ALIGNED)
    header = nib.Nifti2Header() if max(out.shape) > NIFTI1_MAX_DIM else nib.Nifti1Header()
    header.set_data_shape(out.shape[::-1])
    header.set_data_dtype(out.dtype)
    affine = nifti_affine(out.georef)
    qform = out.georef.nifti_qform  # the input's own qform, where it was another matrix
    # a qform is a rotation and voxel sizes: a single plane's zero step becomes a unit one
    header.set_qform(spanning(affine if qform is None else nifti_order(qform)), code=qform_code)
    header.set_sform(affine, code=sform_code)
    header.set_xyzt_units(_UNITS.get((out.georef.units or "").lower(), "unknown"))
    header.set_intent("label")
    header["cal_min"], header["cal_max"] = 0, max(len(out.class_names) - 1, 0)
    header["descrip"] = b"geoseg classes"
    classes = {"class_names": list(out.class_names), "nodata_class": out.nodata_class}
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(classes).encode()))
    header["vox_offset"] = 0  # let nibabel place the data after the extension
    return header


def output_codes(
    output_url: str, storage_options: dict[str, Any] | None, out: FinishedOutput
) -> tuple[int, int] | None:
    """The (qform, sform) codes to write: those the output carries from its NIfTI input
    (``GeoRef.nifti_codes``); for an output that carries none (written before the codes
    travelled with the data, or from another format), :func:`source_codes`; ``None`` for
    :data:`ALIGNED`."""
    carried = out.georef.nifti_codes
    if carried is not None:
        return carried if known_codes(carried) else None
    return source_codes(output_url, storage_options, out)


def source_codes(
    output_url: str, storage_options: dict[str, Any] | None, out: FinishedOutput
) -> tuple[int, int] | None:
    """The (qform, sform) codes of the NIfTI file the output was computed from, as its run's
    provenance names it, when that file is still there and has the output's affine; ``None``
    otherwise (another format, gone, unreadable, or both codes 0), for :data:`ALIGNED`. Only
    for outputs whose attributes do not carry the codes themselves."""
    try:
        group = zarr.open_group(output_url, mode="r", **zarr_options(output_url, storage_options))
        provenance = dict(group.attrs.get("geoseg", {})).get("provenance") or {}
        url = str(provenance["job"]["input"]["url"])
        fs, path = fsspec.core.url_to_fs(url)
        with fs.open(path, "rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if head == GZIP_MAGIC else raw
            head = stream.read(540)
        klass = nib.Nifti2Header if head[4:8] == b"n+2\x00" else nib.Nifti1Header
        header = klass.from_fileobj(io.BytesIO(head)) if is_nifti(head) else None
    except Exception:  # noqa: BLE001 - no provenance or no readable NIfTI input: ALIGNED stands
        return None
    if header is None:
        return None
    codes = int(header["qform_code"]), int(header["sform_code"])
    if distinct_qform(header) is not None:  # its matrix is not the output's: no space for it
        codes = 0, codes[1]
    same = np.allclose(header.get_best_affine(), nifti_affine(out.georef), atol=1e-4)
    return codes if same and any(codes) and known_codes(codes) else None


@contextlib.contextmanager
def _compressed(raw: IO[bytes], gz: bool) -> Iterator[IO[bytes]]:
    if not gz:
        yield raw
        return
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as stream:
        yield stream  # type: ignore[misc]


def _write(stream: IO[bytes], header: nib.Nifti1Header, out: FinishedOutput) -> None:
    header.write_to(stream)
    stream.write(bytes(int(header.get_data_offset()) - stream.tell()))
    dtype = header.get_data_dtype()
    depth = out.chunks[0]
    for z in range(0, out.shape[0], depth):
        slab = out.read((slice(z, min(z + depth, out.shape[0])), slice(None), slice(None)))
        stream.write(np.ascontiguousarray(slab, dtype=dtype).tobytes())
