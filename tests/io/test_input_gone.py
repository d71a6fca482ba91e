"""An input the client opened but a worker cannot find (no shared disk, or deleted during the
run) is reported as missing on that machine, not as a corrupt file."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from geoseg.errors import CorruptInputError, RasterNotFoundError
from geoseg.io.readers import open_source
from tests.conftest import textured_image, write_geotiff


def test_a_geotiff_gone_after_opening_is_named_missing_on_this_host(tmp_path):
    path = tmp_path / "scene.tif"
    source = open_source(write_geotiff(path, textured_image(128, 128)))
    assert np.asarray(source.read((slice(0, 64), slice(0, 64)))).shape == (3, 64, 64)
    path.unlink()
    with pytest.raises(RasterNotFoundError) as caught:
        source.read((slice(64, 128), slice(0, 64)))
    said = str(caught.value)
    assert "scene.tif does not exist on " + socket.gethostname() in said
    assert "y 64:128, x 0:64" in said and "object storage" in said
    assert not isinstance(caught.value, CorruptInputError) and "corrupt" not in said
