"""Batches: inputs expanded into jobs on one cluster, unchanged ones skipped, changed ones redone,
outputs leased, a report; real Zarr/GeoTIFF inputs, moto's S3 server, real processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import s3fs
import yaml
import zarr

from geoseg.core import redact
from geoseg.errors import BatchSpecError, ClusterConfigError
from geoseg.jobs.batch import plan_items, run_batch
from geoseg.jobs.batch_spec import BatchSpec, load_batch
from geoseg.jobs.identity import input_identity
from geoseg.jobs.lease import Lease, LeaseRecord, lease_url
from geoseg.jobs.status import verify_output
from geoseg.report.html import record_of, report_path, write_batch_index
from tests.cli import geoseg
from tests.conftest import textured_image, write_geotiff, write_zarr

THRESHOLD = 128


def scene(seed: int, size: int = 64) -> np.ndarray:
    return textured_image(size, size, bands=1, seed=seed)


def expected(image: np.ndarray) -> np.ndarray:
    """The independent reference: class 1 where the band exceeds the threshold."""
    return (image[0] > THRESHOLD).astype(np.uint8)


def batch_dict(inputs: dict, template: str, *, storage_options: dict | None = None,
               **extra) -> dict:
    so = {"storage_options": storage_options} if storage_options else {}
    model = {"method": "threshold", "params": {"thresholds": [THRESHOLD]}}
    return {"name": "nightly", "inputs": inputs, "output": {"url_template": template},
            "job": {"input": {**so}, "model": model, "output": {"chunks": [32, 32], **so}},
            **extra}


def classes(url: str, storage_options: dict | None = None) -> np.ndarray:
    return np.asarray(zarr.open_group(url, mode="r", storage_options=storage_options)["classes"][:])


def attrs(url: str, storage_options: dict | None = None) -> dict:
    return dict(zarr.open_group(url, mode="r", storage_options=storage_options).attrs["geoseg"])


def snapshot(folder: Path) -> dict[str, int]:
    """Every file of every output store, with its modification time."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.zarr/**/*")
            if p.is_file()}


def states(report) -> dict[str, str]:
    return {Path(i.input).stem: i.state for i in report.items}


def test_second_run_skips_everything_then_only_a_new_and_a_modified_scene_run(tmp_path,
                                                                              cluster_address):
    scenes, masks = tmp_path / "scenes", tmp_path / "masks"
    images = {name: scene(seed) for seed, name in enumerate("abc")}
    for name, image in images.items():
        write_zarr(scenes / f"{name}.zarr", image, chunks=(32, 32))
    spec = BatchSpec.from_dict(batch_dict({"glob": f"{scenes}/*.zarr"}, f"{masks}/{{stem}}.zarr"))

    first = run_batch(spec, scheduler=cluster_address)
    assert states(first) == {"a": "done", "b": "done", "c": "done"}
    assert [i.chunks_computed for i in first.items] == [4, 4, 4]
    for name, image in images.items():
        np.testing.assert_array_equal(classes(str(masks / f"{name}.zarr")), expected(image))
        assert verify_output(str(masks / f"{name}.zarr")).ok
        recorded = attrs(str(masks / f"{name}.zarr"))
        assert recorded["input_identity"] == input_identity(str(scenes / f"{name}.zarr"))
        assert recorded["batch"] == {"name": "nightly", "run": first.run}
    before = snapshot(masks)

    second = run_batch(spec, scheduler=cluster_address)
    assert states(second) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert sum(i.chunks_computed for i in second.items) == 0
    assert snapshot(masks) == before  # not one byte of any output rewritten
    saved = json.loads(Path(second.url).read_text())
    assert saved["run"] == second.run
    assert saved["totals"]["skipped"] == 3 and saved["totals"]["done"] == 0
    assert Path(second.url).parent == masks and first.url != second.url
    assert not list(tmp_path.rglob("*.lease"))

    images["d"] = scene(7)
    write_zarr(scenes / "d.zarr", images["d"], chunks=(32, 32))
    images["b"] = scene(8)
    zarr.open_array(str(scenes / "b.zarr"), mode="r+")[:] = images["b"]
    plan = run_batch(spec, dry_run=True)
    assert states(plan) == {"a": "skipped", "b": "changed", "c": "skipped", "d": "new"}
    assert [i.chunks_computed for i in plan.items] == [0, 4, 0, 4] and plan.url is None
    assert snapshot(masks) == before and len(list(masks.glob("*.json"))) == 2
    third = run_batch(spec, scheduler=cluster_address)
    assert states(third) == {"a": "skipped", "b": "changed", "c": "skipped", "d": "done"}
    for name, image in images.items():
        np.testing.assert_array_equal(classes(str(masks / f"{name}.zarr")), expected(image))
    after = snapshot(masks)
    assert {k: v for k, v in after.items() if k.startswith(("a.zarr", "c.zarr"))} == \
        {k: v for k, v in before.items() if k.startswith(("a.zarr", "c.zarr"))}
    assert attrs(str(masks / "b.zarr"))["input_identity"] == input_identity(str(scenes / "b.zarr"))


