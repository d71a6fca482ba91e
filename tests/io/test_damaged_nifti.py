"""Damaged and unusual NIfTI files: truncated or corrupt gzip streams, files shorter than their
header declares, RGB voxels, gzip data named ``.nii``. Each is refused as bad input (exit 2)
with a message naming the file and the fix, and nothing is written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.convert import convert
from geoseg.io.readers import open_source
from tests.cli import geoseg as geoseg_cli
from tests.io.test_volume_inputs import write_nifti

RE_GET = "Re-download or re-export the file"


def said(result) -> str:
    """The command's stderr as one line (rich may wrap it)."""
    return " ".join(result.stderr.split())


def good_gz(folder: Path) -> bytes:
    """A gzipped 40 x 40 x 30 int16 volume of noise (so that it compresses little)."""
    data = np.random.default_rng(0).integers(0, 1000, (40, 40, 30)).astype(np.int16)
    path = write_nifti(folder / "ct.nii", data, np.diag([1.0, 1.0, 2.0, 1.0]))
    return gzip.compress(path.read_bytes())


def header_only(shape: tuple[int, ...]) -> bytes:
    """A NIfTI-1 file whose header declares int16 voxels of ``shape`` and holds 1,004 bytes."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    return header.binaryblock + b"\0" * 1004


def damaged(kind: str, folder: Path) -> Path:
    """A damaged ``.nii.gz`` file of ``kind``, as the audit built them."""
    whole = good_gz(folder)
    if kind == "truncated":
        blob = whole[: len(whole) // 2]
    elif kind == "corrupt":  # bytes flipped in the middle: the CRC fails at the end
        flipped = bytearray(whole)
        at = len(whole) // 2
        flipped[at : at + 200] = bytes(v ^ 0x55 for v in flipped[at : at + 200])
        blob = bytes(flipped)
    elif kind == "short":  # a whole gzip stream, far less data than the header declares
        blob = gzip.compress(header_only((400, 400, 400)))
    else:  # "header_cut": the gzip stream breaks inside the NIfTI header
        blob = whole[:100]
    path = folder / f"{kind}.nii.gz"
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize(("kind", "words"), [
    ("truncated", ["is truncated: its gzip stream breaks off before its end marker",
                   "Uncompressed, its header declares 96,352 bytes"]),
    ("corrupt", ["is corrupt: its gzip checksum (CRC) does not match"]),
    ("short", ["is truncated or corrupt: it decompresses to 1,352 bytes,",
               "but its header declares 128,000,000 bytes"]),
    ("header_cut", ["is truncated", "The file holds 100 compressed bytes",
                    "It breaks within the first 540 decompressed bytes, where the NIfTI header"]),
])
def test_a_damaged_gzipped_nifti_is_refused_by_convert_and_nothing_is_left(tmp_path, kind, words):
    """Was: an empty message (EOFError became click's Abort), BadGzipFile or nibabel's
    'Whoops' as internal errors with exit 1, and, for a header cut short, advice to run the
    very `geoseg convert` that failed."""
    path = damaged(kind, tmp_path)
    out = tmp_path / "out.zarr"
    result = geoseg_cli("convert", str(path), str(out))
    message = said(result)
    assert result.returncode == 2, message
    assert message.startswith(f"error: NIfTI file {path} is "), message
    for word in [*words, RE_GET]:
        assert word in message, message
    assert "internal error" not in message and "geoseg convert" not in message, message
    assert not out.exists()
    with pytest.raises(CorruptInputError, match="NIfTI file .* is (truncated|corrupt)"):
        convert(str(path), str(out))
    assert not out.exists()


def test_a_conversion_that_breaks_midway_says_the_output_was_removed(tmp_path):
    """The gzip stream breaks after its first slabs were written: they are removed."""
    path = damaged("truncated", tmp_path)
    out = tmp_path / "out.zarr"
    result = geoseg_cli("convert", str(path), str(out), "--chunks", "2,40,40")
    assert result.returncode == 2, said(result)
    assert f"Nothing was converted: the part-written output {out} was removed." in said(result)
    assert not out.exists()


def rgb_nifti(path: Path) -> Path:
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    return path


def test_an_rgb_nifti_is_refused_with_a_way_to_split_its_channels(tmp_path):
    """Was: internal error: TypeError: data type 'void24' not understood."""
    path = rgb_nifti(tmp_path / "rgb.nii")
    result = geoseg_cli("info", str(path))
    message = said(result)
    assert result.returncode == 2, message
    assert f"NIfTI file {path} stores RGB voxels (datatype code 128: 3 uint8 channels R, G, B" \
           in message, message
    assert "one number per voxel" in message and "numpy.stack" in message, message
    assert "internal error" not in message
    gz = tmp_path / "rgb.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(UnsupportedFormatError, match="stores RGB voxels"):
        convert(str(gz), str(tmp_path / "out.zarr"))
    assert not (tmp_path / "out.zarr").exists()


def test_a_nifti_shorter_than_its_header_declares_is_refused_when_opened(tmp_path):
    """Was: `info` showed a 4000^3 volume of a 1.3 KB file and `validate` passed; only `run`
    failed."""
    path = tmp_path / "big_tiny.nii"
    path.write_bytes(header_only((4000, 4000, 4000)))
    expected = (f"NIfTI file {path} is truncated or corrupt: it holds 1,352 bytes, but its header "
                "declares 128,000,000,000 bytes")
    info = geoseg_cli("info", str(path))
    assert info.returncode == 2 and expected in said(info), said(info)
    assert RE_GET in said(info)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input": {"url": str(path)}, "model": {"method": "otsu"},
                               "output": {"url": str(tmp_path / "mask.zarr")}}))
    checked = geoseg_cli("validate", str(job))
    assert checked.returncode == 2 and expected in said(checked), said(checked)
    assert not (tmp_path / "mask.zarr").exists()


def test_a_nifti_cut_short_is_refused_and_a_whole_one_opens(tmp_path):
    data = np.arange(20 * 10 * 6, dtype=np.int16).reshape(20, 10, 6)
    whole = write_nifti(tmp_path / "whole.nii", data, np.eye(4))
    assert open_source(str(whole)).shape == (1, 6, 10, 20)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(whole.read_bytes()[:-1])
    with pytest.raises(CorruptInputError, match=r"holds 2,751 bytes, but its header declares "
                       r"2,752 bytes \(voxels from byte 352 on, data shape \(20, 10, 6\) of int16"):
        open_source(str(cut))


def test_gzip_data_named_nii_says_to_rename_it(tmp_path):
    """Was: 'not a format geoseg reads ... Convert other formats to GeoTIFF or Zarr'."""
    path = tmp_path / "fakegz.nii"
    path.write_bytes(good_gz(tmp_path))
    result = geoseg_cli("info", str(path))
    message = said(result)
    assert result.returncode == 2, message
    assert f"{path} holds gzip-compressed data (it starts with the gzip magic bytes 1f 8b)" \
           in message, message
    assert "Rename it to end in .nii.gz" in message and "not a format" not in message, message
    assert convert(str(path), str(tmp_path / "out.zarr")).shape == (1, 30, 40, 40)


def test_a_header_declaring_huge_planes_is_read_within_the_window_budget(tmp_path):
    """4000^3 int16 declared in a 1 KB .nii.gz: 128 planes at once (the default chunk) would
    ask for 4 GB as read; slabs held to GEOSEG_MAX_WINDOW_BYTES fit under a 4 GB address space
    and the short stream is refused as such (was: MemoryError, an internal error)."""
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header_only((4000, 4000, 4000))))
    result = geoseg_cli("convert", str(path), str(tmp_path / "out.zarr"),
                        prefix=["prlimit", "--as=4000000000"], timeout=120)
    assert result.returncode == 2, said(result)
    assert "is truncated or corrupt: it decompresses to 1,352 bytes" in said(result)


def test_slabs_over_the_window_budget_are_read_in_fewer_planes_with_the_same_result(
        tmp_path, monkeypatch):
    data = np.random.default_rng(1).integers(-500, 500, (40, 36, 30)).astype(np.int16)
    nii = write_nifti(tmp_path / "ct.nii", data, np.diag([1.0, 1.0, 2.0, 1.0]))
    gz = tmp_path / "ct.nii.gz"
    gz.write_bytes(gzip.compress(nii.read_bytes()))
    plane = 40 * 36 * (2 + 2)  # a plane as read (int16) and as written (int16)
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", str(3 * plane))  # 3 planes of the 16 a chunk has
    convert(str(gz), str(tmp_path / "out.zarr"), chunks=16)
    import zarr

    stored = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["raster"][0]
    np.testing.assert_array_equal(stored, np.transpose(data, (2, 1, 0)))  # (z, y, x)
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", str(plane - 1))
    from geoseg.errors import BudgetError

    with pytest.raises(BudgetError, match=r"has planes of 40 x 36 voxels, 5.6 KiB \(5760 bytes\) "
                                          r"each as read and converted to int16; the limit is 5759"):
        convert(str(gz), str(tmp_path / "out2.zarr"), chunks=16)


@pytest.mark.parametrize("shape", [(8, 6, 4, 1, 3), (8, 6)])
@pytest.mark.parametrize("gz", [False, True])
def test_a_volume_of_other_dimensions_is_refused_with_a_line_that_fixes_it(tmp_path, shape, gz):
    """The nibabel line the message gives makes a file geoseg reads: the 5D file's trailing
    axes become bands in file order, the 2D image one slice."""
    import re
    import subprocess
    import sys

    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    name = "odd.nii.gz" if gz else "odd.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / name))
    result = geoseg_cli("convert" if gz else "info", str(tmp_path / name),
                        *([str(tmp_path / "o.zarr")] if gz else []))
    assert result.returncode == 2 and f"has data shape {shape}; geoseg reads 3D" in said(result)
    line = re.search(r"`(img = .*?)`", said(result)).group(1)
    ran = subprocess.run([sys.executable, "-c", f"import nibabel, numpy; {line}"], cwd=tmp_path,
                         capture_output=True, text=True, check=False)  # as a user would
    assert ran.returncode == 0, ran.stderr
    volume = open_source(str(tmp_path / "volume.nii"))
    fixed = data.reshape((*shape[:3], -1) if len(shape) > 3 else (*shape, 1, 1), order="F")
    expected = np.transpose(fixed, (3, 2, 1, 0))  # (t, k, j, i): bands, z, y, x
    assert volume.shape == expected.shape
    np.testing.assert_array_equal(volume.read(tuple(slice(0, n) for n in expected.shape[1:])), expected)
