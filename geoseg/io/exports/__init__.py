"""Finished outputs in other formats: Cloud-Optimized GeoTIFF, OME-Zarr labels, NIfTI.

Each export reads a complete ``geoseg run`` output chunk by chunk (never the whole
raster at once), keeps its georeference, class names and colours, refuses to
replace an existing destination unless asked, and never averages class ids when
it builds coarser levels. :func:`check_exports` refuses any of several exports asked for
at once before one is written.
"""

from geoseg.io.exports.cog import export_cog
from geoseg.io.exports.common import FinishedOutput, open_finished
from geoseg.io.exports.nifti_out import export_nifti
from geoseg.io.exports.ome import check_label_name, export_ome_labels
from geoseg.io.exports.requested import check_exports

__all__ = ["FinishedOutput", "check_exports", "check_label_name", "export_cog", "export_nifti",
           "export_ome_labels", "open_finished"]
