"""Job state that tells the truth: leases for every run, failed and interrupted outputs,
verify naming undecodable and missing chunks, --overwrite never deleting foreign folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
import zarr

from geoseg.errors import (
    CorruptOutputError,
    JobSpecError,
    LeaseLostError,
    OutputBusyError,
    OutputExistsError,
    RasterNotFoundError,
)
from geoseg.io.convert import convert
from geoseg.jobs import JobSpec, load_job, run
from geoseg.jobs.lease import Lease, new_owner_id, read_lease
from geoseg.jobs.status import output_status, verify_output
from tests.cli import geoseg
from tests.conftest import job_dict, textured_image, write_geotiff, write_zarr


@pytest.fixture()
def job(tmp_path, model_path):
    src = write_zarr(tmp_path / "in.zarr", textured_image(128, 128), chunks=(32, 32))
    return job_dict(src, model_path, str(tmp_path / "out.zarr"), chunks=[32, 32])


def test_a_second_run_on_a_leased_output_is_refused_before_writing(tmp_path, job):
    other = Lease(job["output"]["url"], owner="another-host-4242-abcdef", seconds=60)
    assert other.acquire()
    try:
        with pytest.raises(OutputBusyError, match="Another run is writing .*another-host-4242"):
            run(JobSpec.from_dict(job), scheduler="tcp://127.0.0.1:1")  # never gets that far
        assert not (tmp_path / "out.zarr").exists()
    finally:
        other.release()


def _dead_owner() -> str:
    """A lease owner naming a process of this machine that has ended."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return f"{new_owner_id().rsplit('-', 2)[0]}-{dead.stdout.strip()}-abcdef"


@pytest.mark.parametrize("owner", ["live", "dead"])
def test_status_of_an_output_not_created_yet_names_the_run_holding_its_lease(tmp_path, owner):
    """A run stopped (or still starting) before it created the output leaves only its lease:
    status and quicklook said there was no geoseg output, as for a mistyped URL."""
    out = str(tmp_path / "out.zarr")
    held = Lease(out, owner="another-host-4242-abcdef" if owner == "live" else _dead_owner(),
                 seconds=60)
    assert held.acquire()
    for command in (["status", out], ["quicklook", out, str(tmp_path / "look.png")]):
        result = geoseg(*command)
        said = " ".join(result.stderr.split())
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert f"No geoseg output at {out}" in said and held.owner in said
        if owner == "live":
            assert f"until {read_lease(out).until()}" in said and "Ask again in a moment" in said
        else:
            assert "stopped before creating it" in said and "Run the job again" in said
    held.release()
    plain = " ".join(geoseg("status", out).stderr.split())
    assert "give the URL a `geoseg run` wrote to" in plain and "lease" not in plain


def test_a_lease_left_by_a_dead_local_process_is_taken_over(tmp_path, job, cluster_address):
    stale = Lease(job["output"]["url"], owner=_dead_owner(), seconds=600)
    assert stale.acquire()
    report = run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert report.n_tasks == 16 and output_status(job["output"]["url"]).status == "complete"
    assert not (tmp_path / "out.zarr.lease").exists()  # released at the end


def test_a_failed_run_says_failed(tmp_path, job, cluster_address):
    chunk = tmp_path / "in.zarr" / "c" / "0" / "1" / "1"
    chunk.write_bytes(b"not zstd at all" * 10)
    with pytest.raises(Exception):  # noqa: B017 - whatever the codec raises, the state is the point
        run(JobSpec.from_dict(job), scheduler=cluster_address)
    state = output_status(job["output"]["url"]).status
    assert state.startswith("failed (") and "running" not in state


def test_a_killed_run_is_interrupted_and_a_rerun_resumes(tmp_path, job, cluster_address):
    spec = tmp_path / "job.yaml"
    job["cluster"] = {"scheduler": cluster_address}
    spec.write_text(yaml.safe_dump(job))
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "run", str(spec)],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out = tmp_path / "out.zarr"
    deadline = time.monotonic() + 120
    while not (out / "manifest_done").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    state = output_status(str(out))
    if state.status == "complete":  # finished before the kill: nothing to learn here
        pytest.skip("the run finished before it could be killed")
    assert state.status.startswith("interrupted")
    again = run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert again.n_tasks + again.skipped == 16 and verify_output(str(out)).ok
    assert output_status(str(out)).status == "complete"


class _Stopped(BaseException):
    """A run stopped where it stood (as by SIGKILL): no handler of the job's catches it."""


