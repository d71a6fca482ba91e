"""Relative paths in a job or batch spec are relative to the spec file, not to the folder
the command is run from."""

from __future__ import annotations

from pathlib import Path

import yaml

from geoseg.jobs.batch_spec import load_batch
from geoseg.jobs.spec import load_job, relative_to_spec


def test_relative_local_paths_join_the_spec_folder_and_nothing_else_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    spec = {"input": {"url": "data/in.zarr", "storage_options": {"path": "keep/me"}},
            "model": {"ensemble": {"members": [{"path": "m.safetensors"}, {"path": "builtin:demo-unet"}]}},
            "output": {"url": "s3://bucket/out.zarr"}, "runs_dir": "/abs/runs",
            "evaluate": {"reference": {"url": "../labels.tif"}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    resolved = relative_to_spec(spec, tmp_path)
    assert resolved["input"]["url"] == str(tmp_path / "data" / "in.zarr")
    assert resolved["input"]["storage_options"] == {"path": "keep/me"}
    assert [m["path"] for m in resolved["model"]["ensemble"]["members"]] == [
        str(tmp_path / "m.safetensors"), "builtin:demo-unet"]
    assert resolved["output"]["url"] == "s3://bucket/out.zarr" and resolved["runs_dir"] == "/abs/runs"
    assert resolved["evaluate"]["reference"]["url"] == str(tmp_path.parent / "labels.tif")
    assert load_job(tmp_path / "job.yaml").input.url == str(tmp_path / "data" / "in.zarr")


def test_a_batch_spec_resolves_its_glob_urls_and_template(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    batch = {"name": "b", "inputs": {"urls": ["a.tif", "s3://bucket/b.tif"]},
             "job": {"model": {"path": "builtin:demo-unet"}},
             "output": {"url_template": "out/{stem}.zarr"}}
    (tmp_path / "batch.yaml").write_text(yaml.safe_dump(batch))
    spec = load_batch(tmp_path / "batch.yaml")
    assert spec.inputs.urls == [str(tmp_path / "a.tif"), "s3://bucket/b.tif"]
    assert spec.output.url_template == str(tmp_path / "out" / "{stem}.zarr")


def test_the_example_jobs_name_the_demo_output_beside_the_repository_root():
    root = Path(__file__).resolve().parents[2]
    job = load_job(root / "jobs" / "demo.yaml")
    assert Path(job.input.url).resolve() == root / "demo-output" / "scene.zarr"
