"""Resumable runs: a killed client, a rerun that computes only what is missing, verify and status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
import zarr
from distributed import Client

from geoseg.errors import OutputExistsError
from geoseg.jobs import JobSpec, run
from geoseg.jobs.status import output_status, verify_output
from tests.cli import geoseg
from tests.conftest import job_dict, textured_image, write_geotiff, write_zarr


def chunk_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted((folder / "classes").rglob("*")) if p.is_file()}


def wait_until_idle(address: str, timeout: float = 60) -> None:
    """Until neither the scheduler nor any worker holds a task: a task already running when its
    client died is forgotten by the scheduler but still finishes (and writes) on its worker."""
    def busy(client: Client) -> int:
        on_workers = client.run(lambda dask_worker: len(dask_worker.state.executing))
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) + sum(on_workers.values())

    with Client(address) as client:
        deadline, quiet = time.time() + timeout, 0
        while quiet < 5 and time.time() < deadline:
            quiet = quiet + 1 if busy(client) == 0 else 0
            time.sleep(0.2)


def test_killed_client_resumes_with_only_missing_chunks_and_identical_output(
        tmp_path, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", textured_image(256, 256, seed=12))
    reference = tmp_path / "reference.zarr"
    run(JobSpec.from_dict(job_dict(src, model_path, str(reference), chunks=[32, 32])), scheduler=cluster_address)

    out = tmp_path / "out.zarr"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(src, model_path, str(out), chunks=[32, 32])))
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "run", str(job), "--scheduler", cluster_address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done = int(np.asarray(zarr.open_group(str(out), mode="r")["manifest_done"][...]).sum())
        except Exception:  # noqa: BLE001 - the store is still being created
            done = 0
        if done >= 8:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    wait_until_idle(cluster_address)  # tasks already running when the client died may still land
    before = output_status(str(out))
    assert before.status.startswith("interrupted") and 8 <= before.done < 64  # no live lease

    report = run(JobSpec.from_dict(job_dict(src, model_path, str(out), chunks=[32, 32])),
                 scheduler=cluster_address)
    assert report.skipped == before.done and report.n_tasks == 64 - before.done
    assert output_status(str(out)).status == "complete"
    assert chunk_files(out) == chunk_files(reference)
    assert verify_output(str(out)).ok

    again = run(JobSpec.from_dict(job_dict(src, model_path, str(out), chunks=[32, 32])),
                scheduler=cluster_address)
    assert again.n_tasks == 0 and again.skipped == 64


def test_rerun_with_another_method_names_the_method_not_weights(tmp_path):
    """A method has no weights: the refusal said "the model weights differ"."""
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1))
    out = str(tmp_path / "out.zarr")

    def job(method: str) -> JobSpec:
        return JobSpec.from_dict({"input": {"url": src}, "output": {"url": out},
                                  "model": {"method": method, "params": {"feature": 1}}})

    run(job("otsu"), scheduler="threads")
    with pytest.raises(OutputExistsError, match=r"made by a different job \(the model \(a network's "
                                                r"weights, or a method and its parameters\) differ\)"):
        run(job("li"), scheduler="threads")


def test_rerun_with_another_spec_is_refused_unless_overwrite(tmp_path, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64))
    out = str(tmp_path / "out.zarr")
    run(JobSpec.from_dict(job_dict(src, model_path, out, chunks=[32, 32])), scheduler=cluster_address)
    other = job_dict(src, model_path, out, chunks=[32, 32])
    other["inference"] = {"batch_size": 2, "tile": 32}
    with pytest.raises(OutputExistsError, match=r"made by a different job \(the inference "
                                                r"settings differ\)"):
        run(JobSpec.from_dict(other), scheduler=cluster_address)
    other["output"]["nodata_class"] = 200
    with pytest.raises(OutputExistsError, match=r"job \(the output layout \(chunks, probabilities, "
                                                r"nodata_class\), the inference settings differ\)"):
        run(JobSpec.from_dict(other), scheduler=cluster_address)
    del other["output"]["nodata_class"]
    assert run(JobSpec.from_dict(other), scheduler=cluster_address, overwrite=True).n_tasks == 4


def test_verify_finds_a_corrupted_chunk_and_status_reports_progress(tmp_path, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 96))
    out = tmp_path / "out.zarr"
    run(JobSpec.from_dict(job_dict(src, model_path, str(out), chunks=[32, 32])), scheduler=cluster_address)
    result = geoseg("status", str(out))
    assert "complete, 6/6 task regions done (100%)" in " ".join(result.stdout.split())
    assert f"`geoseg verify {out}` checks every chunk" in " ".join(result.stdout.split())
    arr = zarr.open_group(str(out))["classes"]
    block = arr[32:64, 0:32]
    arr[32:64, 0:32] = (block + 1) % 4
    report = verify_output(str(out))
    assert report.mismatched == ["1.0"] and not report.missing
    result = geoseg("verify", str(out))
    assert result.returncode == 1 and "1 mismatched" in result.stderr


def test_a_rerun_computes_again_a_region_whose_stored_chunk_was_lost(tmp_path, model_path,
                                                                     cluster_address):
    """The manifest still records the region, but its chunk would read as no-data; a chunk
    of only no-data, never stored, is no loss."""
    image = textured_image(64, 96)
    image[:, :32, :32] = 0
    src = write_geotiff(tmp_path / "in.tif", image, nodata=0)
    out = tmp_path / "out.zarr"
    spec = JobSpec.from_dict(job_dict(src, model_path, str(out), chunks=[32, 32]))
    run(spec, scheduler=cluster_address)
    whole = zarr.open_group(str(out), mode="r")["classes"][...]
    assert not (out / "classes" / "c" / "0" / "0").exists()
    (out / "classes" / "c" / "1" / "2").unlink()
    report = run(spec, scheduler=cluster_address)
    assert (report.skipped, report.n_tasks) == (5, 1)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["classes"][...], whole)
    assert verify_output(str(out)).ok and run(spec, scheduler=cluster_address).skipped == 6


class _Stop(KeyboardInterrupt):
    """Ctrl-C after a few chunks: the run stops, marked interrupted, with chunks left to do."""


def interrupted_run(job: dict, address: str, after: int = 3) -> None:
    seen = []

    def stop_after(_stats) -> None:
        seen.append(1)
        if len(seen) == after:
            raise _Stop

    with pytest.raises(_Stop):
        run(JobSpec.from_dict(job), scheduler=address, on_done=stop_after)
    wait_until_idle(address)


def test_a_rerun_laid_out_otherwise_is_refused_and_the_first_layout_resumes(
        tmp_path, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", textured_image(128, 128, seed=4), chunks=(32, 32))
    job = job_dict(src, model_path, str(tmp_path / "out.zarr"), chunks=[32, 32])
    interrupted_run(job, cluster_address)
    before = chunk_files(tmp_path / "out.zarr")
    sharded = {**job, "output": {**job["output"], "shards": [64, 64]}}
    with pytest.raises(OutputExistsError, match=r"started with tasks of \[32, 32\] \(chunks \[32, 32\], no "
                                                r"shards\); this run would write tasks of \[64, 64\].*"
                                                r"when the spec gives no tile GEOSEG_TILE"):
        run(JobSpec.from_dict(sharded), scheduler=cluster_address)
    assert chunk_files(tmp_path / "out.zarr") == before
    again = run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert again.skipped >= 3 and verify_output(str(tmp_path / "out.zarr")).ok
    assert output_status(str(tmp_path / "out.zarr")).status == "complete"


def test_an_output_whose_manifest_lacks_chunks_is_never_marked_complete(
        tmp_path, model_path, cluster_address, monkeypatch):
    """Whatever makes a run skip chunks it should compute, the output does not say complete."""
    from geoseg.io.output import OutputTarget

    src = write_zarr(tmp_path / "in.zarr", textured_image(128, 128, seed=5), chunks=(32, 32))
    job = job_dict(src, model_path, str(tmp_path / "out.zarr"), chunks=[32, 32])
    interrupted_run(job, cluster_address)
    done = OutputTarget(job["output"]["url"]).done_keys()
    never = set(sorted({f"{i}.{j}" for i in range(4) for j in range(4)} - done)[:2])
    from geoseg.jobs import runner

    monkeypatch.setattr(runner, "_still_done", lambda target: done | never)  # 2 passed for done
    with pytest.raises(Exception, match="recorded as written; expected all of them"):
        run(JobSpec.from_dict(job), scheduler=cluster_address)
    state = output_status(str(tmp_path / "out.zarr"))
    assert state.status.startswith("failed (ChunkResultError") and state.done < 16


def test_a_zarr_input_with_a_chunk_rewritten_in_place_is_not_taken_for_the_same(
        tmp_path, model_path, cluster_address):
    """Its metadata unchanged, one chunk's bytes new: a finished output is not reported done
    from the old input, and no resume mixes both."""
    src = write_zarr(tmp_path / "in.zarr", textured_image(96, 96, seed=6), chunks=(48, 48))
    job = job_dict(src, model_path, str(tmp_path / "out.zarr"), chunks=[48, 48])
    run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert run(JobSpec.from_dict(job), scheduler=cluster_address).skipped == 4  # unchanged: done
    array = zarr.open_array(src, mode="r+")
    array[:, :48, :48] = 255 - array[:, :48, :48]
    before = chunk_files(tmp_path / "out.zarr")
    with pytest.raises(OutputExistsError, match=r"in.zarr changed since output .* \(then chunks "
                                                r"[0-9a-f]{16}, now chunks [0-9a-f]{16}\)"):
        run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert chunk_files(tmp_path / "out.zarr") == before


def test_a_mosaic_with_a_scene_replaced_is_not_taken_for_the_same(tmp_path, model_path,
                                                                   cluster_address):
    """A glob's scenes: one rewritten with other pixels, the finished output is not reported
    done from the old scenes."""
    image = textured_image(96, 96, seed=6)
    write_geotiff(tmp_path / "scene_top.tif", image[:, :48])
    with rasterio.open(tmp_path / "scene_top.tif") as top:
        profile = {**top.profile, "transform": top.transform @ top.transform.translation(0, 48)}
    with rasterio.open(tmp_path / "scene_bottom.tif", "w", **profile) as bottom:
        bottom.write(image[:, 48:])
    job = job_dict(str(tmp_path / "scene_*.tif"), model_path, str(tmp_path / "out.zarr"),
                   chunks=[48, 48])
    run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert run(JobSpec.from_dict(job), scheduler=cluster_address).skipped == 4
    stamp = (tmp_path / "scene_top.tif").stat().st_mtime
    write_geotiff(tmp_path / "scene_top.tif", 255 - image[:, :48])
    os.utime(tmp_path / "scene_top.tif", (stamp + 60, stamp + 60))
    with pytest.raises(OutputExistsError, match=r"scene_\*.tif changed since output .* \(then "
                                                r"scenes [0-9a-f]{16}, now scenes [0-9a-f]{16}\)"):
        run(JobSpec.from_dict(job), scheduler=cluster_address)


def test_a_resume_from_a_changed_input_is_refused_and_overwrite_starts_again(
        tmp_path, model_path, cluster_address):
    """A new file delivered at the input's path: resuming would mix chunks of both inputs."""
    src = tmp_path / "in.tif"
    write_geotiff(src, textured_image(128, 128, seed=6))
    job = job_dict(str(src), model_path, str(tmp_path / "out.zarr"), chunks=[32, 32])
    interrupted_run(job, cluster_address)
    stamp = src.stat().st_mtime
    write_geotiff(src, textured_image(128, 128, seed=7))  # the same size, other pixels
    os.utime(src, (stamp + 60, stamp + 60))
    before = chunk_files(tmp_path / "out.zarr")
    with pytest.raises(OutputExistsError, match=r"in.tif changed since output .* was started \(then "
                                                r"mtime .*, now mtime .*mix chunks of both"):
        run(JobSpec.from_dict(job), scheduler=cluster_address)
    assert chunk_files(tmp_path / "out.zarr") == before
    run(JobSpec.from_dict(job), scheduler=cluster_address, overwrite=True)
    clean = job_dict(str(src), model_path, str(tmp_path / "clean.zarr"), chunks=[32, 32])
    run(JobSpec.from_dict(clean), scheduler=cluster_address)
    got, want = (zarr.open_group(str(tmp_path / n), mode="r")["classes"][...] for n in ("out.zarr", "clean.zarr"))
    np.testing.assert_array_equal(got, want)


def test_a_resume_that_completes_leaves_no_error_of_the_failed_run(tmp_path, model_path):
    """The output said status complete beside the error of the run that had failed."""
    from geoseg.io.output import OutputTarget

    src = write_zarr(tmp_path / "in.zarr", textured_image(128, 128))
    spec = JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "out.zarr"),
                                      chunks=[64, 64]))

    def fail(_: object) -> None:
        raise RuntimeError("the run fails after its first region")

    with pytest.raises(RuntimeError):
        run(spec, on_done=fail, scheduler=None, cluster="threads")
    target = OutputTarget(str(tmp_path / "out.zarr"), {})
    assert target.attrs()["status"] == "failed" and "error" in target.attrs()
    report = run(spec, cluster="threads")
    assert report.n_tasks < 4  # resumed
    assert target.attrs()["status"] == "complete" and "error" not in target.attrs()
