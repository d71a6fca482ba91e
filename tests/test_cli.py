"""The geoseg command: exit codes, messages, nothing written on error."""

from __future__ import annotations

import sys

import pytest
import yaml

from tests.cli import geoseg
from tests.conftest import job_dict, textured_image, write_zarr


@pytest.fixture()
def inputs(tmp_path, model_path):
    src = write_zarr(tmp_path / "in.zarr", textured_image(70, 60))
    return tmp_path, src, model_path


def write_job(tmp_path, data) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_validate_and_info(inputs):
    tmp_path, src, model = inputs
    job = write_job(tmp_path, job_dict(src, model, str(tmp_path / "out.zarr")))
    result = geoseg("validate", job)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert said.startswith("ok:") and "halo (56, 56)" in said
    assert not (tmp_path / "out.zarr").exists()
    info = geoseg("info", src)
    assert info.returncode == 0 and "(3, 70, 60)" in info.stdout and "uint8" in info.stdout


def test_info_on_a_volume_names_its_axes_and_shows_its_voxel_affine(tmp_path):
    nib = pytest.importorskip("nibabel")
    import numpy as np

    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    affine[:3, 3] = [90, -100, -30]
    nib.save(nib.Nifti1Image(np.zeros((40, 48, 36), np.uint8), affine), str(tmp_path / "v.nii"))
    info = geoseg("info", str(tmp_path / "v.nii"))
    lines = [" ".join(line.split()) for line in info.stdout.splitlines()]
    assert info.returncode == 0, info.stderr
    assert "shape (band, z, y, x) (1, 36, 48, 40)" in lines  # NIfTI (i, j, k) read as (z, y, x)
    assert "voxel affine 0 0 0.8 90 | 0 0.9 0 -100 | 2 0 0 -30" in lines  # nibabel's, columns z, y, x
    assert "spacing (z, y, x) (2.0, 0.9, 0.8)" in lines and not any("crs" in x for x in lines)
    header = nib.load(str(tmp_path / "v.nii")).header  # nibabel's codes for an affine it was given
    codes = int(header["qform_code"]), int(header["sform_code"])
    named = ", ".join(f"{c} {nib.nifti1.xform_codes.label[c]}" for c in codes)
    assert f"NIfTI codes (qform, sform) {named}" in lines and codes != (0, 0)


@pytest.mark.parametrize("case, message", [
    ("missing-input", "input.url: No raster at"),
    ("unsupported", "not a format geoseg reads"),
    ("bands", "expects 3 band(s)"),
    ("bad-key", "output.chunk: unknown key"),
    ("exists", "already exists and is not a geoseg output; nothing was written"),
    ("missing-model", "model.path: No model file"),
])
def test_bad_input_exits_nonzero_with_a_clear_message_and_writes_nothing(inputs, case, message):
    tmp_path, src, model = inputs
    out = tmp_path / "out.zarr"
    data = job_dict(src, model, str(out))
    if case == "missing-input":
        data["input"]["url"] = str(tmp_path / "nope.zarr")
    elif case == "unsupported":
        (tmp_path / "scene.zip").write_bytes(b"PK\x03\x04" + b"\0" * 64)
        data["input"]["url"] = str(tmp_path / "scene.zip")
    elif case == "bands":
        data["input"]["url"] = write_zarr(tmp_path / "two.zarr", textured_image(30, 30, bands=2))
    elif case == "bad-key":
        data["output"]["chunk"] = [1, 2]
    elif case == "exists":
        out.mkdir()
        (out / "zarr.json").write_text("{}")
    elif case == "missing-model":
        data["model"]["path"] = str(tmp_path / "nope.safetensors")
    job = write_job(tmp_path, data)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    result = geoseg("run", job)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert "" not in result.stderr.splitlines(), result.stderr  # no progress bar's empty line
    assert sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv, said", [
    (["geoseg", "run", "job.yaml"], "interrupted; a rerun resumes from the chunks already written"),
    (["geoseg", "--log-format", "text", "train", "t.yaml"],
     "interrupted; a rerun resumes from the run's last checkpoint"),
    (["geoseg", "--debug", "sweep", "s.yaml"], "interrupted; a rerun skips the trials done"),
    (["geoseg", "convert", "a.nii.gz", "b.zarr"],
     "interrupted; the part-written output was removed; a rerun converts from the start"),
    (["geoseg", "export", "o.zarr", "--cog", "a.tif"], "interrupted; run the command again to finish it"),
])
def test_an_interrupt_says_what_a_rerun_of_that_command_picks_up(monkeypatch, capsys, argv, said):
    """Training has checkpoints, not chunks: the line after Ctrl-C names what each command resumes."""
    from geoseg import cli

    monkeypatch.setattr(sys, "argv", argv)
    cli._show_error(KeyboardInterrupt())
    assert said in " ".join(capsys.readouterr().err.split())


