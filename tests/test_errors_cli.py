"""Real faults through the geoseg command: one clean message naming the file and the chunk or
window, exit 2 for bad input and 1 for a failed run, no traceback, no Dask "Compute Failed" dump,
and no secret anywhere in what a job prints or stores. The secret tests run each command in a
process of its own, so that everything it prints is searched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import quote

import fsspec
import numpy as np
import pytest
import yaml

from tests.cli import geoseg
from tests.conftest import (
    alias_bomb,
    edited_model,
    job_dict,
    textured_image,
    write_geotiff,
    write_zarr,
)


def said(result: subprocess.CompletedProcess) -> str:
    return " ".join(result.stderr.split())


def assert_clean(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """Exit ``code``, one message holding every needle, and nothing a user should not see."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and "Compute Failed" not in output, output
    assert "internal error" not in output, output
    for needle in needles:
        assert needle in said(result), output


def run_job(tmp_path: Path, data: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data))
    return geoseg("run", str(job), *args, **kwargs)


@pytest.fixture()
def scene(tmp_path) -> Path:
    return Path(write_zarr(tmp_path / "scene.zarr", textured_image(130, 120)))


# --- inputs ----------------------------------------------------------------------------------


def test_a_truncated_geotiff_names_the_file_window_and_blocks(tmp_path, model_path):
    full = write_geotiff(tmp_path / "full.tif", textured_image(130, 120))
    data = Path(full).read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    result = run_job(tmp_path, job_dict(str(tmp_path / "cut.tif"), model_path,
                                        str(tmp_path / "out.zarr")))
    assert_clean(result, 2, f"cannot decode {tmp_path / 'cut.tif'}", "input window y ",
                 "block (y 1, x 0)", "corrupt or truncated")


@pytest.mark.parametrize("path", ["n" * 300 + ".zarr", "/".join(["folder"] * 700) + "/x.zarr"])
def test_a_path_too_long_for_the_file_system_is_named_not_an_internal_error(tmp_path, path):
    result = geoseg("info", str(tmp_path / path))
    assert_clean(result, 2, "failed: the path is too long for the file system",
                 "Give a shorter path")


def test_a_garbage_zarr_chunk_is_named_by_its_key(tmp_path, model_path, scene):
    (scene / "c" / "0" / "1" / "1").write_bytes(os.urandom(100))
    result = run_job(tmp_path, job_dict(str(scene), model_path, str(tmp_path / "out.zarr")))
    assert_clean(result, 2, f"cannot decode {scene}", "fail on their own: c/0/1/1",
                 "Zstd decompression error")