def test_a_changed_job_spec_is_refused_unless_overwrite(tmp_path, cluster_address):
    write_zarr(tmp_path / "in" / "a.zarr", scene(1), chunks=(32, 32))
    data = batch_dict({"urls": [str(tmp_path / "in" / "a.zarr")]}, f"{tmp_path}/out/{{stem}}.zarr")
    run_batch(BatchSpec.from_dict(data), scheduler=cluster_address)
    data["job"]["model"]["params"]["thresholds"] = [100]
    refused = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address)
    assert refused.failed and "made by a different job" in refused.items[0].error
    replaced = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address, overwrite=True)
    assert states(replaced) == {"a": "done"}
    np.testing.assert_array_equal(classes(f"{tmp_path}/out/a.zarr"),
                                  (scene(1)[0] > 100).astype(np.uint8))


def test_an_output_whose_attributes_were_changed_fails_alone_unless_overwrite(tmp_path,
                                                                             cluster_address):
    """The refusal says to run again with --overwrite: in a batch that must work too."""
    write_zarr(tmp_path / "in" / "a.zarr", scene(1), chunks=(32, 32))
    data = batch_dict({"urls": [str(tmp_path / "in" / "a.zarr")]}, f"{tmp_path}/out/{{stem}}.zarr")
    run_batch(BatchSpec.from_dict(data), scheduler=cluster_address)
    group = zarr.open_group(f"{tmp_path}/out/a.zarr", mode="r+")
    group.attrs["geoseg"] = {**group.attrs["geoseg"], "class_names": 5}
    refused = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address)
    assert refused.failed and "class_names = 5" in refused.items[0].error
    assert "--overwrite" in refused.items[0].error
    replaced = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address, overwrite=True)
    assert states(replaced) == {"a": "done"}
    np.testing.assert_array_equal(classes(f"{tmp_path}/out/a.zarr"), expected(scene(1)))


