"""Several exports of one output asked for at once: every one checked before any is written."""

from __future__ import annotations

from typing import Any

from geoseg.io.exports.cog import check_cog
from geoseg.io.exports.nifti_out import check_nifti
from geoseg.io.exports.ome import check_ome


def check_exports(
    output_url: str,
    *,
    cog: str | None = None,
    ome_zarr: str | None = None,
    nifti: str | None = None,
    name: str = "segmentation",
    overwrite: bool = False,
    blocksize: int = 512,
    compress: str = "deflate",
    resampling: str = "mode",
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Refuse, before anything is written, any of the exports asked for (``cog``, ``ome_zarr``,
    ``nifti`` destinations) that :func:`~geoseg.io.exports.export_cog`,
    :func:`~geoseg.io.exports.export_ome_labels` or :func:`~geoseg.io.exports.export_nifti`
    would refuse: a COG of a volume asked for beside a NIfTI would otherwise be refused only
    after the NIfTI was written (or the other way round). ``storage_options``: of the output."""
    if cog:
        check_cog(output_url, cog, storage_options=storage_options, overwrite=overwrite,
                  blocksize=blocksize, compress=compress, resampling=resampling)
    if ome_zarr:
        check_ome(output_url, ome_zarr, name=name, storage_options=storage_options,
                  overwrite=overwrite, resampling=resampling)
    if nifti:
        check_nifti(output_url, nifti, storage_options=storage_options, overwrite=overwrite)
