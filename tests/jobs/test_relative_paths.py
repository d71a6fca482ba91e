"""Relative paths in a spec (job, batch, training, sweep) are relative to the spec file, not
to the folder the command is run from."""

from __future__ import annotations

from pathlib import Path

import yaml

from geoseg.core.spec import relative_to_spec
from geoseg.jobs.batch_spec import load_batch
from geoseg.jobs.spec import load_job


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


def _train_spec(image: str, model: str) -> dict:
    pair = {"image": {"url": image, "variable": "image"}, "labels": {"url": image, "variable": "labels"}}
    return {"name": "t", "data": {"train": [pair], "classes": ["a", "b"]},
            "model": {"architecture": "unet", "config": {"depth": 2, "width": 4}},
            "output": {"model": model, "run_dir": "runs/t"}}


def test_a_training_spec_resolves_its_rasters_and_outputs_like_a_job_spec(tmp_path, monkeypatch):
    from geoseg.training import load_train_spec

    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(_train_spec("../scene.zarr", "out/m.safetensors")))
    spec = load_train_spec(tmp_path / "train.yaml")
    assert spec.data.train[0].image.url == str(tmp_path.parent / "scene.zarr")
    assert spec.data.train[0].labels.url == str(tmp_path.parent / "scene.zarr")
    assert spec.output.model == str(tmp_path / "out" / "m.safetensors")
    assert spec.output.run_url == str(tmp_path / "runs" / "t")
    assert spec.model.architecture == "unet"  # a section named model is not a path


def test_a_sweep_resolves_its_base_and_folder_and_the_base_its_own_paths(tmp_path, monkeypatch):
    from geoseg.training import load_sweep_spec
    from geoseg.training.sweeps import make_trials

    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "base.yaml").write_text(yaml.safe_dump(_train_spec("data/s.zarr", "m.safetensors")))
    sweep = {"name": "s", "base": "specs/base.yaml", "method": "grid",
             "parameters": {"training.lr": [0.001, 0.01]}, "output": {"dir": "trials"}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    trials = make_trials(load_sweep_spec(tmp_path / "sweep.yaml"))
    assert len(trials) == 2
    assert trials[0].spec.data.train[0].image.url == str(tmp_path / "specs" / "data" / "s.zarr")
    assert trials[1].spec.output.model == str(tmp_path / "trials" / "trial-001" / "model.safetensors")

    inline = {**sweep, "base": _train_spec("data/s.zarr", "m.safetensors")}  # joins the sweep's folder
    (tmp_path / "inline.yaml").write_text(yaml.safe_dump(inline))
    trial = make_trials(load_sweep_spec(tmp_path / "inline.yaml"))[0]
    assert trial.spec.data.train[0].image.url == str(tmp_path / "data" / "s.zarr")


def test_the_example_training_and_sweep_specs_name_the_demo_output_from_any_folder(tmp_path, monkeypatch):
    from geoseg.training import load_sweep_spec, load_train_spec
    from geoseg.training.sweeps import make_trials

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    spec = load_train_spec(root / "jobs" / "train-demo.yaml")
    assert Path(spec.data.train[0].image.url) == root / "demo-output" / "scene.zarr"
    assert Path(spec.output.model) == root / "runs" / "demo-train" / "model.safetensors"
    trials = make_trials(load_sweep_spec(root / "jobs" / "sweep-demo.yaml"))
    assert Path(trials[0].spec.data.validation[0].labels.url) == root / "demo-output" / "scene.zarr"
    assert Path(trials[0].spec.output.run_url) == root / "runs" / "demo-sweep" / "trial-000"