def test_glob_over_s3_uses_etags_and_leaks_no_secret(tmp_path, s3_server, cluster_address):
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server)
    images = {name: scene(seed) for seed, name in enumerate(("north", "south"), start=20)}
    for name, image in images.items():
        fs.put_file(write_geotiff(tmp_path / f"{name}.tif", image), f"geoseg/batch-in/{name}.tif")
    data = batch_dict({"glob": "s3://geoseg/batch-in/*.tif"}, "s3://geoseg/batch-out/{stem}.zarr",
                      storage_options=s3_server)
    said: list[str] = []
    first = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address, log=said.append)
    assert states(first) == {"north": "done", "south": "done"}
    assert all(i.input_identity.startswith("etag:") for i in first.items)
    for item, (name, image) in zip(first.items, images.items()):
        out = f"s3://geoseg/batch-out/{name}.zarr"
        np.testing.assert_array_equal(classes(out, s3_server), expected(image))
        assert attrs(out, s3_server)["input_identity"] == item.input_identity
    second = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address, log=said.append)
    assert states(second) == {"north": "skipped", "south": "skipped"}
    report = fs.cat_file(second.url.removeprefix("s3://")).decode()
    stored = json.dumps(attrs("s3://geoseg/batch-out/north.zarr", s3_server))
    index = write_batch_index(second, storage_options=s3_server, input_options=s3_server)
    assert index is not None and index.startswith("s3://geoseg/batch-out/")  # beside the report
    page = fs.cat_file(index.removeprefix("s3://")).decode()
    assert "(skipped)" not in page
    links = re.findall(r'<a href="([^"]+)">', page)  # each job's report, beside the index
    assert len(links) == 2 and all(fs.exists(f"geoseg/batch-out/{link}") for link in links)
    beside = [report_path(record_of(i.output, s3_server)) for i in second.items]  # as runs do:
    assert all(Path(page).read_text().startswith("<!doctype html>") for page in beside)  # runs --html links them
    everything = report + "\n".join(said) + stored + page
    assert s3_server["secret"] not in everything and s3_server["key"] not in everything
    assert not fs.glob("geoseg/batch-out/*.lease")


def test_catalog_items_by_id_with_relative_hrefs(tmp_path, cluster_address):
    images = {"S2A_0001": scene(31), "S2B_0002": scene(32)}
    features = []
    (tmp_path / "data").mkdir()
    for item_id, image in images.items():
        write_geotiff(tmp_path / "data" / f"{item_id.lower()}.tif", image)
        features.append({"type": "Feature", "id": item_id, "properties": {},
                         "assets": {"visual": {"href": f"data/{item_id.lower()}.tif"},
                                    "thumbnail": {"href": "nowhere.png"}}})
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    data = batch_dict({"catalog": str(catalog), "asset": "visual"}, f"{tmp_path}/masks/{{id}}.zarr")
    report = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address)
    assert [i.state for i in report.items] == ["done", "done"]
    for item_id, image in images.items():
        np.testing.assert_array_equal(classes(f"{tmp_path}/masks/{item_id}.zarr"), expected(image))

    data["inputs"]["asset"] = "analytic"
    with pytest.raises(BatchSpecError,
                       match="item 'S2A_0001' .* has no asset 'analytic'.*thumbnail.*visual"):
        plan_items(BatchSpec.from_dict(data))


def test_leased_output_is_left_alone_a_stale_lease_taken_over_and_wait_waits(
        tmp_path, cluster_address, monkeypatch):
    for name, seed in (("a", 41), ("b", 42)):
        write_zarr(tmp_path / "in" / f"{name}.zarr", scene(seed), chunks=(32, 32))
    out_a, out_b = f"{tmp_path}/out/a.zarr", f"{tmp_path}/out/b.zarr"
    other = Lease(out_a, owner="other-host-99-feedbeef", seconds=600)
    assert other.acquire()
    stale = LeaseRecord("dead-host-1-0", time.time() - 7200, time.time() - 3600)
    Path(lease_url(out_b)).write_bytes(stale.to_bytes())
    data = batch_dict({"glob": f"{tmp_path}/in/*.zarr"}, f"{tmp_path}/out/{{stem}}.zarr")

    report = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address)
    assert states(report) == {"a": "leased", "b": "done"} and not report.failed
    assert report.items[0].lease_holder == "other-host-99-feedbeef"
    assert not Path(out_a).exists()  # never touched
    assert not Path(lease_url(out_b)).exists()  # taken over, then released

    refused = threading.Event()  # released 1.5 s after the batch first found it held, however
    try_acquire = Lease._try_acquire  # long the batch took to get there

    def watched(lease: Lease) -> bool:
        took = try_acquire(lease)
        if not took and lease.owner != other.owner and not refused.is_set():
            refused.set()
            threading.Timer(1.5, other.release).start()
        return took

    monkeypatch.setattr(Lease, "_try_acquire", watched)
    waited = run_batch(BatchSpec.from_dict({**data, "wait": 60}), scheduler=cluster_address)
    assert states(waited) == {"a": "done", "b": "skipped"}
    assert waited.items[0].seconds >= 1.0
    np.testing.assert_array_equal(classes(out_a), expected(scene(41)))



