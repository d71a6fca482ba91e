"""The NIfTI format: header magic, scaling and the affine between NIfTI's ``(i, j, k)`` voxel
order and geoseg's ``(z, y, x)``; shared by the reader (:mod:`geoseg.io.readers._nifti`),
``geoseg convert`` and the NIfTI export.

Voxels are stored in Fortran order ``(i, j, k[, t])``, so geoseg presents a volume as
``(band, z, y, x) = (t, k, j, i)``. The header's best affine (sform, else qform) maps
``(i, j, k)`` to scanner ``(X, Y, Z)``; :func:`voxel_affine` reorders its columns to geoseg's
``(z, y, x)`` index order and keeps its rows, world x, y, z as every ``voxel_affine`` has them
(see :class:`~geoseg.io.georef.GeoRef`), and :func:`nifti_affine` undoes that for output: any
volume's affine, an OME-Zarr's included, becomes an x-first NIfTI affine. The header's qform
and sform codes travel beside the affine (``GeoRef.nifti_codes``), to be written back by the
export.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError
from geoseg.io.georef import GeoRef

NIFTI1_MAGIC = (b"n+1\x00", 344)
NIFTI2_MAGIC = (b"n+2\x00", 4)
GZIP_MAGIC = b"\x1f\x8b"
_ZYX = [2, 1, 0, 3]  # (i, j, k, 1) columns in (z, y, x, 1) order, and back


def is_nifti(head: bytes) -> bool:
    """Whether the first 348 bytes of a file are a single-file NIfTI-1 or NIfTI-2 header."""
    return any(head[at : at + 4] == magic for magic, at in (NIFTI1_MAGIC, NIFTI2_MAGIC))


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


def voxel_affine(nifti: np.ndarray) -> np.ndarray:
    """NIfTI's ``(i, j, k)`` affine as geoseg's ``(z, y, x)`` one."""
    return np.asarray(nifti, dtype=float)[:, _ZYX]


def nifti_affine(georef: GeoRef) -> np.ndarray:
    """The NIfTI ``(i, j, k)`` affine of a geoseg volume (identity if it has none)."""
    matrix = georef.affine_matrix
    return np.eye(4) if matrix is None else matrix[:, _ZYX]


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
    define (nothing an export could write back).

    Only the best affine (the sform's, when it has a code) travels with the data, and the
    export writes it as both forms. A qform of another matrix keeps its code only where it is
    the affine carried: beside a coded sform of another matrix its code becomes 0, so no
    export says the sform's matrix is in the qform's space."""
    qform, sform = int(header["qform_code"]), int(header["sform_code"])
    if qform and sform and not np.allclose(header.get_qform(), header.get_sform(), atol=1e-4):
        qform = 0
    codes = qform, sform
    return codes if any(codes) and known_codes(codes) else None


def known_codes(codes: tuple[int, int]) -> bool:
    """Whether both codes are NIfTI xform codes (0 unknown, 1 scanner, ... 4 MNI, ...)."""
    return all(code in nib.nifti1.xform_codes.value_set() for code in codes)


def header_georef(header: nib.Nifti1Header) -> GeoRef:
    """The georeference of a file with this header: its voxel affine in ``(z, y, x)`` order,
    with the header's xform codes, so that an export can say which space that affine is in
    without the file."""
    return GeoRef.from_voxel_affine(voxel_affine(header.get_best_affine()), units=_units(header),
                                    nifti_codes=xform_codes(header))


def is_scaled(header: nib.Nifti1Header) -> bool:
    """Whether the header's slope and intercept change the stored values (read as float32)."""
    return scaling(header) != (1.0, 0.0)
