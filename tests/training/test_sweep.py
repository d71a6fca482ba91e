"""A sweep on a real multi-process cluster: one task per trial, ranked by validation mIoU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import geoseg
from geoseg.errors import TrainSpecError
from geoseg.training import sweep, train
from tests.training.conftest import tiny_spec, zarr_pair


def test_grid_sweep_runs_each_trial_as_a_task_and_ranks_them(tmp_path, scene_zarr, cluster_address):
    base = tiny_spec([zarr_pair(scene_zarr)], tmp_path / "unused")
    lines: list[str] = []
    spec = {"name": "tiny-sweep", "base": base, "method": "grid",
            "parameters": {"training.lr": [0.002, 0.02], "model.config.width": [4, 6]},
            "output": {"dir": str(tmp_path / "sweep")}}
    result = sweep(spec, scheduler=cluster_address, log=lines.append)

    assert len(result.trials) == 4 and all(t.status == "complete" for t in result.trials)
    mious = [t.val_miou for t in result.trials]
    assert mious == sorted(mious, reverse=True)
    assert {t.worker for t in result.trials} <= set(_workers(cluster_address)) and all(t.worker for t in result.trials)
    assert sorted(t.params["training.lr"] for t in result.trials) == [0.002, 0.002, 0.02, 0.02]
    assert result.best_model == result.trials[0].model_url and not result.gpu
    assert geoseg.load_model(result.best_model).info.config["width"] == result.trials[0].params["model.config.width"]

    rows = result.table.splitlines()
    assert rows[0].split() == ["rank", "trial", "val", "mIoU", "best", "epoch", "epochs", "training.lr",
                               "model.config.width", "status"]
    assert [r.split()[1] for r in rows[2:]] == [t.name for t in result.trials]
    assert [float(r.split()[2]) for r in rows[2:]] == [round(m, 4) for m in mious]
    for trial in result.trials:  # each trial keeps its own run record
        record = json.loads(Path(trial.record_url).read_text())
        assert record["status"] == "complete" and record["name"] == trial.name
        assert record["spec"]["training"]["lr"] == trial.params["training.lr"]
        assert record["model"]["sha256"] == trial.model_sha256
    summary = json.loads(Path(result.record_url).read_text())
    assert summary["best_model"] == result.best_model and len(summary["trials"]) == 4
    assert (tmp_path / "sweep" / "table.txt").read_text().strip() == result.table
    assert len([line for line in lines if ": complete, val mIoU" in line]) == 4

    again = sweep(spec, scheduler=cluster_address, log=lines.append)  # finished trials are reused
    assert [t.model_sha256 for t in again.trials] == [t.model_sha256 for t in result.trials]

    before = Path(result.record_url).read_text()
    inserted = {**spec, "parameters": {**spec["parameters"], "training.lr": [0.002, 0.01, 0.02]}}
    with pytest.raises(TrainSpecError, match=r"2 trial folder\(s\) hold runs of other values than "
                                             r"this spec's trials of the same number: trial-002 \(its "
                                             r"run differs in training.lr; trial 2 is now"):
        sweep(inserted, scheduler=cluster_address, log=lines.append)  # values renumber the trials
    assert not (tmp_path / "sweep" / "trial-004").exists()  # nothing ran
    assert Path(result.record_url).read_text() == before  # nor was sweep.json rewritten


def _workers(address: str) -> list[str]:
    from distributed import Client

    with Client(address) as client:
        return list(client.scheduler_info()["workers"])


def test_a_failed_trial_is_listed_last_with_its_error(tmp_path, scene_zarr, cluster_address):
    base = tiny_spec([zarr_pair(scene_zarr)], tmp_path / "unused", training__epochs=1)
    spec = {"name": "half-broken", "base": base, "parameters": {"training.chip": [34, 32]},
            "output": {"dir": str(tmp_path / "sweep")}}
    result = sweep(spec, scheduler=cluster_address, log=lambda _: None)
    assert [t.status for t in result.trials] == ["complete", "failed"]
    failed = result.trials[1]
    assert failed.params == {"training.chip": 34} and failed.val_miou is None
    assert "TrainSpecError" in failed.error and "training.chip: received 34" in failed.error
    assert result.table.splitlines()[-1].split()[2] == "-" and "failed: TrainSpecError" in result.table
    assert result.best_model == result.trials[0].model_url


def test_the_command_exits_1_when_a_trial_failed(tmp_path, scene_zarr, cluster_address):
    """The failed trial is ranked last, and a nightly script still sees the failure."""
    from tests.cli import geoseg as geoseg_cli

    base = tiny_spec([zarr_pair(scene_zarr)], tmp_path / "unused", training__epochs=1)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "half-broken", "base": base,
                                    "parameters": {"training.chip": [34, 32]},
                                    "output": {"dir": str(tmp_path / "sweep")}}))
    result = geoseg_cli("sweep", str(path), "--scheduler", cluster_address)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 trial(s) failed: half-broken-000; a rerun resumes them" in " ".join(result.stderr.split())


@pytest.mark.parametrize(("search", "said"), [
    ({"method": "random", "trials": 10**12, "parameters": {"training.lr": {"low": 1e-4, "high": 1e-2}}},
     "trials: received 1,000,000,000,000 trials; expected at most 10,000"),
    ({"method": "grid", "parameters": {f"model.config.p{i}": list(range(10)) for i in range(5)}},
     "parameters: the grid's combinations: received 100,000 trials; expected at most 10,000"),
])
def test_a_sweep_of_more_trials_than_it_could_run_is_refused_before_any_is_built(tmp_path, search,
                                                                                  said):
    """Every trial's spec was built (a network each) before the first ran: 1e12 random trials
    printed nothing for minutes while memory grew."""
    from geoseg.training.sweeps import SweepSpec

    spec = {"name": "huge", "base": {"model": {}}, "output": {"dir": str(tmp_path)}, **search}
    with pytest.raises(TrainSpecError, match=said):
        SweepSpec.from_dict(spec, "sweep.yaml")


def test_a_sweep_fine_tunes_a_model_file_as_geoseg_train_does(tmp_path, scene_zarr, cluster_address):
    """A base spec that fine-tunes without stating model.config trains alone, so its trials
    must too: each trial's spec reached the workers with every default stated, and the stated
    model.config {} contradicted the file's config."""
    base = tiny_spec([zarr_pair(scene_zarr)], tmp_path / "unused", training__epochs=1,
                     model={"init": "builtin:demo-unet"})
    alone = geoseg.load_model(train(base, log=lambda _: None).model_url).info
    spec = {"name": "fine-sweep", "base": base, "parameters": {"training.lr": [0.01, 0.002]},
            "output": {"dir": str(tmp_path / "sweep")}}
    result = sweep(spec, scheduler=cluster_address, log=lambda _: None)
    assert [t.status for t in result.trials] == ["complete", "complete"], [t.error for t in result.trials]
    for trial in result.trials:
        info = geoseg.load_model(trial.model_url).info
        assert (info.architecture, info.config) == (alone.architecture, alone.config)
        assert {k: info.config[k] for k in ("depth", "width")} == {"depth": 3, "width": 16}
        record = json.loads(Path(trial.record_url).read_text())
        assert record["spec"]["model"]["init"] == "builtin:demo-unet"
