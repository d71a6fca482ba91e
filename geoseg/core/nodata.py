"""The nodata value a raster's attributes declare: one rule for :func:`geoseg.segment` and the
fits of the classical methods, so that a fit never counts the pixels segment() leaves out."""

from __future__ import annotations

from typing import Any

import numpy as np

from geoseg.core.text import brief
from geoseg.errors import ParameterError

NODATA_ATTRS = ("_FillValue", "missing_value", "fill_value", "nodata")  # in the order read


def exact_number(value: Any) -> float:
    """``value`` (a number) as a Python number that keeps it exactly: an integer as ``int``
    (a 64-bit nodata such as 2**64 - 1 or 2**53 + 1 is not one float64 shared with its
    neighbours), anything else as ``float``. numpy compares Python integers with integer
    pixels exactly."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return float(value)


def attrs_nodata(attrs: dict[str, Any], where: str) -> float | None:
    """The nodata ``attrs`` (a DataArray's) declare: the first of :data:`NODATA_ATTRS` set, as
    the Zarr reader reads them: ``_FillValue`` (where rioxarray's ``open_rasterio`` keeps it),
    ``missing_value``, ``fill_value``, then ``nodata`` (where :func:`~geoseg.open_raster` sets
    it). A masked raster (``mask_and_scale=True``) holds NaN there, its fill value only in
    ``encoding``, which describes the stored values and is not read. ``where`` names the raster
    in the error for a value that is not a number."""
    key = next((k for k in NODATA_ATTRS if attrs.get(k) is not None), None)
    if key is None:
        return None
    value = attrs[key]
    number = np.asarray(value)
    if number.shape == () and number.dtype.kind in "iuf":
        return exact_number(number.item())
    raise ParameterError(
        f"{where}: attrs[{key!r}] = {brief(value)}; expected a number, the value of its pixels "
        f"with no data. Set it to one (raster.attrs[{key!r}] = 0), or delete it if the raster "
        "has no nodata.")
