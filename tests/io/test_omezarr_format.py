"""An OME-Zarr image is named for its format, not as plain Zarr."""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

from geoseg.errors import CorruptInputError
from geoseg.io.convert import convert
from geoseg.io.readers import open_source
from geoseg.io.sources import ZarrSource
from tests.cli import geoseg
from tests.io.test_volume_inputs import write_ome_volume


def test_an_ome_zarr_image_reads_as_ome_zarr_and_still_as_a_zarr_array(tmp_path):
    url = write_ome_volume(tmp_path / "scan.ome.zarr", np.arange(4 * 6 * 5, dtype=np.uint8)
                           .reshape(4, 6, 5))
    source = open_source(url)
    assert source.format == "ome-zarr"
    assert isinstance(source, ZarrSource)  # chunk listings, missing-chunk checks apply
    assert open_source(url, variable="s0").format == "zarr"  # one array of it, read as plain Zarr
    assert convert(url, str(tmp_path / "copy.zarr")).input_format == "ome-zarr"


def test_geoseg_info_says_ome_zarr(tmp_path):
    url = write_ome_volume(tmp_path / "scan.ome.zarr", np.zeros((4, 6, 5), np.uint8))
    said = geoseg("info", url)
    assert said.returncode == 0, said.stderr
    assert re.search(r"format\s+ome-zarr", said.stdout), said.stdout


def test_a_level_the_metadata_lists_but_the_image_lacks_is_named(tmp_path):
    """A level listed in multiscales but not stored was "No raster at URL: nothing exists at
    that path", though the image opens at level 0."""
    url = write_ome_volume(tmp_path / "scan.ome.zarr", np.zeros((4, 6, 5), np.uint8))
    group = zarr.open_group(url, mode="r+")
    multiscales = group.attrs["multiscales"]
    first = multiscales[0]["datasets"][0]
    multiscales[0]["datasets"] += [{**first, "path": "s1"}, {**first, "path": "s2"}]
    group.attrs["multiscales"] = multiscales
    assert open_source(url, level=0).format == "ome-zarr"
    with pytest.raises(CorruptInputError, match=r"lists resolution level 2 at dataset path 's2', "
                                                r"but no array is stored there"):
        open_source(url, level=2)
