"""Export and convert destinations: never inside the output store an export reads, and places
that take no files are refused in one line before any work (exit 2, never an internal error)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import scipy.stats

from geoseg.errors import CorruptInputError, ExportError, GeosegError, OutputLocationError
from geoseg.io import convert
from geoseg.io.exports import export_cog, pyramid
from geoseg.io.integrity import damage
from geoseg.io.output import OutputTarget
from tests.cli import geoseg as geoseg_cli
from tests.conftest import textured_image, write_geotiff
from tests.io.test_export_cog import finished_output, overview_values

UNWRITABLE = Path("/proc")  # a folder no process may create files in, root included


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("inside", ["classes/x.tif", "x.tif", ""])
def test_a_cog_inside_the_store_it_reads_is_refused(tmp_path, inside):
    out = finished_output(tmp_path / "out.zarr", np.ones((40, 40), np.uint8), ["a", "b"])
    before = tree(tmp_path)
    dest = f"{out}/{inside}" if inside else out
    result = geoseg_cli("export", out, "--cog", dest, "--overwrite")
    assert result.returncode == 2, result.stderr
    assert "inside the output store" in result.stderr and "internal error" not in result.stderr
    beside = str(tmp_path / ("x.tif" if inside.endswith("x.tif") else "out.tif"))
    assert f"such as {beside} beside it" in result.stderr
    assert tree(tmp_path) == before  # nothing written in the store, nothing staged
    with pytest.raises(ExportError, match="inside the output store"):
        export_cog(out, str(tmp_path), overwrite=True)  # a folder holding the store
    assert tree(tmp_path) == before


def test_a_bad_label_name_is_refused_before_the_cog_is_written(tmp_path):
    """The COG was written, then --name refused: a half-done export for a typo."""
    out = finished_output(tmp_path / "out.zarr", np.ones((40, 40), np.uint8), ["a", "b"])
    image = tmp_path / "image.zarr"
    image.mkdir()
    before = tree(tmp_path)
    result = geoseg_cli("export", out, "--cog", str(tmp_path / "x.tif"), "--ome-zarr", str(image),
                        "--name", "../../x")
    assert result.returncode == 2 and "label name '../../x': expected one path segment" in \
        result.stderr, result.stderr
    assert tree(tmp_path) == before


@pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs /proc")
def test_unwritable_export_and_convert_destinations_are_refused_in_one_line(tmp_path):
    out = finished_output(tmp_path / "out.zarr", np.ones((40, 40), np.uint8), ["a", "b"])
    tif = write_geotiff(tmp_path / "ms.tif", textured_image(32, 32, seed=1))
    for args in (("export", out, "--cog", str(UNWRITABLE / "x.tif")),
                 ("convert", str(tif), str(UNWRITABLE / "x.zarr"))):
        result = geoseg_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "internal error" not in result.stderr and "Nothing was written" in result.stderr
        assert f"Cannot write {UNWRITABLE}/x." in result.stderr
    with pytest.raises(OutputLocationError, match="does not take new files"):
        convert.convert(str(tif), str(UNWRITABLE / "x.zarr"))


def block_modes(classes: np.ndarray, factor: int, nodata: int) -> np.ndarray:
    """scipy's mode of each ``factor`` x ``factor`` block, no-data left out (smallest on ties)."""
    rows, cols = -(-classes.shape[0] // factor), -(-classes.shape[1] // factor)
    modes = np.full((rows, cols), nodata, classes.dtype)
    for i in range(rows):
        for j in range(cols):
            block = classes[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].ravel()
            block = block[block != nodata]
            if block.size:
                modes[i, j] = scipy.stats.mode(block).mode
    return modes


@pytest.mark.parametrize("window", [None, 16])  # 16: blocks of 8 x 8 counted strip by strip
def test_mode_overviews_are_the_mode_of_their_full_resolution_block(tmp_path, monkeypatch, window):
    if window:
        monkeypatch.setattr(pyramid, "MODE_WINDOW", window)
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 4, (70, 53)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.2] = 255
    classes[:16, :16] = 255  # whole blocks of no data stay no data
    out = finished_output(tmp_path / "out.zarr", classes, ["a", "b", "c", "d"])
    dest = str(tmp_path / "mask.tif")
    export_cog(out, dest, blocksize=16)
    with rasterio.open(dest) as ds:
        assert ds.overviews(1) == [2, 4, 8] and ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(ds.read(1), classes)
    for factor, level in zip((2, 4, 8), overview_values(dest), strict=True):
        np.testing.assert_array_equal(level, block_modes(classes, factor, 255), err_msg=str(factor))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "out.zarr"]  # no scratch


