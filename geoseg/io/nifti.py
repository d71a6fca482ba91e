"""NIfTI volumes (``.nii``), read window by window without loading the file.

An uncompressed NIfTI-1/2 file is a header followed by the voxels in Fortran
order ``(i, j, k[, t])``. Read as C order, each ``k`` plane is a ``(j, i)`` block,
so geoseg presents the volume as ``(band, z, y, x) = (t, k, j, i)`` and a task
reads only the rows of the planes its window covers. The header's best affine
(sform, else qform) maps ``(i, j, k)``; :func:`voxel_affine` reorders its
columns to geoseg's ``(z, y, x)`` index order, and :func:`nifti_affine` undoes
that for output.

Gzipped files (``.nii.gz``) cannot be read by window: ``geoseg convert`` turns
them into a chunked Zarr first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import fsspec
import nibabel as nib
import numpy as np

from geoseg.errors import UnsupportedFormatError
from geoseg.io.georef import GeoRef
from geoseg.io.sources import RasterSource

NIFTI1_MAGIC = (b"n+1\x00", 344)
NIFTI2_MAGIC = (b"n+2\x00", 4)
GZIP_MAGIC = b"\x1f\x8b"
_ZYX = [2, 1, 0, 3]  # (i, j, k, 1) columns in (z, y, x, 1) order, and back


def is_nifti(head: bytes) -> bool:
    """Whether the first 348 bytes of a file are a single-file NIfTI-1 or NIfTI-2 header."""
    return any(head[at : at + 4] == magic for magic, at in (NIFTI1_MAGIC, NIFTI2_MAGIC))


@dataclass(frozen=True)
class NiftiSource(RasterSource):
    """A single-file NIfTI; ``disk_shape`` is ``(i, j, k, t)`` as stored."""

    offset: int = 352
    disk_dtype: str = "<f4"  # with byte order
    disk_shape: tuple[int, int, int, int] = (1, 1, 1, 1)
    slope: float = 1.0
    inter: float = 0.0
    band_indexes: tuple[int, ...] | None = None  # 0-based t indexes; None: all

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        zs, ys, xs = window
        n_i, n_j, n_k, _ = self.disk_shape
        dtype = np.dtype(self.disk_dtype)
        times = self.band_indexes or range(self.disk_shape[3])
        out = np.empty((len(times), zs.stop - zs.start, ys.stop - ys.start, xs.stop - xs.start), dtype)
        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        with fs.open(path, "rb", cache_type="none") as f:  # each read one exact range request
            for band, t in enumerate(times):
                for z, k in enumerate(range(zs.start, zs.stop)):
                    first = ((t * n_k + k) * n_j + ys.start) * n_i
                    f.seek(self.offset + first * dtype.itemsize)
                    rows = np.frombuffer(f.read((ys.stop - ys.start) * n_i * dtype.itemsize), dtype)
                    out[band, z] = rows.reshape(-1, n_i)[:, xs]
        return self._scaled(out)

    def _scaled(self, raw: np.ndarray) -> np.ndarray:
        if self.slope == 1.0 and self.inter == 0.0:
            return raw.astype(self.dtype, copy=False)
        return (raw * np.float32(self.slope) + np.float32(self.inter)).astype(self.dtype)


def nifti_source(url: str, storage_options: dict[str, Any]) -> NiftiSource:
    """Describe the NIfTI file at ``url`` from its header alone."""
    header = read_header(url, storage_options)
    shape = tuple(int(n) for n in header.get_data_shape())
    if not 3 <= len(shape) <= 4:
        raise UnsupportedFormatError(
            f"NIfTI file {url} has data shape {shape}; geoseg reads 3D volumes (i, j, k) and 4D ones "
            "(i, j, k, t), whose t axis becomes bands.")
    n_i, n_j, n_k = shape[:3]
    n_t = shape[3] if len(shape) == 4 else 1
    slope, inter = _scaling(header)
    disk = header.get_data_dtype()
    scaled = slope != 1.0 or inter != 0.0
    return NiftiSource(
        url=url, shape=(n_t, n_k, n_j, n_i), dtype="float32" if scaled else disk.newbyteorder("=").name,
        chunks=(1, n_j, n_i), georef=GeoRef.from_voxel_affine(voxel_affine(header.get_best_affine()),
                                                              units=_units(header)),
        band_names=tuple(f"volume_{t + 1}" for t in range(n_t)) if n_t > 1 else ("intensity",),
        storage_options=storage_options, offset=int(header.get_data_offset()),
        disk_dtype=disk.str, disk_shape=(n_i, n_j, n_k, n_t), slope=slope, inter=inter,
    )


def read_header(url: str, storage_options: dict[str, Any]) -> nib.Nifti1Header:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    head = fs.cat_file(path, start=0, end=540)  # one small range request, no read-ahead
    if head[:2] == GZIP_MAGIC:
        raise UnsupportedFormatError(
            f"{url} is gzip-compressed, which cannot be read window by window. Convert it once to a "
            f"chunked Zarr: `geoseg convert {url} OUT.zarr`, then use OUT.zarr as the input.")
    klass = nib.Nifti2Header if head[4:8] == NIFTI2_MAGIC[0] else nib.Nifti1Header
    return klass.from_fileobj(io.BytesIO(head))


def voxel_affine(nifti: np.ndarray) -> np.ndarray:
    """NIfTI's ``(i, j, k)`` affine as geoseg's ``(z, y, x)`` one."""
    return np.asarray(nifti, dtype=float)[:, _ZYX]


def nifti_affine(georef: GeoRef) -> np.ndarray:
    """The NIfTI ``(i, j, k)`` affine of a geoseg volume (identity if it has none)."""
    matrix = georef.affine_matrix
    return np.eye(4) if matrix is None else matrix[:, _ZYX]


def _scaling(header: nib.Nifti1Header) -> tuple[float, float]:
    slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


def _units(header: nib.Nifti1Header) -> str | None:
    space, _ = header.get_xyzt_units()
    return None if space == "unknown" else space


def header_georef(header: nib.Nifti1Header) -> GeoRef:
    """The georeference :func:`nifti_source` gives a file with this header (for readers that
    decompress the whole file, such as ``geoseg convert``)."""
    return GeoRef.from_voxel_affine(voxel_affine(header.get_best_affine()), units=_units(header))


def is_scaled(header: nib.Nifti1Header) -> bool:
    """Whether the header's slope and intercept change the stored values (read as float32)."""
    return _scaling(header) != (1.0, 0.0)