def test_a_broken_zarr_json_is_bad_metadata(tmp_path, model_path, scene):
    text = (scene / "zarr.json").read_text()
    (scene / "zarr.json").write_text(text[: len(text) // 2])
    result = run_job(tmp_path, job_dict(str(scene), model_path, str(tmp_path / "out.zarr")))
    assert_clean(result, 2, f"input.url: Cannot read the metadata of {scene}", "JSONDecodeError",
                 "re-write it (for Zarr: its zarr.json, .zarray or .zattrs)")
    assert not (tmp_path / "out.zarr").exists()


def test_a_tiff_whose_header_does_not_parse_gets_advice_for_a_tiff(tmp_path):
    bad = tmp_path / "scene.tif"
    bad.write_bytes(b"II*\x00\x08\x00\x00\x00" + b"\xff" * 100)  # its first directory is garbage
    result = geoseg("info", str(bad))
    assert_clean(result, 2, f"Cannot read the metadata of {bad}", "Re-download or re-write it, or "
                 "check the URL")
    assert "zarr" not in result.stderr.lower()


def test_a_zarr_json_nested_too_deeply_is_refused_before_it_is_decoded(tmp_path, model_path, scene):
    text = (scene / "zarr.json").read_text().rstrip()
    (scene / "zarr.json").write_text(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = run_job(tmp_path, job_dict(str(scene), model_path, str(tmp_path / "out.zarr")))
    assert_clean(result, 2, f"input.url: The metadata of {scene} (zarr.json) nests arrays or "
                 "objects 100001 levels deep; expected at most 256")
    assert "RecursionError" not in said(result) and not (tmp_path / "out.zarr").exists()


def _deep(document: Path) -> None:
    """``document``, a JSON object, with a member nested 100,000 levels deep."""
    text = document.read_text().rstrip()
    document.write_text(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")


@pytest.mark.parametrize(("zarr_format", "key"), [
    (3, "band/zarr.json"),  # an array of the group: zarr decoded it, past geoseg's checks
    (2, "band/.zattrs"),
    (2, ".zmetadata"),  # consolidated metadata
])
def test_deep_metadata_anywhere_in_a_zarr_group_is_refused_before_zarr_decodes_it(
        tmp_path, zarr_format, key):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
    group.create_array("band", shape=(40, 40), chunks=(20, 20), dtype="uint8")[...] = 1
    group["band"].attrs["units"] = "dn"
    if key == ".zmetadata":  # zarr then reads the group's documents from it alone
        zarr.consolidate_metadata(str(tmp_path / "g.zarr"))
    _deep(tmp_path / "g.zarr" / key)
    result = geoseg("info", str(tmp_path / "g.zarr"), "--variable", "band")
    assert_clean(result, 2, f"The metadata of {tmp_path / 'g.zarr'} ({key}) nests arrays or "
                 "objects 100001 levels deep; expected at most 256")
    assert "Recursion" not in result.stderr and "Exception ignored" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- model files -----------------------------------------------------------------------------


def truncated_safetensors(tmp_path: Path, model_path: str) -> Path:
    data = Path(model_path).read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    return path


def a_zip(tmp_path: Path, model_path: str) -> Path:
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(model_path, "random-unet.safetensors")
    return path


def fake_torchscript(tmp_path: Path, model_path: str) -> Path:
    path = tmp_path / "fake.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fake/code/__torch__.py", "def forward(self, x): return x\n")
        archive.writestr("fake/data.pkl", b"\x80\x02garbage")
    return path


@pytest.mark.parametrize("make, message", [
    (truncated_safetensors, "is truncated: its header declares"),
    (a_zip, "is a zip archive but not a model"),
    (fake_torchscript, "is a TorchScript archive; geoseg does not load TorchScript"),
])
def test_a_broken_model_file_is_named_before_any_compute(tmp_path, model_path, scene, make,
                                                         message):
    model = make(tmp_path, model_path)
    result = run_job(tmp_path, job_dict(str(scene), str(model), str(tmp_path / "out.zarr")))
    assert_clean(result, 2, "model.path: ", str(model), message)
    assert not (tmp_path / "out.zarr").exists()


def five_component_colour(description: str) -> str:
    return description.replace('"color": [', '"color": [1, 2, ', 1)


def nested_too_deep(description: str) -> str:
    return description[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize("edit, message", [
    (five_component_colour, "class 'class_0': received colour [1, 2, 128, 128, 128]; expected three"),
    (nested_too_deep, "its metadata nests arrays or objects 100001 levels deep; expected at most"),
])
def test_info_on_malformed_model_metadata_is_a_model_file_error_before_any_card(tmp_path, edit,
                                                                                message):
    model = edited_model(tmp_path, "bad.safetensors", edit)
    result = geoseg("info", model)
    assert_clean(result, 2, f"Model file {model}", message)
    assert "parameters" not in result.stdout  # no half-printed card


def test_a_truncated_safetensors_fails_on_the_worker_too(tmp_path, model_path):
    from geoseg.errors import ModelFileError
    from geoseg.models.modelfile import load_model

    with pytest.raises(ModelFileError, match=r"cut.safetensors is truncated or corrupt: its weights"):
        load_model(str(truncated_safetensors(tmp_path, model_path)))


def test_an_unreachable_s3_model_is_a_storage_error(tmp_path, scene):
    data = job_dict(str(scene), "s3://geoseg/model.safetensors", str(tmp_path / "out.zarr"))
    data["model"]["storage_options"] = {"key": "k", "secret": "s",
                                        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    result = run_job(tmp_path, data)
    assert_clean(result, 1, "model.path: Reading model file s3://geoseg/model.safetensors failed",
                 "Cannot connect to host 127.0.0.1:9")


# --- the job spec --------------------------------------------------------------------------


SPEC_COMMANDS = pytest.mark.parametrize("command", [("validate",), ("batch", "--dry-run"), ("train",)],
                                        ids=["job", "batch", "train"])  # every kind of spec


@SPEC_COMMANDS
def test_a_non_utf8_spec_names_the_byte_and_line(tmp_path, command):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"name: demo\ninput: {url: caf\xe9.zarr}\n")
    result = geoseg(*command, str(spec))
    assert_clean(result, 2, f"{spec} is not UTF-8 text: byte 0xe9 on line 2")


@SPEC_COMMANDS
def test_a_raster_given_as_a_spec_is_named_as_one(tmp_path, command):
    import rasterio

    tif = tmp_path / "scene.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    assert_clean(geoseg(*command, str(tif)), 2, f"{tif} is a TIFF (GeoTIFF) raster, not a ",
                 "is a YAML text file", "Name this file in the spec instead")


@SPEC_COMMANDS
def test_a_yaml_error_says_where_without_quoting_the_line(tmp_path, command):
    spec = tmp_path / "spec.yaml"
    spec.write_text("input: {url: x, storage_options: {secret: QUOTED-SECRET-9f2}\nmodel: [1\n")
    result = geoseg(*command, str(spec))
    assert_clean(result, 2, f"{spec} is not valid YAML: line ")
    assert "QUOTED-SECRET-9f2" not in result.stdout + result.stderr


@SPEC_COMMANDS
def test_a_control_character_in_yaml_is_named_with_its_line_and_column(tmp_path, command):
    """PyYAML's ReaderError came out as "is not valid YAML (ReaderError)", nothing more."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("input: {url: x, storage_options: {secret: QUOTED-SECRET-9f2}}\n"
                    "model: {path: \"m\x01.safetensors\"}\n")
    result = geoseg(*command, str(spec))
    assert_clean(result, 2, f"{spec} is not valid YAML: line 2, column 17: character U+0001",
                 "printable characters only")
    assert "QUOTED-SECRET-9f2" not in result.stdout + result.stderr


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(alias_bomb(6))
    result = geoseg("batch", "--dry-run", str(spec))
    assert_clean(result, 2, f"{spec}: received YAML of ", "values once its aliases (*name) are "
                 "expanded; expected at most 100,000")


def test_a_key_given_twice_is_refused(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("input: {url: in.zarr}\nmodel: {method: otsu}\noutput: {url: out.zarr}\n"
                    "output: {url: in.zarr}\n")
    result = geoseg("validate", str(spec))
    assert_clean(result, 2, f"{spec} is not valid YAML: line 4, column 1: received the key "
                 "'output' a second time (first on line 3)")


NOT_JSON = ("received a file that is not JSON (Expecting property name enclosed in double quotes "
            "at line 1, column 2)")


@pytest.mark.parametrize(("content", "said"), [
    ("{not json", NOT_JSON),
    ('{"miou": 0.5}', "received a JSON object without classes, per_class, confusion"),
    (None, "cannot read it (No such file or directory)"),
])
def test_report_refuses_scores_that_are_not_scores(tmp_path, content, said):
    scores = tmp_path / "scores.json"
    if content is not None:
        scores.write_text(content)
    result = geoseg("report", str(tmp_path / "run.json"), "--scores", str(scores))
    assert_clean(result, 2, f"--scores {scores}: {said}; expected the JSON file geoseg eval PRED "
                 "REF --json FILE writes.")


def test_report_refuses_a_fifo_as_its_record_or_scores_unread(tmp_path):
    """Both were read whole with no bound: a FIFO hung the command, /dev/zero filled memory."""
    import os

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    assert_clean(geoseg("report", str(fifo)), 2, f"The run record {fifo} is a FIFO (named pipe), "
                 "not a file: reading it would block or never end.")
    assert_clean(geoseg("report", str(tmp_path / "run.json"), "--scores", str(fifo)), 2,
                 f"--scores {fifo} is a FIFO (named pipe), not a file")


@pytest.mark.parametrize(("arrays", "said"), [
    ({}, "holds no arrays (it may still be being written, or be the wrong path)"),
    ({"x": (5,)}, "holds no raster-like array (2 to 4 dimensions, not a coordinate), only x (1-d)"),
])
def test_info_on_a_zarr_group_without_a_raster_says_so(tmp_path, arrays, said):
    import zarr

    group = zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    for name, shape in arrays.items():
        group.create_array(name, shape=shape, dtype="f8")
    result = geoseg("info", str(tmp_path / "empty.zarr"))
    assert_clean(result, 2, f"Zarr group {tmp_path / 'empty.zarr'} {said}; give the URL of the "
                 "Zarr array, or of the group, that holds the raster.")
    assert "input.variable" not in result.stderr


# --- outputs ---------------------------------------------------------------------------------


def mount_prefix(folder: Path, mount: str, after: str = "") -> list[str]:
    """``unshare -m sh -c 'MOUNT && exec "$@"'``: the command runs with ``folder`` mounted as asked,
    in a mount namespace of its own; skipped where namespaces cannot be made. ``after``: a shell
    command run in the namespace once the command ends (the mount is gone after), its exit
    status kept."""
    unshare = shutil.which("unshare")
    flags = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]
    if unshare is None or subprocess.run([unshare, *flags, "true"], check=False,
                                         capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare missing or not permitted)")
    then = f'{mount} && {{ "$@"; code=$?; {after}; exit $code; }}' if after else f'{mount} && exec "$@"'
    return [unshare, *flags, "sh", "-c", then, str(folder)]


def nearly_full(folder: Path, left_kb: int, after: str = "") -> list[str]:
    """A prefix under which ``folder`` is a 256 KiB file system with ``left_kb`` KiB free."""
    return mount_prefix(folder, 'mount -t tmpfs -o size=256k tmpfs "$0" && '
                                f'head -c {(256 - left_kb) * 1024} /dev/zero > "$0/fill"', after)


def read_only(folder: Path) -> list[str]:
    """A command prefix under which ``folder`` cannot be written: its permission bits, or for
    root (who ignores them) a read-only bind mount in a mount namespace of its own."""
    if os.geteuid() == 0:
        return mount_prefix(folder, 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"')
    folder.chmod(0o555)
    return []


def test_a_read_only_output_folder_is_refused_cleanly(tmp_path, model_path, scene):
    folder = tmp_path / "ro"
    folder.mkdir()
    prefix = read_only(folder)
    try:
        result = run_job(tmp_path, job_dict(str(scene), model_path, str(folder / "out.zarr")),
                         prefix=prefix)
    finally:
        folder.chmod(0o755)
    said = "its file system is mounted read-only" if os.geteuid() == 0 else "permission denied"
    assert_clean(result, 2, f"{folder}/out.zarr", f"failed: {said}", "read-only or not writable")


def test_a_full_disk_names_the_chunk_and_fails_the_run(tmp_path, model_path, scene):
    folder = tmp_path / "small"
    folder.mkdir()
    prefix = mount_prefix(folder, 'mount -t tmpfs -o size=96k tmpfs "$0"')
    data = job_dict(str(scene), model_path, str(folder / "out.zarr"), probabilities=True)
    result = run_job(tmp_path, data, prefix=prefix)
    assert_clean(result, 1, f"Writing {folder}/out.zarr failed: the disk is full",
                 "No space left on device", "A rerun resumes from the chunks already written.")
    assert re.search(r"output (\w+ chunk y \d+:\d+|manifest entry of chunk \d)", said(result))


def test_a_full_runs_folder_is_named_and_the_finished_output_kept(tmp_path, model_path, scene):
    """The run record is written last: a full runs folder fails the run naming that folder,
    and the output, every chunk computed, is complete, not left interrupted."""
    from geoseg.jobs.status import output_status

    runs = tmp_path / "runs"
    runs.mkdir()
    prefix = mount_prefix(runs, 'mount -t tmpfs -o size=8k tmpfs "$0" && '
                                '(head -c 65536 /dev/zero > "$0/fill" 2>/dev/null; true)')
    data = {**job_dict(str(scene), model_path, str(tmp_path / "out.zarr")), "runs_dir": str(runs)}
    result = run_job(tmp_path, data, prefix=prefix)
    assert_clean(result, 1, f"Writing the run record into runs folder {runs}/", "failed: the disk "
                 "is full", "A rerun resumes from the chunks already written")
    assert output_status(str(tmp_path / "out.zarr")).status == "complete"


def test_a_run_record_that_does_not_fit_leaves_no_truncated_record(tmp_path, model_path, scene):
    """A runs folder with room for part of the record kept those 4 KiB of it: a record that
    did not parse, which the output's attributes named."""
    runs = tmp_path / "runs"
    runs.mkdir()
    data = {**job_dict(str(scene), model_path, str(tmp_path / "out.zarr")), "runs_dir": str(runs)}
    listing = tmp_path / "listing.txt"
    result = run_job(tmp_path, data, prefix=nearly_full(runs, 4, f'ls -A "$0" > {listing}'))
    assert_clean(result, 1, "failed: the disk is full")
    assert listing.read_text().split() == ["fill"]


def test_a_conversion_that_does_not_fit_is_named_and_removed(tmp_path, scene):
    small = tmp_path / "small"
    small.mkdir()
    listing = tmp_path / "listing.txt"
    result = geoseg("convert", str(scene), str(small / "c.zarr"), "--chunks", "32",
                    prefix=nearly_full(small, 8, f'ls -A "$0" > {listing}'))
    assert_clean(result, 1, f"Writing {small / 'c.zarr'} failed: the disk is full")
    assert "rerun resumes" not in said(result) and "output" in said(result)
    assert f"the part-written output {small / 'c.zarr'} was removed" in said(result)
    assert listing.read_text().split() == ["fill"]  # no chunk write went on after the removal


@pytest.mark.parametrize("tmpdir_there", [False, True])  # the temporary folder on that disk too
def test_a_cog_that_does_not_fit_is_a_full_disk(tmp_path, tmpdir_there):
    """GDAL said it could not read a directory: an internal error (after lines libtiff prints
    itself, which stay)."""
    from tests.report.test_eval_rasters import _output, _scene

    out = _output(tmp_path, _scene()[0])
    small = tmp_path / "small"
    small.mkdir()
    listing = tmp_path / "listing.txt"
    result = geoseg("export", out, "--cog", str(small / "o.tif"), "--compress", "none",
                    prefix=nearly_full(small, 4, f'ls -A "$0" > {listing}'),
                    env={"TMPDIR": str(small)} if tmpdir_there else None)
    assert_clean(result, 1, f"Writing {small / 'o.tif'} failed: the disk is full")
    assert listing.read_text().split() == ["fill"]


def test_a_cog_export_failing_on_a_nearly_full_disk_for_another_cause_says_that_cause(tmp_path):
    """Any failure with under 1 MiB left was called a full disk, with an errno nothing raised."""
    from tests.report.test_eval_rasters import _output, _scene

    out = Path(_output(tmp_path, _scene()[0]))
    (out / "classes" / "c" / "0" / "0").write_bytes(b"garbage")
    small = tmp_path / "small"
    small.mkdir()
    result = geoseg("export", str(out), "--cog", str(small / "o.tif"),
                    prefix=nearly_full(small, 150))
    assert "disk is full" not in said(result) and "Errno 28" not in said(result), result.stderr
    assert "cannot decode" in said(result) and "classes/c/0/0" in said(result), result.stderr


def test_scores_that_do_not_fit_leave_no_truncated_json(tmp_path, model_path, scene):
    from tests.report.test_eval_rasters import _output, _scene

    pred, _ = _scene()
    out = _output(tmp_path, pred)
    small = tmp_path / "small"
    small.mkdir()
    listing = tmp_path / "listing.txt"
    result = geoseg("eval", out, out, "--json", str(small / "s.json"),
                    prefix=nearly_full(small, 0, f'ls -A "$0" > {listing}'))
    assert_clean(result, 1, f"Writing the scores {small / 's.json'} failed: the disk is full",
                 "then run again")
    assert listing.read_text().split() == ["fill"]


# --- the cluster -----------------------------------------------------------------------------


def test_an_unreachable_scheduler_is_named(tmp_path, model_path, scene):
    import dask
    import distributed  # noqa: F401 - its defaults first: leaving the block below would
    # otherwise delete the whole distributed.comm section they add meanwhile, and later tests
    # of this process would fail with KeyError: 'comm'

    # 3 s, not 30: set in Dask's configuration here, since its environment is read once per process
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        result = run_job(tmp_path, job_dict(str(scene), model_path, str(tmp_path / "out.zarr")),
                         "--cluster", "tcp://127.0.0.1:9")
    assert_clean(result, 2, "Cannot reach the Dask scheduler at tcp://127.0.0.1:9",
                 "Check that it is running", "or drop --cluster / cluster.scheduler")


def test_an_unreachable_scheduler_from_the_environment_says_to_unset_it(
        tmp_path, model_path, scene, monkeypatch):
    """The advice was to drop --cluster and cluster.scheduler, neither of which was given."""
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "3s")
    result = run_job(tmp_path, job_dict(str(scene), model_path, str(tmp_path / "out.zarr")))
    assert_clean(result, 2, "Cannot reach the Dask scheduler at tcp://127.0.0.1:9",
                 "or unset DASK_SCHEDULER_ADDRESS (it names this scheduler whatever the spec says)")


@pytest.mark.parametrize("command", [["run", "job.yaml"], ["demo"], ["sweep", "s.yaml"],
                                     ["batch", "b.yaml"]])
def test_a_scheduler_option_that_is_no_address_is_refused_naming_it(tmp_path, command):
    """It was applied as a --cluster value, and refused as one: "--cluster: received ..."."""
    result = geoseg(*command, "--scheduler", "notanaddress", cwd=tmp_path)
    assert_clean(result, 2, "--scheduler: received 'notanaddress'; expected a Dask scheduler's "
                 "address such as tcp://host:8786")
    assert "--cluster: received" not in result.stderr


# --- the command line itself -------------------------------------------------------------


@pytest.fixture()
def in_process(monkeypatch):
    """Run ``geoseg.cli.main`` here; leaves logging as it found it."""
    from geoseg import logs

    yield monkeypatch
    logs.quiet_task_errors(False)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path, in_process,
                                                                      capsys):
    from geoseg import jobs
    from geoseg.cli import main

    def broken(spec):  # a library's error quoting a signed URL
        raise KeyError(f"a bug near s3://{SECRETS['url user']}:{SECRETS['url password']}@b/k"
                       f"?X-Amz-Signature={SECRETS['url signature']}")

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict("in.zarr", "m.safetensors", "out.zarr")))
    in_process.setattr(jobs, "prepare", broken)
    for debug in ([], ["--debug"]):
        in_process.setattr(sys, "argv", ["geoseg", *debug, "validate", str(job)])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "internal error: KeyError: 'a bug near s3://b/k' (rerun with --debug" in err
        assert ("Traceback" in err) == bool(debug)
        assert leaks(err) == []


