"""A reader named by the user (``input.reader``) on a file of another format: one geoseg error
saying what the file looks like and which reader reads it, and no library's own lines.

``reader: nifti`` on a GeoTIFF printed nibabel's header reports on stderr ("sizeof_hdr should
be 348; ...") before an error calling the file corrupt.
"""

from __future__ import annotations

import logging

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import yaml

from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.readers import open_source
from tests.cli import geoseg as geoseg_cli
from tests.conftest import job_dict, textured_image, write_geotiff, write_zarr

NIBABEL_SAYS = ("sizeof_hdr", "data code", "not attempting fix", "nibabel", "HeaderDataError")


def test_reader_nifti_on_a_geotiff_is_one_clear_error(tmp_path, model_path):
    """In a process of its own: nibabel prints through a handler of its own, on the stderr of
    the process."""
    tif = write_geotiff(tmp_path / "scene.tif", textured_image(64, 64))
    data = job_dict(tif, model_path, str(tmp_path / "out.zarr"))
    data["input"]["reader"] = "nifti"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    result = geoseg_cli("validate", str(tmp_path / "job.yaml"), own_process=True)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: input.url: The reader 'nifti' (a NIfTI-1/2 volume (.nii)) "
                               f"cannot read {tif}: "), lines[0]
    assert "it looks like a GeoTIFF or COG" in lines[0] and "Use reader: geotiff" in lines[0]
    assert "corrupt" not in lines[0]
    assert not any(said in result.stderr for said in NIBABEL_SAYS), result.stderr


@pytest.mark.parametrize(("kind", "reader", "looks_like"), [
    ("zarr", "geotiff", "a Zarr v2/v3 array"),  # GDAL's "not recognized": was "corrupt"
    ("zarr", "nifti", "a Zarr v2/v3 array"),  # was a bare IsADirectoryError
    ("png", "nifti", "a PNG, JPEG"),  # was nibabel's "Binary block is wrong size": "corrupt"
])
def test_a_named_reader_on_another_format_says_which_reader_reads_it(tmp_path, kind, reader,
                                                                     looks_like, caplog):
    if kind == "zarr":
        url = write_zarr(tmp_path / "in.zarr", textured_image(32, 32))
    else:
        url = str(tmp_path / "in.png")
        iio.imwrite(url, np.zeros((16, 16, 3), np.uint8))
    with caplog.at_level(logging.DEBUG), pytest.raises(UnsupportedFormatError) as info:
        open_source(url, reader=reader)
    said = str(info.value)
    assert said.startswith(f"The reader '{reader}' "), said
    assert f"cannot read {url}: " in said and f"it looks like {looks_like}" in said, said
    assert f"Use reader: {'image' if kind == 'png' else 'zarr'}," in said
    assert not [r for r in caplog.records if r.name.startswith("nibabel")]


def test_a_nifti_header_nibabel_cannot_fix_is_corrupt_and_nibabel_says_nothing(tmp_path, caplog):
    path = tmp_path / "bad.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    raw[70:72] = np.int16(277).tobytes()  # datatype: a code NIfTI does not define
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.DEBUG), pytest.raises(CorruptInputError, match="bad.nii"):
        open_source(str(path), reader="nifti")
    assert not [r for r in caplog.records if r.name.startswith("nibabel")], caplog.records
