"""The pixel types geoseg computes on: bool, integers and floats. Anything else (complex, text,
objects, dates) is refused wherever a raster comes in, saying how to convert it."""

from __future__ import annotations

from typing import Any

import numpy as np

from geoseg.errors import UnsupportedFormatError

# per numpy dtype kind geoseg does not read: what it is, and how to make numbers of it
_DTYPE_HINTS = {
    "c": ("complex", " (e.g. numpy.abs(x) or x.real as float32)"),
    "M": ("dates and times", (" (e.g. x.astype('datetime64[s]').astype('int64'): seconds "
                              "since 1970, or the day of year as int16)")),
    "m": ("time spans", " (e.g. x / numpy.timedelta64(1, 's') as float32: seconds)"),
    "U": ("text", ""),
    "S": ("bytes", ""),
}


def check_pixel_dtype(dtype: Any, what: str, given_as: str) -> None:
    """Refuse pixels no model or method computes on (complex, text, objects, dates): torch would
    drop a complex raster's imaginary part silently and fail on text only when computed.
    ``what`` names the raster (``"input URL"``), ``given_as`` where to give a converted one."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:  # GDAL's complex integers (complex_int16), a structured dtype as text
        complex_ints = "complex" in str(dtype)
        kind = "complex integers, which numpy has no type for" if complex_ints else \
            "not a type numpy reads"
        hint = " (e.g. gdal_translate -ot CFloat32, then its amplitude as float32)" \
            if complex_ints else ""
    else:
        if dtype.kind in "biuf":
            return
        kind, hint = _DTYPE_HINTS.get(dtype.kind, ("not numbers", ""))
    raise UnsupportedFormatError(
        f"{what} has pixels of dtype {dtype} ({kind}); geoseg reads bool, integer and "
        f"floating-point rasters. Convert it first to a new raster of one of those{hint} and "
        f"give that as {given_as}.")
