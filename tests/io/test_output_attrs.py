"""An output's ``geoseg`` attribute edited, or written by another tool: every command that reads
it back refuses it naming the key, what it holds and what geoseg writes there, instead of an
internal error wherever the value is first used."""

from __future__ import annotations

import shutil

import pytest
import zarr

from tests.cli import geoseg, threshold_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return threshold_run(tmp_path_factory.mktemp("attrs"), "attrs", size=128, chunk=64, seed=2)


EDITS = {  # key: (a value geoseg never writes there, what the message says it expected)
    "class_names": (5, "a list of class names (strings)"),
    "class_colors": ("red", "a list of [r, g, b] colours"),
    "nodata_class": ("x", "a class id"),
    "task_region": ([1, 1], "whole numbers of its chunks [64, 64]"),
    "provenance": (5, "an object"),
    "instances": ("x", "an object"),
}


@pytest.mark.parametrize("key", sorted(EDITS))
def test_a_changed_attribute_is_refused_by_name_by_every_command(tmp_path, finished, key):
    out = tmp_path / "out.zarr"
    shutil.copytree(finished, out)
    group = zarr.open_group(str(out), mode="r+")
    value, expected = EDITS[key]
    group.attrs["geoseg"] = {**group.attrs["geoseg"], key: value}

    for args in (("status", str(out)), ("verify", str(out)),
                 ("export", str(out), "--cog", str(tmp_path / "x.tif")),
                 ("eval", str(out), str(finished))):
        done = geoseg(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {out}: its 'geoseg' attribute has {key} = ")
        assert f"expected {expected}" in line and "--overwrite" in line and "internal" not in line


def test_an_attribute_that_is_not_an_object_is_refused(tmp_path, finished):
    out = tmp_path / "out.zarr"
    shutil.copytree(finished, out)
    zarr.open_group(str(out), mode="r+").attrs["geoseg"] = [1, 2, 3]
    done = geoseg("status", str(out))
    assert done.returncode == 2 and "its 'geoseg' attribute is an array [1, 2, 3], expected an " \
                                    "object" in done.stderr, done.stderr


def test_group_metadata_nested_too_deeply_is_refused_by_every_command(tmp_path, finished):
    """zarr decodes it with Python's json: an internal RecursionError for export, "not written
    by geoseg" or "no run record" for others. In a process of its own: at the recursion limit
    whatever the garbage collector runs fails too."""
    import json

    out = tmp_path / "out.zarr"
    shutil.copytree(finished, out)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["deep"] = "@@"
    (out / "zarr.json").write_text(json.dumps(meta).replace('"@@"', "[" * 200_000 + "]" * 200_000))
    for args in (("status", str(out)), ("export", str(out), "--cog", str(tmp_path / "x.tif")),
                 ("report", str(out))):
        done = geoseg(*args, own_process=True)
        assert done.returncode == 2, (args, done.stderr)
        assert f"error: {out}: its group metadata (zarr.json, .zattrs or .zgroup) nests arrays " \
               "or objects too deeply to read" in done.stderr and "internal" not in done.stderr