def test_a_job_whose_lease_is_taken_over_stops_and_fails(tmp_path, cluster_address):
    write_zarr(tmp_path / "in" / "big.zarr", scene(71, size=512), chunks=(64, 64))
    out = f"{tmp_path}/out/big.zarr"
    data = batch_dict({"glob": f"{tmp_path}/in/*.zarr"}, f"{tmp_path}/out/{{stem}}.zarr",
                      lease_seconds=0.3)
    data["job"]["output"]["chunks"] = [16, 16]  # 1024 tasks: far longer than a renewal period
    thief = LeaseRecord("other-host-7-cafe", time.time(), time.time() + 600).to_bytes()

    def steal() -> None:  # as soon as the batch holds the lease, another run overwrites it
        deadline = time.time() + 60
        while not Path(lease_url(out)).exists() and time.time() < deadline:
            time.sleep(0.001)
        Path(lease_url(out)).write_bytes(thief)

    stealer = threading.Thread(target=steal)
    stealer.start()
    report = run_batch(BatchSpec.from_dict(data), scheduler=cluster_address)
    stealer.join()
    assert states(report) == {"big": "failed"} and report.failed
    assert "taken over by another run" in report.items[0].error
    assert Path(lease_url(out)).read_bytes() == thief  # the new holder's lease is left alone


def write_batch_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GEOSEG_TORCH_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "geoseg.cli", "batch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_concurrent_batch_processes_write_each_output_exactly_once(tmp_path, cluster_address):
    images = {f"s{i}": scene(50 + i, size=128) for i in range(6)}
    for name, image in images.items():
        write_zarr(tmp_path / "in" / f"{name}.zarr", image, chunks=(32, 32))
    spec = write_batch_yaml(tmp_path / "batch.yaml", batch_dict(
        {"glob": f"{tmp_path}/in/*.zarr"}, f"{tmp_path}/out/{{stem}}.zarr", concurrency=2))

    procs = [cli(str(spec), "--scheduler", cluster_address) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    reports = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("batch-*.json"))]
    assert len(reports) == 2 and reports[0]["run"] != reports[1]["run"]
    for name, image in images.items():
        out = f"{tmp_path}/out/{name}.zarr"
        by_run = {r["run"]: next(i["state"] for i in r["items"] if i["output"] == out)
                  for r in reports}
        writers = [run for run, state in by_run.items() if state == "done"]
        assert len(writers) == 1, by_run
        assert set(by_run.values()) - {"done"} <= {"skipped", "leased"}, by_run
        assert attrs(out)["batch"]["run"] == writers[0]
        assert verify_output(out).ok
        np.testing.assert_array_equal(classes(out), expected(image))
    assert not list((tmp_path / "out").glob("*.lease"))