# --- secrets ---------------------------------------------------------------------------------

SECRETS = {
    "input key": "AKIAINPUTKEY7Q2W", "input secret": "in/Secret+Value/77aa", "input token": "INTOKEN9x8y7",
    "model header": "MODELHEADERSECRET55", "model user": "MODELUSER31",
    "model password": "MODELPASSWD/62x", "model signature": "MODELSIG0a1b2c3d",
    "model credential": "MODELCRED9z8y",
    "output key": "AKIAOUTPUTKEY3E4R", "output secret": "out/Secret+Value/88bb", "output token": "OUTTOKEN6u5t",
    "env secret": "ENVSECRET/44ab+cd", "env session": "ENVSESSION3344",
    "url user": "AKIAURLUSER5T6Y", "url password": "URLPASSWORD44zz", "url signature": "URLSIGNATURE9k8j",
}
SECRET_ENV = {"AWS_SECRET_ACCESS_KEY": SECRETS["env secret"],
              "AWS_SESSION_TOKEN": SECRETS["env session"]}


def s3(server: dict, who: str) -> dict:
    return {"key": SECRETS[f"{who} key"], "secret": SECRETS[f"{who} secret"],
            "token": SECRETS[f"{who} token"], "client_kwargs": server["client_kwargs"]}


def secret_job(tmp_path: Path, server: dict, model_path: str, *, garbage: bool = False) -> dict:
    """A job with a secret in every place a credential can go: the storage options of input,
    model and output, and the model's URL (user info and a signed query)."""
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **server)
    local = Path(write_zarr(tmp_path / "scene.zarr", textured_image(130, 120)))
    if garbage:
        (local / "c" / "0" / "1" / "1").write_bytes(os.urandom(100))
    folder = f"geoseg/{tmp_path.name}"  # the server is shared by the session's tests
    for file in (f for f in local.rglob("*") if f.is_file()):
        fs.put_file(str(file), f"{folder}/scene.zarr/{file.relative_to(local).as_posix()}")
    fs.put_file(model_path, f"{folder}/model.safetensors")
    endpoint = server["client_kwargs"]["endpoint_url"].removeprefix("http://")
    model = (f"http://{SECRETS['model user']}:{SECRETS['model password'].replace('/', '%2F')}@"
             f"{endpoint}/{folder}/model.safetensors?X-Amz-Signature="
             f"{SECRETS['model signature']}&X-Amz-Credential={SECRETS['model credential']}")
    data = job_dict(f"s3://{folder}/scene.zarr", model, f"s3://{folder}/out.zarr")
    data["input"]["storage_options"] = s3(server, "input")
    data["output"]["storage_options"] = s3(server, "output")
    data["model"]["storage_options"] = {"headers": {"X-Api-Key": SECRETS["model header"]}}
    data["runs_dir"] = str(tmp_path / "runs")
    return data


