"""Single files written whole or not at all: a failure part-way (a full disk, a crash) leaves
the file that was there, or none, and never a truncated one; and places that cannot take a
file are refused before any work."""

from __future__ import annotations

import os

import fsspec
import pytest

from geoseg.errors import OutputLocationError, StorageAccessError
from geoseg.io.files import check_creatable, write_whole


class Broken(Exception):
    pass


def half_then_fail(file) -> None:
    file.write(b"half of a new file")
    raise Broken


@pytest.mark.parametrize("url", ["{tmp}/report.html", "memory://whole/report.html"])
def test_a_write_that_fails_part_way_leaves_the_old_file_whole(tmp_path, url):
    url = url.format(tmp=tmp_path)
    write_whole(url, "old report")
    with pytest.raises(Broken):
        write_whole(url, half_then_fail)
    fs, path = fsspec.core.url_to_fs(url)
    assert fs.cat_file(path) == b"old report"
    assert fs.ls(os.path.dirname(path), detail=False) == [path]  # nothing staged left beside


def test_a_write_that_fails_part_way_leaves_no_file_where_there_was_none(tmp_path):
    with pytest.raises(Broken):
        write_whole(str(tmp_path / "new" / "table.parquet"), half_then_fail)
    assert os.listdir(tmp_path / "new") == []


def test_text_bytes_and_writers_are_written_and_folders_made(tmp_path):
    write_whole(str(tmp_path / "a" / "b.txt"), "é")
    write_whole(str(tmp_path / "a" / "c.bin"), b"\x00\x01")
    write_whole(str(tmp_path / "a" / "d.bin"), lambda f: f.write(b"by a writer"))
    assert (tmp_path / "a" / "b.txt").read_text(encoding="utf-8") == "é"
    assert (tmp_path / "a" / "c.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a" / "d.bin").read_bytes() == b"by a writer"


def test_an_exclusive_write_never_replaces_a_file(tmp_path):
    (tmp_path / "run.json").write_text("another run's record")
    with pytest.raises(FileExistsError):
        write_whole(str(tmp_path / "run.json"), "mine", exclusive=True)
    assert (tmp_path / "run.json").read_text() == "another run's record"
    assert os.listdir(tmp_path) == ["run.json"]


def test_a_path_under_a_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputLocationError, match=r"output.model: Cannot write .*afile/deeper/"
                                                  r"m.safetensors: .*afile is a file, not a "
                                                  r"folder"):
        check_creatable(str(tmp_path / "afile" / "deeper" / "m.safetensors"), "output.model")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_folder_that_takes_no_new_files_is_refused():
    with pytest.raises((OutputLocationError, StorageAccessError), match="output.model: "):
        check_creatable("/proc/self/m.safetensors", "output.model")


def test_a_path_whose_folders_do_not_exist_yet_is_accepted(tmp_path):
    check_creatable(str(tmp_path / "a" / "b" / "m.safetensors"), "output.model")
    check_creatable("memory://bucket/m.safetensors", "output.model")
