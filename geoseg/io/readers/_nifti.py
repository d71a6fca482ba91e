"""NIfTI volumes (``.nii``), read window by window without loading the file.

An uncompressed NIfTI-1/2 file is a header followed by the voxels in Fortran order
``(i, j, k[, t])``. Read as C order, each ``k`` plane is a ``(j, i)`` block, so geoseg presents
the volume as ``(band, z, y, x) = (t, k, j, i)`` and a task reads only the rows of the planes
its window covers. The header's affine becomes a voxel affine in ``(z, y, x)`` order
(:mod:`geoseg.io.nifti`). Gzipped files (``.nii.gz``, or gzip data misnamed ``.nii``) are
claimed too, to be refused with advice: they cannot be read by window (``geoseg convert`` turns
them into a chunked Zarr). A file shorter than its header declares is refused when opened.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import nibabel as nib
import numpy as np

from geoseg import budgets
from geoseg.core.urls import public_url
from geoseg.errors import UnsupportedFormatError
from geoseg.io.nifti import (
    GZIP_MAGIC,
    HEAD_BYTES,
    check_dimensions,
    check_file_size,
    data_shape,
    header_georef,
    is_nifti,
    parse_header,
    read_dtype,
    scaling,
    voxel_dtype,
)
from geoseg.io.readers import probe
from geoseg.io.readers.base import RasterSource, Reader, refuse_level, select_bands


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
        kind = np.dtype(self.dtype).type  # float32, or float64 where float32 would round
        return (raw * kind(self.slope) + kind(self.inter)).astype(self.dtype, copy=False)


class NiftiReader(Reader):
    name = "nifti"
    description = "a NIfTI-1/2 volume (.nii)"
    priority = 40

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        head = probe.head(url, storage_options)
        return is_nifti(head) or (head[:2] == GZIP_MAGIC and _named_nifti(url))

    def open(self, url: str, storage_options: dict[str, Any], *, bands: Sequence[int] | None = None,
             level: int | None = None) -> NiftiSource:
        refuse_level(url, level, "NIfTI")
        return select_bands(nifti_source(url, storage_options), bands)


def _named_nifti(url: str) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz``."""
    return url.rstrip("/").endswith((".nii", ".nii.gz"))


CHUNK_BYTES = 64 << 20  # a chunk of a plane: rows of it, read in one range each


def plane_rows(n_j: int, n_i: int, itemsize: int) -> int:
    """Rows of a plane (``n_j`` rows of ``n_i`` voxels) in one chunk: the whole plane where it
    takes at most :data:`CHUNK_BYTES`, else as many rows as do (at least one). A whole
    30000 x 30000 float32 plane was one 3.4 GiB chunk that any window of it read whole."""
    return max(1, min(n_j, CHUNK_BYTES // max(1, n_i * itemsize)))


def nifti_source(url: str, storage_options: dict[str, Any]) -> NiftiSource:
    """Describe the NIfTI file at ``url`` from its header and its size: a file shorter than its
    header declares is refused here, not when a task reads past its end."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    header = read_header(url, storage_options)
    shape = data_shape(header, url)
    check_dimensions(shape, url)
    n_i, n_j, n_k = shape[:3]
    n_t = shape[3] if len(shape) == 4 else 1
    budgets.check_bands(n_t, f"input {public_url(url)}", "volumes (header dim[4])")
    disk = voxel_dtype(header, url)
    check_file_size(url, fs.size(path), header, shape)
    slope, inter = scaling(header)
    return NiftiSource(
        url=url, shape=(n_t, n_k, n_j, n_i), dtype=read_dtype(header, disk),
        chunks=(1, plane_rows(n_j, n_i, np.dtype(read_dtype(header, disk)).itemsize), n_i),
        georef=header_georef(header, url),
        band_names=tuple(f"volume_{t + 1}" for t in range(n_t)) if n_t > 1 else ("intensity",),
        storage_options=storage_options, offset=int(header.get_data_offset()),
        disk_dtype=disk.str, disk_shape=(n_i, n_j, n_k, n_t), slope=slope, inter=inter,
    )


def read_header(url: str, storage_options: dict[str, Any]) -> nib.Nifti1Header:
    """The header of the single-file NIfTI at ``url``. A file without NIfTI's magic is refused
    before nibabel parses it; its extensions, up to the voxel offset, are read with it (at
    most :data:`~geoseg.io.nifti.MAX_HEADER_BYTES`). nibabel's reports on what it checks and
    fixes in a header go nowhere (nibabel prints them on stderr itself): a header it cannot use raises."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    head = fs.cat_file(path, start=0, end=HEAD_BYTES)  # one small range request, no read-ahead
    if head[:2] == GZIP_MAGIC:
        raise _gzipped(url)
    if not is_nifti(head):
        raise UnsupportedFormatError(
            f"Cannot read {public_url(url)} as NIfTI: received a file without a NIfTI-1/2 header "
            f"(it starts with {head[:8]!r}); expected a single-file NIfTI (.nii, magic 'n+1' or "
            "'n+2'). Give a NIfTI file, or leave the reader out to let geoseg pick one.")
    header = parse_header(head, lambda n: fs.cat_file(path, start=len(head), end=len(head) + n),
                          url, check=False)  # extensions: up to vox_offset, bounded
    header.check_fix(logger=_NIBABEL_REPORTS)  # raises for what it cannot fix, says nothing
    return header


def _gzipped(url: str) -> UnsupportedFormatError:
    """The refusal of a gzip-compressed file: convert it (a ``.nii`` name: rename it first)."""
    shown = public_url(url)
    if not url.rstrip("/").endswith(".gz"):
        return UnsupportedFormatError(
            f"{shown} holds gzip-compressed data (it starts with the gzip magic bytes 1f 8b), but "
            "its name ends in .nii, which is for uncompressed NIfTI. Rename it to end in .nii.gz, "
            "then convert it once to a chunked Zarr: `geoseg convert NAME.nii.gz OUT.zarr`, and "
            "use OUT.zarr as the input.")
    return UnsupportedFormatError(
        f"{shown} is gzip-compressed, which cannot be read window by window. Convert it once to a "
        f"chunked Zarr: `geoseg convert {shown} OUT.zarr`, then use OUT.zarr as the input.")


# where nibabel's header reports go: nowhere (a handler that drops them, so that logging's last
# resort does not print them either, and no other handler above)
_NIBABEL_REPORTS = logging.getLogger("geoseg.io.nibabel")
_NIBABEL_REPORTS.addHandler(logging.NullHandler())
_NIBABEL_REPORTS.propagate = False