def leaks(text: str) -> list[str]:
    """The secrets in ``text``, as they are or percent-encoded."""
    return [name for name, secret in SECRETS.items()
            if secret in text or quote(secret, safe="") in text]


def stored_text(tmp_path: Path, server: dict) -> str:
    """Every run record and every metadata document of the output."""
    runs = "".join(p.read_text() for p in (tmp_path / "runs").rglob("*") if p.is_file())
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **server)
    docs = [p for p in fs.find(f"geoseg/{tmp_path.name}") if "/c/" not in p
            and not p.endswith(".safetensors")]  # metadata, attributes, leases: not pixels
    return runs + "".join(fs.cat_file(p).decode(errors="replace") for p in docs)


def test_no_secret_in_anything_a_succeeding_job_prints_or_stores(tmp_path, model_path, s3_server):
    data = secret_job(tmp_path, s3_server, model_path)
    result = run_job(tmp_path, data, env={**SECRET_ENV, "GEOSEG_LOG_FORMAT": "json"},
                     own_process=True)
    assert result.returncode == 0, result.stderr
    stored = stored_text(tmp_path, s3_server)
    assert '"status": "complete"' in stored.replace('":"', '": "') and "run_record" in stored
    assert leaks(result.stdout + result.stderr + stored) == []


def test_no_secret_in_anything_a_failing_job_prints_or_stores(tmp_path, model_path, s3_server):
    data = secret_job(tmp_path, s3_server, model_path, garbage=True)
    result = run_job(tmp_path, data, env=SECRET_ENV, own_process=True)
    assert_clean(result, 2, f"cannot decode s3://geoseg/{tmp_path.name}/scene.zarr", "c/0/1/1")
    assert leaks(result.stdout + result.stderr + stored_text(tmp_path, s3_server)) == []