def test_cli_a_corrupt_input_fails_alone_with_exit_1_and_a_dry_run_writes_nothing(
        tmp_path, cluster_address):
    (tmp_path / "in").mkdir()
    for name, seed in (("good1", 61), ("good2", 62)):
        write_geotiff(tmp_path / "in" / f"{name}.tif", scene(seed))
    (tmp_path / "in" / "broken.tif").write_bytes(b"II*\x00" + os.urandom(2000))
    spec = write_batch_yaml(tmp_path / "batch.yaml", batch_dict(
        {"glob": f"{tmp_path}/in/*.tif"}, f"{tmp_path}/out/{{stem}}.zarr",
        report=f"{tmp_path}/reports/{{started}}-{{run}}.json"))

    plan = geoseg("batch", str(spec), "--dry-run")  # the command, in this process
    assert plan.returncode == 1, plan.stderr
    assert "broken" in plan.stderr and "new" in plan.stderr and "failed" in plan.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "reports").exists()

    done = geoseg("batch", str(spec), "--scheduler", cluster_address)
    assert done.returncode == 1, done.stderr
    [report_file] = (tmp_path / "reports").glob("*.json")
    report = json.loads(report_file.read_text())
    by_stem = {Path(i["input"]).stem: i for i in report["items"]}
    assert {k: v["state"] for k, v in by_stem.items()} == {"broken": "failed", "good1": "done",
                                                           "good2": "done"}
    assert "broken.tif" in by_stem["broken"]["error"]
    assert report["totals"] == {"inputs": 3, "done": 2, "skipped": 0, "changed": 0, "failed": 1,
                                "leased": 0}
    assert not (tmp_path / "out" / "broken.zarr").exists()
    for name, seed in (("good1", 61), ("good2", 62)):
        np.testing.assert_array_equal(classes(f"{tmp_path}/out/{name}.zarr"), expected(scene(seed)))


@pytest.mark.parametrize(("change", "message"), [
    ({"inputs": {"glob": "x/*.tif", "urls": ["a.tif"]}}, "exactly one of glob"),
    ({"inputs": {"catalog": "c.json"}}, "asset together with catalog"),
    ({"output": {"url_template": "out/{id}.zarr"}}, "uses {id}, which only catalog items have"),
    ({"output": {"url_template": "out/{date}.zarr"}},
     r"placeholders \{stem\}, \{name\}, \{id\} only"),
    ({"job": {"input": {"url": "a.tif"}, "model": {"method": "otsu"}}},
     "job.input.url: .*no url here"),
    ({"concurrency": 0}, "concurrency: received 0"),
    ({"concurrency": 100_000}, r"concurrency: received 100000 \(int\); expected less than or equal to 256"),
    ({"output": {"url_template": ""}}, "url_template: .*expected a template such as"),
    ({"output": {"url_template": "out/../x/{stem}.zarr"}},
     r"url_template: .*expected an allowed output location; .*'\.\.' segment"),
    ({"output": {"url_template": "http://example.com/{stem}.zarr"}},
     "url_template: .*http:// and https:// are read-only"),
    ({"inputs": {"urls": ["data/*.tif"]}},
     r"inputs.urls: .*expected input URLs, not patterns \('data/\*.tif'"),
    ({"colour": "blue"}, "colour: unknown key; allowed keys here: name, inputs, job"),
])
def test_spec_errors_name_the_key(tmp_path, change, message):
    data = {**batch_dict({"glob": f"{tmp_path}/*.tif"}, f"{tmp_path}/out/{{stem}}.zarr"), **change}
    with pytest.raises(BatchSpecError, match=message):
        BatchSpec.from_dict(data, "batch.yaml")


def test_a_batch_spec_is_read_as_carefully_as_a_job_spec(tmp_path):
    path = tmp_path / "batch.yaml"
    path.write_bytes(b"name: nightly\ninputs: {glob: caf\xe9/*.tif}\n")
    with pytest.raises(BatchSpecError, match="is not UTF-8 text: byte 0xe9 on line 2"):
        load_batch(path)
    path.write_text('inputs: {glob: "s3://b/*.tif", storage_options: {secret: "QUOTED-SECRET-7c1\n')
    with pytest.raises(BatchSpecError, match="is not valid YAML: line 2, column 1") as err:
        load_batch(path)
    assert "QUOTED-SECRET-7c1" not in str(err.value)


