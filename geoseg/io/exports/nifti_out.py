"""NIfTI-1 export of a finished volume output, with the input's affine.

geoseg stores a NIfTI volume as ``(z, y, x) = (k, j, i)``; read in C order those
are exactly NIfTI's voxel bytes (Fortran order over ``(i, j, k)``). So the file
is a header followed by the output's z-slabs, streamed one chunk-row of planes
at a time (gzip-compressed on the fly for ``.nii.gz``). The affine is the
output's ``voxel_affine`` turned back into ``(i, j, k)`` order (its rows are world
x, y, z for any input, so an OME-Zarr volume is written x-first too), set as both
sform and qform; the intent is ``label``, and a JSON comment extension names the
classes.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator
from typing import IO, Any

import nibabel as nib
import numpy as np

from geoseg.errors import ExportError
from geoseg.io.exports.common import (
    FinishedOutput,
    open_finished,
    refuse_existing,
    shown,
    staged_file,
)
from geoseg.io.nifti import nifti_affine

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
    out = open_finished(output_url, storage_options)
    out.require_ndim(3, "NIfTI", "Export an image with --cog.")
    if not dest.endswith((".nii", ".nii.gz")):
        raise ExportError(
            f"NIfTI destination {shown(dest)}: expected a name ending in .nii or .nii.gz."
        )
    refuse_existing(dest, dest_options, overwrite, "NIfTI file")
    header = nifti_header(out)
    with (
        staged_file(dest, dest_options) as staged,
        open(staged, "wb") as raw,
        _compressed(raw, dest.endswith(".gz")) as stream,
    ):
        _write(stream, header, out)
    return dest


def nifti_header(out: FinishedOutput) -> nib.Nifti1Header:
    """Shape ``(i, j, k)``, label dtype, sform and qform from the output's voxel affine."""
    header = nib.Nifti1Header()
    header.set_data_shape(out.shape[::-1])
    header.set_data_dtype(out.dtype)
    affine = nifti_affine(out.georef)
    header.set_qform(affine, code=ALIGNED)
    header.set_sform(affine, code=ALIGNED)
    header.set_xyzt_units(_UNITS.get((out.georef.units or "").lower(), "unknown"))
    header.set_intent("label")
    header["cal_min"], header["cal_max"] = 0, max(len(out.class_names) - 1, 0)
    header["descrip"] = b"geoseg classes"
    classes = {"class_names": list(out.class_names), "nodata_class": out.nodata_class}
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(classes).encode()))
    header["vox_offset"] = 0  # let nibabel place the data after the extension
    return header


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