@pytest.mark.parametrize("name, content, said", [
    ("empty.tif", b"", "the file is empty (0 bytes)"),
    ("text.tif", b"hello, not a raster\n", "its name says TIFF, but it is not a TIFF"),
])
def test_an_empty_or_text_file_named_tif_is_called_corrupt(tmp_path, name, content, said):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorruptInputError, match=re.escape(said)):
        convert.convert(str(path), str(tmp_path / "x.zarr"))
    result = geoseg_cli("convert", str(path), str(tmp_path / "x.zarr"))
    assert result.returncode == 2 and said in result.stderr
    assert "Convert other formats" not in result.stderr


def test_a_truncated_tiff_prints_one_line(tmp_path):
    tif = write_geotiff(tmp_path / "ms.tif", textured_image(32, 32, seed=1))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(Path(tif).read_bytes()[:8])
    result = geoseg_cli("convert", str(cut), str(tmp_path / "x.zarr"), own_process=True)
    assert result.returncode == 2, result.stderr
    assert "tifffile" not in result.stderr and "invalid offset" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_damaged_output_advice_is_a_plain_rerun(tmp_path):
    out = finished_output(tmp_path / "out.zarr", np.ones((40, 40), np.uint8), ["a", "b"])
    target = OutputTarget(out, {})
    attrs = dict(target.attrs())
    attrs["n_chunks"] = 99  # the run planned more regions than the manifest records
    message = damage(target, attrs, "nothing was exported")
    assert message is not None and "run its job again (the same spec, without --overwrite)" in message
    assert "with --overwrite" not in message.replace("without --overwrite", "")
    assert isinstance(ExportError(message), GeosegError)


@pytest.mark.parametrize("asked, refused", [
    ({"cog": "part.tif", "nifti": "part.nii"}, "NIfTI takes (z, y, x) ones"),
    ({"cog": "part.tif", "ome_zarr": "missing.ome.zarr"}, "No OME-Zarr image at"),
    ({"cog": "part.tif", "nifti": "part.nii", "resampling": "average"}, "not allowed for class"),
])
def test_every_export_asked_for_is_checked_before_any_is_written(tmp_path, asked, refused):
    """--cog with --nifti of an image wrote the COG, then failed on the NIfTI."""
    from geoseg.io.exports import check_exports

    classes = np.zeros((40, 40), np.uint8)
    out = finished_output(tmp_path / "out.zarr", classes, ["a"])
    paths = {k: (str(tmp_path / v) if k in ("cog", "nifti", "ome_zarr") else v)
             for k, v in asked.items()}
    with pytest.raises(GeosegError, match=re.escape(refused)):
        check_exports(out, **paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    check_exports(out, cog=paths["cog"])  # the COG alone would be written


def test_the_export_command_writes_nothing_when_one_of_its_exports_is_refused(tmp_path):
    """It wrote part.tif, then failed on the NIfTI of a 2-D output, exit 2 with the COG left."""
    out = finished_output(tmp_path / "out.zarr", np.zeros((40, 40), np.uint8), ["a"])
    done = geoseg_cli("export", out, "--cog", str(tmp_path / "part.tif"), "--nifti",
                      str(tmp_path / "part.nii"))
    assert done.returncode == 2 and "NIfTI takes (z, y, x) ones" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