@pytest.mark.parametrize("stop_at", ["manifest_done", "manifest_sha256", "x"])
def test_a_run_stopped_while_creating_its_output_is_redone_whole(tmp_path, model_path, cluster_address,
                                                                 monkeypatch, stop_at):
    src = write_geotiff(tmp_path / "in.tif", textured_image(128, 128))  # georeferenced: x, y arrays
    job = job_dict(src, model_path, str(tmp_path / "out.zarr"), chunks=[32, 32])
    clean = run(JobSpec.from_dict({**job, "output": {**job["output"], "url": str(tmp_path / "clean.zarr")}}),
                scheduler=cluster_address)
    create_array = zarr.Group.create_array

    def stop_at_one(group, name, **kwargs):
        if name == stop_at:  # killed after the array's folder was made, before its metadata
            (tmp_path / "out.zarr" / name).mkdir()
            raise _Stopped(name)
        return create_array(group, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", stop_at_one)
    with pytest.raises(_Stopped):
        run(JobSpec.from_dict(job), scheduler=cluster_address)
    monkeypatch.undo()
    out = str(tmp_path / "out.zarr")
    state = output_status(out)
    assert state.status.startswith("interrupted") and state.done == 0
    with pytest.raises(RasterNotFoundError, match="stopped before it was complete"):
        verify_output(out)
    again = run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert again.n_tasks == clean.n_tasks == 16 and again.skipped == 0 and verify_output(out).ok
    made, expected = zarr.open_group(out, mode="r"), zarr.open_group(str(tmp_path / "clean.zarr"), mode="r")
    assert sorted(made.array_keys()) == sorted(expected.array_keys())
    np.testing.assert_array_equal(made["classes"][...], expected["classes"][...])
    np.testing.assert_array_equal(made["x"][...], expected["x"][...])


def test_verify_names_undecodable_and_missing_chunks(tmp_path, job, cluster_address):
    run(JobSpec.from_dict(job), scheduler=cluster_address)
    out = tmp_path / "out.zarr"
    flipped = out / "classes" / "c" / "0" / "0"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    garbage = out / "classes" / "c" / "1" / "1"
    garbage.write_bytes(b"\x00garbage")
    (out / "classes" / "c" / "2" / "2").unlink()
    report = verify_output(str(out))
    assert not report.ok
    assert "0.0" in report.undecodable + report.mismatched
    assert "1.1" in report.undecodable and report.missing == ["2.2"]
    untouched = {"0.1", "0.2", "3.3"}
    assert not untouched & set(report.undecodable + report.mismatched + report.missing)


def test_verify_notices_array_metadata_that_declares_another_shape(tmp_path, job, cluster_address):
    """An edited or replaced zarr.json (here 96 rows instead of 128) is not the output the run
    wrote: verify says so instead of checking the 12 chunks that shape describes."""
    run(JobSpec.from_dict(job), scheduler=cluster_address)
    out = tmp_path / "out.zarr"
    for meta in (out / "zarr.json", out / "classes" / "zarr.json"):  # consolidated, and its own
        doc = json.loads(meta.read_text())
        node = doc.get("consolidated_metadata", {}).get("metadata", {}).get("classes", doc)
        if node is doc and meta.parent == out:
            continue  # not consolidated
        node["shape"] = [96, 128]
        meta.write_text(json.dumps(doc))
    report = verify_output(str(out))
    assert not report.ok and report.checked == 0  # no chunk judged on a grid no run made
    assert not report.missing + report.mismatched + report.undecodable
    assert len(report.layout) == 1 and "shape (96, 128)" in report.layout[0]
    assert "the run planned 16" in report.layout[0]
    assert "run the job again with --overwrite" in report.layout[0]


def test_cli_status_and_verify_report_states(tmp_path, job, cluster_address):
    run(JobSpec.from_dict(job), scheduler=cluster_address)
    out = tmp_path / "out.zarr"
    (out / "classes" / "c" / "1" / "1").write_bytes(b"\x00garbage")
    done = geoseg("verify", str(out))
    assert done.returncode == 1 and "1 undecodable 1.1 [32:64, 32:64]" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    group = zarr.open_group(str(out), mode="r+")
    group["manifest_done"][0, 0] = False  # a manifest that lost a chunk (the array keeps it)
    shown = " ".join(geoseg("status", str(out)).stdout.split())
    n = group["manifest_done"].size
    assert f"damaged (marked complete, but its manifest records {n - 1} of {n} task region(s)" in shown
    group["manifest_done"][0, 0] = True
    group.attrs["geoseg"] = {**group.attrs["geoseg"], "status": "running"}
    shown = geoseg("status", str(out))
    assert "interrupted" in " ".join(shown.stdout.split())
    assert np.asarray(group["manifest_done"][...]).all()
    (out / "zarr.json").write_text("{")  # metadata broken: not the same as no output at all
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job))
    for command, target in (("status", out), ("verify", out), ("run", spec)):  # run said "not a geoseg output"
        said = geoseg(command, str(target))
        assert said.returncode == 2 and "Traceback" not in said.stderr
        assert "its Zarr group metadata cannot be read (JSONDecodeError" in " ".join(said.stderr.split())


