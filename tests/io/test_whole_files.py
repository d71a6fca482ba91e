"""Single files written whole or not at all: a failure part-way (a full disk, a crash) leaves
the file that was there, or none, and never a truncated one; and places that cannot take a
file are refused before any work."""

from __future__ import annotations

import os
import stat

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


def test_a_link_is_written_through_and_a_replaced_file_keeps_its_permissions(tmp_path):
    """Renaming over the destination turned a link into a file (its target never updated) and
    gave a private file the default permissions."""
    (tmp_path / "v3.safetensors").write_text("old")
    (tmp_path / "current.safetensors").symlink_to("v3.safetensors")
    write_whole(str(tmp_path / "current.safetensors"), "new")
    assert (tmp_path / "current.safetensors").is_symlink()
    assert (tmp_path / "v3.safetensors").read_text() == "new"
    private = tmp_path / "scores.json"
    private.write_text("old")
    private.chmod(0o600)
    write_whole(str(private), "new")
    assert private.read_text() == "new" and stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_folder_or_a_link_to_one_where_a_file_goes_is_refused_before_any_work(tmp_path):
    """A training run's output.model naming a folder, or a link to one, trained to the end and
    only then failed to write the model."""
    from geoseg.errors import OutputExistsError

    (tmp_path / "models").mkdir()
    (tmp_path / "current").symlink_to(tmp_path / "models")
    with pytest.raises(OutputExistsError, match=r"output.model: Cannot write .*models: it is a "
                                                r"folder; expected the path of a file"):
        check_creatable(str(tmp_path / "models"), "output.model")
    with pytest.raises(OutputExistsError, match=r"it is a folder \(a link to .*models\)"):
        check_creatable(str(tmp_path / "current"), "output.model")
    check_creatable(str(tmp_path / "current"), "--out", store=True)  # a Zarr store is a folder


def test_a_folder_behind_a_dangling_link_is_refused_before_any_work(tmp_path):
    (tmp_path / "models").symlink_to(tmp_path / "unmounted" / "models")
    with pytest.raises(OutputLocationError, match=r"the link .*models leads to .*unmounted/models, "
                                                  r"but .*unmounted/models does not exist"):
        check_creatable(str(tmp_path / "models" / "m.safetensors"), "output.model")


def test_remote_writes_use_no_local_scratch_space(tmp_path, monkeypatch):
    """Staged in the local temporary folder, a remote write failed when that was full, and the
    error blamed the store."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no-such-folder"))
    write_whole("memory://whole/model.bin", b"\x00" * 1000)
    assert fsspec.filesystem("memory").cat_file("/whole/model.bin") == b"\x00" * 1000


def test_an_exclusive_write_onto_an_existing_file_says_it_exists(tmp_path):
    from geoseg.errors import OutputExistsError

    (tmp_path / "r.json").write_text("x")
    for url in (str(tmp_path / "r.json"), "memory://whole/r.json"):
        write_whole("memory://whole/r.json", "x")
        with pytest.raises(OutputExistsError, match="already exists; nothing was written"):
            write_whole(url, "y", exclusive=True)


def test_a_file_under_a_file_or_onto_a_folder_is_named_so(tmp_path):
    from geoseg.errors import GeosegError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(GeosegError, match="afile is a file, not a folder"):
        write_whole(str(tmp_path / "afile" / "q.png"), b"png")
    with pytest.raises(GeosegError, match="it is a folder; expected the path of a file"):
        write_whole(str(tmp_path), b"png")


@pytest.mark.parametrize("where", ["current.bin", "data/runs/r.json"])
def test_a_link_into_a_folder_that_does_not_exist_is_refused_and_nothing_made(tmp_path, where):
    """Writing through it made the unmounted share's folders on the local disk: a link as the
    file itself, or a link to a folder above it."""
    (tmp_path / "current.bin").symlink_to(tmp_path / "unmounted" / "share" / "model.bin")
    (tmp_path / "data").symlink_to(tmp_path / "unmounted" / "data")
    url = str(tmp_path / where)
    for act in (lambda: check_creatable(url, "output.model"), lambda: write_whole(url, b"x")):
        with pytest.raises(OutputLocationError, match=r"the link .* leads to .*unmounted/.*, but "
                                                      r".*unmounted/\w+ does not exist"):
            act()
    assert not (tmp_path / "unmounted").exists()


def test_a_link_through_a_file_is_named_so(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "link.bin").symlink_to(tmp_path / "afile" / "f.bin")
    with pytest.raises(OutputLocationError, match=r"afile is a file, not a folder"):
        write_whole(str(tmp_path / "link.bin"), b"x")