def test_no_secret_from_a_url_a_library_quotes(tmp_path, model_path, s3_server):
    """botocore quotes a bucket name it refuses, user info included: an object store's URL with
    user info is refused before; fsspec quotes the part of a malformed URL's user info it took
    for a port: such a URL is refused unparsed."""
    data = secret_job(tmp_path, s3_server, model_path)
    data["input"]["url"] = (f"s3://{SECRETS['url user']}:{SECRETS['url password']}@geoseg/"
                            f"{tmp_path.name}/scene.zarr?X-Amz-Signature={SECRETS['url signature']}")
    result = run_job(tmp_path, data, env=SECRET_ENV, own_process=True)
    assert_clean(result, 2, f"input.url s3://geoseg/{tmp_path.name}/scene.zarr: received a URL "
                 "with credentials in it")  # refused before botocore could quote it
    assert leaks(result.stdout + result.stderr) == []
    data["input"]["url"] = f"s3://{SECRETS['url user']}:wJalrXUtnFEMI/{SECRETS['url password']}@geoseg/x"
    result = run_job(tmp_path, data, env=SECRET_ENV, own_process=True)
    assert_clean(result, 2, "input.url s3://geoseg/x: received a URL with credentials in it")
    assert leaks(result.stdout + result.stderr) == [] and "wJalrXUtnFEMI" not in result.stderr
    data["input"]["url"] = f"https://{SECRETS['url user']}:wJalrXUtnFEMI/{SECRETS['url password']}@h/x"
    result = run_job(tmp_path, data, env=SECRET_ENV)  # fsspec would take the user info for a port
    assert_clean(result, 2, "input.url: received a URL that cannot be parsed (https://h/x ")
    assert leaks(result.stdout + result.stderr) == [] and "wJalrXUtnFEMI" not in result.stderr