def test_an_output_where_the_evaluation_reference_is_is_refused_and_the_reference_kept(
        tmp_path, job, cluster_address):
    """--overwrite would delete the reference, and the run would score the output against
    itself (mIoU 1.0)."""
    run(JobSpec.from_dict(job), scheduler=cluster_address)
    reference = tmp_path / "out.zarr"
    before = zarr.open_group(str(reference), mode="r")["classes"][...]
    job = {**job, "evaluate": {"reference": {"url": str(reference), "variable": "classes"}}}
    with pytest.raises(JobSpecError, match=r"output.url: received .*, which is the "
                                           r"evaluate.reference .* apart from the evaluate"):
        run(JobSpec.from_dict(job), scheduler=cluster_address, overwrite=True)
    np.testing.assert_array_equal(zarr.open_group(str(reference), mode="r")["classes"][...], before)


@pytest.mark.parametrize("where", ["the input", "inside the input", "holding the input"])
def test_an_output_where_its_input_is_is_refused_and_the_input_kept(tmp_path, model_path, where):
    """The input a geoseg group (``geoseg convert`` wrote it), which --overwrite would delete."""
    folder = tmp_path / "data"
    scene = convert(write_geotiff(tmp_path / "in.tif", textured_image(64, 64)), str(folder / "in.zarr"))
    before = zarr.open_array(scene.url + "/raster", mode="r")[...]
    out = {"the input": folder / "in.zarr", "inside the input": folder / "in.zarr" / "mask.zarr",
           "holding the input": folder}[where]
    job = job_dict(scene.url + "/../in.zarr/", model_path, str(out), chunks=[32, 32])
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job))
    with pytest.raises(JobSpecError, match="output.url: received .* which is the input .* apart from"):
        load_job(spec)
    built = JobSpec.model_validate(job)  # the Python API's way around the loader
    with pytest.raises(JobSpecError, match="apart from the input"):
        run(built, overwrite=True, scheduler="tcp://127.0.0.1:1")  # refused before connecting
    np.testing.assert_array_equal(zarr.open_array(scene.url + "/raster", mode="r")[...], before)



def test_a_run_that_lost_its_lease_stops_writing_and_leaves_the_output_to_its_new_holder(
        tmp_path, job, cluster_address, monkeypatch):
    """A run stalled past its lease's expiry while another took the output over: it stops at
    its next finished task, and neither marks the output failed nor deletes the other's lease."""
    from geoseg.jobs import runner
    from geoseg.jobs.lease import LeaseRecord, read_lease

    monkeypatch.setattr(runner, "LEASE_SECONDS", 0.6)  # renewed every 0.2 s
    url = job["output"]["url"]
    finished = []

    def taken_over_after_the_first(_stats) -> None:
        finished.append(1)
        if len(finished) == 1:
            now = time.time()
            other = LeaseRecord("another-host-4242-abcdef", now, now + 600, output=url)
            (tmp_path / "out.zarr.lease").write_bytes(other.to_bytes())
            time.sleep(1.0)  # the renewal finds the lease is no longer this run's

    with pytest.raises(LeaseLostError, match="taken over by another run"):
        run(JobSpec.from_dict(job), scheduler=cluster_address, on_done=taken_over_after_the_first)
    assert len(finished) == 1
    assert zarr.open_group(url, mode="r").attrs["geoseg"]["status"] == "running"
    assert read_lease(url).owner == "another-host-4242-abcdef"


def test_a_resumed_run_says_running_while_it_writes(tmp_path, job):
    """Resuming an interrupted output: status says running (lease held by the run), not what
    the run before left it as."""
    interrupted_after(job, 3)
    out = job["output"]["url"]
    assert output_status(out).status.startswith("interrupted")
    states = []
    run(JobSpec.from_dict(job), scheduler="threads",
        on_done=lambda _: states.append(output_status(out).status))
    assert states and all(s.startswith("running (lease held by ") for s in states), states
    assert output_status(out).status == "complete"