NAMES_LIKE_MARKUP = ("[/]", "[bold]red[/bold]", "scene[a]")


def test_names_from_files_print_as_they_are_not_as_markup(tmp_path):
    """Band names and class names come from the files: "[/]" ended `geoseg info` and `eval` with
    an internal error (rich read it as a closing tag), and "scene[a]" printed as "scene"."""
    import numpy as np
    import rasterio

    from tests.conftest import CRS, TRANSFORM

    profile = {"driver": "GTiff", "width": 64, "height": 64, "dtype": "uint8", "crs": CRS,
               "transform": TRANSFORM}
    bands, labels = tmp_path / "bands.tif", tmp_path / "labels.tif"
    with rasterio.open(bands, "w", count=3, **profile) as ds:
        ds.write(textured_image(64, 64))
        ds.descriptions = NAMES_LIKE_MARKUP
    with rasterio.open(labels, "w", count=1, **profile) as ds:
        ds.write((np.arange(64 * 64).reshape(1, 64, 64) % 3).astype("uint8"))
        ds.update_tags(CLASS_NAMES='["[/]", "[bold]red[/bold]", "scene[a]"]')

    for args in (("info", str(bands)), ("eval", str(labels), str(labels))):
        done = geoseg(*args)
        assert done.returncode == 0, done.stderr
        assert all(name in done.stdout for name in NAMES_LIKE_MARKUP), done.stdout


@pytest.mark.parametrize("tag", ["CLASS_\u00b2", "CLASS_" + "1" * 5000])
def test_a_class_tag_whose_id_int_cannot_read_is_not_a_class_name(tmp_path, tag):
    """"²" passes str.isdigit() and 5,000 digits pass it too; int() refused both, and `eval`
    ended with an internal error."""
    import numpy as np
    import rasterio

    from tests.conftest import CRS, TRANSFORM

    labels = tmp_path / "labels.tif"
    with rasterio.open(labels, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8",
                       crs=CRS, transform=TRANSFORM) as ds:
        ds.write((np.arange(32 * 32).reshape(1, 32, 32) % 2).astype("uint8"))
        ds.update_tags(1, CLASS_0="sea", CLASS_1="land", **{tag: "odd"})
    done = geoseg("eval", str(labels), str(labels))
    assert done.returncode == 0, done.stderr
    assert "sea" in done.stdout and "land" in done.stdout and "odd" not in done.stdout


def test_a_full_disk_that_escaped_naming_no_file_is_a_storage_error_not_an_internal_one():
    import errno

    from geoseg.cli import _typed, exit_code
    from geoseg.errors import StorageIOError

    typed = _typed(OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(typed, StorageIOError) and exit_code(typed) == 1
    assert "No space left on device" in str(typed) and "free space where this command writes" in str(typed)
    other = ValueError("x")
    assert _typed(other) is other


def test_an_escaped_permission_error_is_not_called_a_write():
    """An OSError naming a file escaped as "Writing X failed ... not writable", even when a read
    met it."""
    import errno

    from geoseg.cli import _typed

    read = str(_typed(PermissionError(errno.EACCES, "Permission denied", "/data/in.tif")))
    assert read.startswith("Accessing /data/in.tif failed: permission denied") and "writable" not in read
    full = str(_typed(OSError(errno.ENOSPC, "No space left on device", "/data/out.tif")))
    assert full.startswith("Writing /data/out.tif failed: the disk is full")