def test_a_batch_spec_refuses_a_url_that_cannot_be_parsed_without_quoting_its_secret(tmp_path):
    """A '/' in the user info makes the rest of it a path: a library would quote it."""
    path = tmp_path / "batch.yaml"
    for url, said in [("s3://me:wJalrXUtnFEMI/K7MDENGbPxRfi@bucket/a.tif",
                       "inputs.urls.0 s3://bucket/a.tif: received a URL with credentials in it"),
                      ("https://me:wJalrXUtnFEMI/K7MDENGbPxRfi@host/a.tif",
                       "inputs.urls.0: received a URL that cannot be parsed")]:
        path.write_text(f"inputs: {{urls: ['{url}']}}\n"
                        "output: {url_template: 'out/{stem}.zarr'}\njob: {model: {method: otsu}}\n")
        with pytest.raises(BatchSpecError, match=said) as err:
            load_batch(path)
        assert "wJalrXUtnFEMI" not in str(err.value) and "K7MDENGbPxRfi" not in str(err.value)


def test_a_batch_spec_with_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "batch.yaml"
    path.write_text("inputs: {glob: in/*.tif}\noutput: {url_template: 'out/{stem}.zarr'}\n"
                    "job:\n  model: {method: otsu}\n  model: {method: kmeans}\n")
    with pytest.raises(BatchSpecError, match="line 5, column 3: received the key 'model' a second"):
        load_batch(path)


def test_a_batch_specs_storage_options_are_hidden_from_every_message(tmp_path):
    data = batch_dict({"glob": "s3://b/*.tif"}, "s3://b/out/{stem}.zarr",
                      storage_options={"secret": "BATCH-SECRET-4e2"}, colour="blue")
    with pytest.raises(BatchSpecError, match="colour: unknown key"):
        load_batch(write_batch_yaml(tmp_path / "batch.yaml", data))
    assert "BATCH-SECRET-4e2" not in redact.scrub("a library failed with BATCH-SECRET-4e2")


def test_two_inputs_with_one_output_are_refused_before_anything_runs(tmp_path):
    for folder in ("x", "y"):
        write_zarr(tmp_path / folder / "scene.zarr", scene(1))
    data = batch_dict({"glob": f"{tmp_path}/*/scene.zarr"}, f"{tmp_path}/out/{{stem}}.zarr")
    spec = write_batch_yaml(tmp_path / "batch.yaml", data)
    with pytest.raises(BatchSpecError, match=r"x/scene.zarr, .*y/scene.zarr -> .*out/scene.zarr"):
        run_batch(load_batch(spec))  # no scheduler: it would start a cluster, were the spec fine
    result = geoseg("batch", str(spec))  # the command, in this process: refused before it starts one
    assert result.returncode == 2 and "would write the same output" in result.stderr
    assert not (tmp_path / "out").exists()



def test_cluster_and_scheduler_together_are_refused(tmp_path):
    data = batch_dict({"glob": f"{tmp_path}/*.zarr"}, f"{tmp_path}/o/{{stem}}.zarr")
    spec = BatchSpec.from_dict(data)
    with pytest.raises(ClusterConfigError, match="both --cluster slurm and --scheduler tcp"):
        run_batch(spec, cluster="slurm", scheduler="tcp://127.0.0.1:1")

def test_outputs_of_a_glob_in_the_input_folder_are_not_taken_as_inputs(tmp_path):
    write_zarr(tmp_path / "a.zarr", scene(1))
    write_zarr(tmp_path / "a-mask.zarr", scene(2))  # what an earlier run of this batch wrote
    spec = BatchSpec.from_dict(batch_dict({"glob": f"{tmp_path}/*.zarr"},
                                          f"{tmp_path}/{{stem}}-mask.zarr"))
    assert [Path(i.url).name for i in plan_items(spec)] == ["a.zarr"]
    onto_itself = BatchSpec.from_dict(batch_dict({"glob": f"{tmp_path}/a.zarr"},
                                                 f"{tmp_path}/{{name}}"))
    with pytest.raises(BatchSpecError, match="onto itself"):
        plan_items(onto_itself)