def test_scoring_a_resumed_output_names_a_chunk_that_no_longer_decodes(tmp_path):
    """A rerun with evaluate scores the chunks an earlier run wrote: one whose bytes were
    damaged since is named, with how to recompute it, not an internal codec error."""
    src = write_zarr(tmp_path / "in.zarr", textured_image(128, 128, bands=1), chunks=(32, 32))
    ref = write_zarr(tmp_path / "ref.zarr", (textured_image(128, 128, bands=1) > 128).astype(np.uint8),
                     chunks=(32, 32))
    job = {"input": {"url": src}, "model": {"method": "threshold", "params": {"thresholds": [128]}},
           "output": {"url": str(tmp_path / "out.zarr"), "chunks": [32, 32]},
           "evaluate": {"reference": {"url": ref}}}
    run(JobSpec.from_dict(job), scheduler="threads")
    (tmp_path / "out.zarr" / "classes" / "c" / "1" / "2").write_bytes(b"\x00garbage")
    with pytest.raises(CorruptOutputError, match=r"output classes chunk y 32:64, x 64:96: its stored "
                                                 r"bytes do not decode .*geoseg verify .*out.zarr "
                                                 r"--repair, then the job again"):
        run(JobSpec.from_dict(job), scheduler="threads")
    result = geoseg("run", str(_written(tmp_path / "job.yaml", job)))
    assert result.returncode == 2 and "internal error" not in result.stderr, result.stderr
    assert "chunk y 32:64, x 64:96: its stored bytes do not decode" in result.stderr


def _written(path, job: dict):
    path.write_text(yaml.safe_dump(job))
    return path


def test_verify_of_an_unfinished_output_says_to_finish_it_not_to_repair_it(tmp_path, job):
    """Regions never computed are not damage: --repair would find nothing to un-mark, and
    advising it again after would loop."""
    interrupted_after(job, 2)
    out = job["output"]["url"]
    said = " ".join(geoseg("verify", out).stderr.split())
    assert "were never computed (the output is unfinished): run the job again" in said, said
    assert "--repair" not in said
    from geoseg.io.output import OutputTarget

    row, col = min(OutputTarget(out).done_keys()).split(".")  # a region the run did compute
    (tmp_path / "out.zarr" / "classes" / "c" / row / col).write_bytes(b"\x00garbage")
    said = " ".join(geoseg("verify", out).stderr.split())
    assert "never computed" in said and f"geoseg verify {out} --repair" in said, said


def interrupted_after(job: dict, regions: int) -> None:
    """Run ``job`` on threads and interrupt it (as Ctrl-C does) once ``regions`` came back."""
    seen = []

    def stop(stats) -> None:
        seen.append(stats)
        if len(seen) == regions:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run(JobSpec.from_dict(job), scheduler="threads", on_done=stop)


def test_an_overwrite_stopped_while_deleting_is_finished_by_the_next_run(tmp_path, job,
                                                                         cluster_address, monkeypatch):
    """Killed while --overwrite deleted the old output, a run left an output marked complete with
    arrays gone (a rerun computed nothing; verify --repair failed) or, its zarr.json deleted
    first, one no command would touch, --overwrite included."""
    from fsspec.implementations.local import LocalFileSystem

    from geoseg.io.exports.common import open_finished

    out = job["output"]["url"]
    clean = run(JobSpec.from_dict(job), scheduler=cluster_address)
    expected = zarr.open_group(out, mode="r")["classes"][...]
    removed, rm = [], LocalFileSystem.rm

    def stop_after_one(fs, path, *args, **kwargs):
        if removed:  # killed while deleting the second entry of the old output
            raise _Stopped(path)
        removed.append(path)
        return rm(fs, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "rm", stop_after_one)
    with pytest.raises(_Stopped):
        run(JobSpec.from_dict(job), scheduler=cluster_address, overwrite=True)
    monkeypatch.undo()
    assert os.path.exists(os.path.join(out, "zarr.json")) and len(os.listdir(out)) < 5
    assert output_status(out).status.startswith("being deleted (an --overwrite stopped")
    with pytest.raises(RasterNotFoundError, match="an --overwrite stopped while it deleted"):
        verify_output(out)
    with pytest.raises(Exception, match="part of it is gone; nothing was exported"):
        open_finished(out)  # an export: never read as a finished output
    drawn = geoseg("quicklook", out, str(tmp_path / "q.png"))
    assert drawn.returncode == 2 and "part of it is gone; nothing to draw" in drawn.stderr
    scored = geoseg("eval", out, out)  # its lost chunks would be scored as no-data
    assert scored.returncode == 2 and "part of it is gone; nothing was scored" in scored.stderr
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    checked = geoseg("validate", str(tmp_path / "job.yaml"))
    said = " ".join((checked.stdout + checked.stderr).split())
    assert "left half deleted by a stopped --overwrite: `geoseg run` deletes the rest" in said
    again = run(JobSpec.from_dict(job), scheduler=cluster_address)  # no --overwrite needed
    assert again.n_tasks == clean.n_tasks and again.skipped == 0 and verify_output(out).ok
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["classes"][...], expected)