def test_scrub_hides_every_form_of_a_secret():
    from geoseg.core import redact

    url = "https://AKIAUSER:wJalrXUtnFEMI/K7MDENG@host/key?X-Amz-Signature=abc123"
    text = (f"{url} Port could not be cast to integer value as 'wJalrXUtnFEMI' "
            "token=s3cr3t%2Fx s3cr3t/x")
    scrubbed = redact.scrub(text, ["s3cr3t/x", *redact.url_secrets(url)])
    for part in ("AKIAUSER", "wJalrXUtnFEMI", "K7MDENG", "abc123", "s3cr3t"):
        assert part not in scrubbed, scrubbed
    assert scrubbed.startswith("https://host/key Port could not be cast")
    assert {"AKIAUSER", "wJalrXUtnFEMI/K7MDENG", "abc123"} <= redact.url_secrets(url)


@pytest.mark.parametrize(("content", "said"), [
    (None, "No run record at {path}; give the .json record a run wrote"),
    ("{not json", "{path} is not a run record: not JSON (Expecting property name"),
    ("[1, 2]", "{path} is not a run record: received JSON list, expected an object"),
])
def test_report_refuses_a_run_record_that_is_not_one(tmp_path, content, said):
    record = tmp_path / "run.json"
    if content is not None:
        record.write_text(content)
    assert_clean(geoseg("report", str(record)), 2, said.format(path=record))



def test_an_exception_python_cannot_raise_prints_no_traceback_after_the_message():
    """After a storage outage, reads the run had given up on were collected later and printed
    "Exception ignored in: <coroutine StorePath.get ...>" with a traceback after the error."""
    script = (
        "import gc, sys\n"
        "from geoseg import cli\n"
        "class Pending:\n"
        "    def __del__(self):\n"
        "        raise ValueError('was created in a different Context')\n"
        "sys.argv = ['geoseg', *sys.argv[1:], 'runs', '--help']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "Pending(); gc.collect()\n")
    for debug, shown in (([], False), (["--debug"], True)):
        done = subprocess.run([sys.executable, "-c", script, *debug], capture_output=True, text=True,
                              timeout=120, check=False)
        assert ("Traceback" in done.stderr) is shown, done.stderr
        assert ("different Context" in done.stderr) is shown, done.stderr