def test_identity_follows_content_changes(tmp_path, s3_server):
    path = tmp_path / "scene.tif"
    write_geotiff(path, scene(1))
    auto, exact = input_identity(str(path)), input_identity(str(path), method="checksum")
    assert auto.startswith("stat:") and exact.startswith("sha256:")
    stat = path.stat()
    write_geotiff(path, scene(2))  # same size, other pixels
    assert path.stat().st_size == stat.st_size
    assert input_identity(str(path)) != auto
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only a
    assert input_identity(str(path)) == auto                   # checksum sees the change
    assert input_identity(str(path), method="checksum") != exact

    store = write_zarr(tmp_path / "scene.zarr", scene(3), chunks=(32, 32))
    tree = input_identity(store)
    assert tree.startswith("tree:") and input_identity(store) == tree
    zarr.open_array(store, mode="r+")[0, :32, :32] = 0  # one chunk rewritten
    assert input_identity(store) != tree

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server)
    fs.put_file(str(path), "geoseg/identity/scene.tif")
    etag = input_identity("s3://geoseg/identity/scene.tif", s3_server)
    assert etag.startswith("etag:") and s3_server["key"] not in etag
    fs.put_file(write_geotiff(tmp_path / "other.tif", scene(4)), "geoseg/identity/scene.tif")
    assert input_identity("s3://geoseg/identity/scene.tif", s3_server) != etag


@pytest.mark.parametrize(("same_job", "same_input", "status", "decision"), [
    (True, True, "complete", "skipped"), (True, True, "interrupted", "resume"),
    (True, False, "complete", "changed"), (False, True, "complete", "other-job"),
    (False, False, "complete", "other-job"), (False, False, "interrupted", "other-job")])
def test_a_changed_input_never_lets_one_job_replace_another_jobs_output(same_job, same_input, status,
                                                                       decision):
    """Replacing on a changed input is for the job that wrote the output; another job's output
    is refused (other-job) unless --overwrite, whatever happened to the input."""
    from geoseg.jobs.batch import decide

    attrs = {"job_identity": "job-a", "input_identity": "stat:size=1;mtime=1", "status": status}
    got = decide(attrs, "job-a" if same_job else "job-b",
                 "stat:size=1;mtime=1" if same_input else "stat:size=1;mtime=2")
    assert got == decision


def test_outputs_named_from_a_signed_url_carry_no_query(tmp_path):
    """A signed URL keeps its signature in the query: it must reach no output path or id."""
    signed = "https://example.com/scenes/in.tif?X-Amz-Signature=SIGSECRET123&X-Amz-Expires=60"
    spec = BatchSpec.from_dict(batch_dict({"urls": [signed]}, f"{tmp_path}/o/{{name}}-{{stem}}.zarr"))
    [item] = plan_items(spec)
    assert item.url == signed  # read as given
    assert item.output == f"{tmp_path}/o/in.tif-in.zarr" and item.id == "in"


def test_an_output_stopped_after_its_last_chunk_is_finished_and_reported_done(tmp_path):
    """A batch stopped between an output's last chunk and its end leaves it `interrupted` with
    every chunk written; the next batch finished it (status complete) but reported `skipped`,
    which is for outputs found complete."""
    from geoseg.io.output import OutputTarget

    scenes, masks = tmp_path / "scenes", tmp_path / "masks"
    write_zarr(scenes / "a.zarr", scene(1), chunks=(32, 32))
    spec = BatchSpec.from_dict(batch_dict({"glob": f"{scenes}/*.zarr"}, f"{masks}/{{stem}}.zarr"))
    assert states(run_batch(spec, cluster="threads")) == {"a": "done"}
    OutputTarget(str(masks / "a.zarr")).finalize({"status": "interrupted"})  # as the stop left it
    again = run_batch(spec, cluster="threads")
    assert states(again) == {"a": "done"} and again.items[0].chunks_computed == 0
    assert attrs(str(masks / "a.zarr"))["status"] == "complete"
    assert states(run_batch(spec, cluster="threads")) == {"a": "skipped"}
