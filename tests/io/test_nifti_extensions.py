"""NIfTI files with header extensions: read as nibabel reads them, within a bounded read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.convert import convert
from geoseg.io.exports import export_nifti
from geoseg.io.nifti import MAX_HEADER_BYTES
from geoseg.io.readers import open_source, source_to_dataarray

SPACING = np.diag([0.7, 0.7, 2.5, 1])


def volume() -> np.ndarray:
    data = np.zeros((32, 24, 8), np.int16)
    data[8:20, 6:18, 2:6] = 700
    return data


def with_extension(path: Path, n_bytes: int, klass=nib.Nifti1Image) -> Path:
    """``volume()`` saved by nibabel with a comment extension of ``n_bytes``."""
    image = klass(volume(), SPACING)
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * n_bytes))
    nib.save(image, path)
    return path


def read_back(url: str) -> np.ndarray:
    """The volume geoseg reads, in nibabel's (i, j, k) order."""
    source = open_source(url)
    return np.transpose(np.asarray(source_to_dataarray(source).data[0]), (2, 1, 0))


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("n_bytes", [100, 200, 5000, 300_000])
def test_a_nifti_with_extensions_is_read_as_nibabel_reads_it(tmp_path, klass, n_bytes):
    path = with_extension(tmp_path / "x.nii", n_bytes, klass)
    expected = np.asarray(nib.load(path).dataobj)
    np.testing.assert_array_equal(read_back(str(path)), expected)
    assert open_source(str(path)).shape == (1, 8, 24, 32)


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_a_gzipped_nifti_with_extensions_converts(tmp_path, klass):
    path = with_extension(tmp_path / "x.nii.gz", 200, klass)
    convert(str(path), str(tmp_path / "x.zarr"))
    np.testing.assert_array_equal(read_back(str(tmp_path / "x.zarr")),
                                  np.asarray(nib.load(path).dataobj))


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory) -> tuple[Path, list[str]]:
    """A threshold job's output of 12 long class names on an anisotropic NIfTI volume: the
    NIfTI export's JSON extension of class names runs far past 188 bytes."""
    from distributed import Client, LocalCluster

    from geoseg.jobs import JobSpec, run

    folder = tmp_path_factory.mktemp("many")
    scan = folder / "scan.nii"
    ramp = np.arange(32 * 24 * 8, dtype=np.int16).reshape(32, 24, 8) % 1200
    nib.save(nib.Nifti1Image(ramp, SPACING), scan)
    names = [f"structure number {i} of the atlas" for i in range(12)]
    spec = {"input": {"url": str(scan)},
            "model": {"method": "threshold",
                      "params": {"thresholds": list(range(100, 1200, 100)), "class_names": names}},
            "output": {"url": str(folder / "out.zarr"), "chunks": [8, 16, 16]},
            "runs_dir": str(folder / "runs")}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        run(JobSpec.from_dict(spec), client=client)
    return folder, names


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_an_export_of_many_classes_reads_back(many_classes, tmp_path, suffix):
    folder, names = many_classes
    dest = export_nifti(str(folder / "out.zarr"), str(tmp_path / f"mask{suffix}"))
    extension = nib.load(dest).header.extensions[0].get_content()
    assert len(extension) > 188 and json.loads(extension)["class_names"] == names
    if suffix == ".nii.gz":
        convert(dest, str(tmp_path / "back.zarr"))
        dest = str(tmp_path / "back.zarr")
    exported = np.asarray(nib.load(tmp_path / f"mask{suffix}").dataobj)
    np.testing.assert_array_equal(read_back(dest), exported)
    assert read_back(dest).max() == 11


def set_vox_offset(path: Path, offset: int) -> None:
    """Rewrite a file's vox_offset: a NIfTI-1's float32 at byte 108, a NIfTI-2's int64 at 168."""
    raw = bytearray(path.read_bytes())
    if raw[4:8] == b"n+2\x00":
        raw[168:176] = np.int64(offset).tobytes()
    else:
        raw[108:112] = np.float32(offset).tobytes()
    path.write_bytes(bytes(raw))


BOTH = pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image], ids=["nifti1", "nifti2"])


@BOTH
def test_extensions_declared_past_the_limit_are_refused_before_any_read(tmp_path, monkeypatch, klass):
    path = with_extension(tmp_path / "x.nii", 200, klass)
    set_vox_offset(path, 2**33)
    with path.open("r+b") as f:  # a sparse file as long as its header says: nothing is short
        f.truncate(2**33 + volume().nbytes)
    asked = []
    real = LocalFileSystem.cat_file

    def counting(self, path, start=None, end=None, **kwargs):
        asked.append((start or 0, end))
        return real(self, path, start=start, end=end, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "cat_file", counting)
    with pytest.raises(UnsupportedFormatError) as caught:
        open_source(str(path))
    message = str(caught.value)
    assert "8,589,934,592" in message and f"{MAX_HEADER_BYTES:,}" in message
    assert "extensions.clear()" in message
    assert all(end is not None and end - start <= 544 for start, end in asked)


@BOTH
def test_gzipped_extensions_declared_past_the_limit_are_refused(tmp_path, klass):
    path = with_extension(tmp_path / "x.nii", 200, klass)
    set_vox_offset(path, 2**33)
    gz = tmp_path / "x.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(UnsupportedFormatError, match="header extensions up to byte 8,589,934,592"):
        convert(str(gz), str(tmp_path / "x.zarr"))
    assert not (tmp_path / "x.zarr").exists()


@BOTH
def test_a_nifti_cut_within_its_extensions_is_refused_as_truncated(tmp_path, klass):
    path = with_extension(tmp_path / "x.nii", 5000, klass)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CorruptInputError, match=r"truncated: it holds 2,000 bytes.*up to byte"):
        open_source(str(path))


@BOTH
def test_a_gzipped_nifti_cut_within_its_extensions_is_refused_as_truncated(tmp_path, klass):
    path = with_extension(tmp_path / "x.nii", 5000, klass)
    gz = tmp_path / "x.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()[:2000]))
    with pytest.raises(CorruptInputError, match="truncated"):
        convert(str(gz), str(tmp_path / "x.zarr"))


@BOTH
def test_extensions_that_run_past_the_voxel_offset_are_refused_as_corrupt(tmp_path, klass):
    path = with_extension(tmp_path / "x.nii", 5000, klass)
    set_vox_offset(path, 1024)
    with pytest.raises(CorruptInputError, match="do not fit in the 1,024 bytes"):
        open_source(str(path))


@BOTH
def test_a_gzipped_nifti_whose_voxels_stop_short_is_refused_as_truncated(tmp_path, klass):
    path = tmp_path / "x.nii"
    nib.save(klass(volume(), SPACING), path)
    gz = tmp_path / "x.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()[:-100]))
    with pytest.raises(CorruptInputError, match="truncated or corrupt: it decompresses to"):
        convert(str(gz), str(tmp_path / "x.zarr"))
    assert not (tmp_path / "x.zarr").exists()