@pytest.mark.parametrize("left", [(), ("zarr.0123456789abcdef0123456789abcdef.partial",)])
def test_a_folder_left_empty_or_with_zarrs_leftovers_is_no_output(tmp_path, job, cluster_address,
                                                                  left):
    """Empty: what a kill after a deletion's last file, before its folder, leaves. Holding only
    zarr.<uuid>.partial: a run killed as zarr wrote its new group's metadata (an internal error
    before, zarr refusing to create a group where it saw data)."""
    os.makedirs(job["output"]["url"])
    for name in left:
        with open(os.path.join(job["output"]["url"], name), "w") as file:
            file.write('{"zarr_format": 3')
    assert geoseg("status", job["output"]["url"]).returncode == 2
    assert run(JobSpec.from_dict(job), scheduler=cluster_address).skipped == 0
    assert verify_output(job["output"]["url"]).ok


def test_a_run_killed_as_it_creates_its_group_left_one_that_says_so(tmp_path, job,
                                                                   cluster_address, monkeypatch):
    """The group was created, then given its attributes: killed between the two writes, it was
    an empty Zarr group that every command refused as not geoseg's, --overwrite included."""
    from geoseg.io.output import OutputTarget

    open_group = OutputTarget.open_group

    def stop_once_created(target, mode="r+", **kwargs):
        group = open_group(target, mode, **kwargs)
        if mode == "w-":
            raise _Stopped(target.url)
        return group

    monkeypatch.setattr(OutputTarget, "open_group", stop_once_created)
    with pytest.raises(_Stopped):
        run(JobSpec.from_dict(job), scheduler=cluster_address)
    monkeypatch.undo()
    assert output_status(job["output"]["url"]).status.startswith("interrupted")
    assert run(JobSpec.from_dict(job), scheduler=cluster_address).n_tasks == 16
    assert verify_output(job["output"]["url"]).ok


def test_what_zarr_leaves_of_a_metadata_write_killed_midway_does_not_block_overwrite(
        tmp_path, job, cluster_address):
    """zarr writes zarr.json through zarr.<uuid>.partial; a run killed mid-write left one that
    --overwrite refused as a file geoseg did not write."""
    out = job["output"]["url"]
    run(JobSpec.from_dict(job), scheduler=cluster_address)
    with open(os.path.join(out, "zarr.json"), "rb") as src, \
            open(os.path.join(out, "zarr.0123456789abcdef0123456789abcdef.partial"), "wb") as dst:
        dst.write(src.read())
    assert run(JobSpec.from_dict(job), scheduler=cluster_address, overwrite=True).skipped == 0
    with open(os.path.join(out, "notes.partial"), "w") as notes:  # a user's file is still theirs
        notes.write("mine")
    with pytest.raises(OutputExistsError, match="holds what geoseg did not write \\(notes.partial\\)"):
        run(JobSpec.from_dict(job), scheduler=cluster_address, overwrite=True)


@pytest.mark.parametrize(("made", "said"), [
    ("array", "(a Zarr array is there, not the group a run writes)"),
    ("file", "(nothing there reads as a Zarr group: if a run wrote it, its zarr.json is gone)"),
])
def test_status_of_someone_s_labels_or_a_file_says_no_output_and_never_to_remove_it(tmp_path,
                                                                                    made, said):
    """A plain Zarr array (reference labels, say) or a JSON file was called an output whose
    metadata broke, with the advice to remove it and run the job again."""
    where = tmp_path / ("labels.zarr" if made == "array" else "scores.json")
    if made == "array":
        zarr.create_array(str(where), shape=(8, 8), dtype="uint8")[:] = 1
    else:
        where.write_text("{}")
    done = geoseg("status", str(where))
    assert done.returncode == 2, done.stderr
    assert f"No geoseg output at {where} {said}" in " ".join(done.stderr.split())
    assert "remove" not in done.stderr
