"""Checkpoints inside an epoch (``training.checkpoint_steps``): written complete, resumed at the
next step with the weights and metrics of an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geoseg.training import TrainSpecError, train
from geoseg.training.checkpoint import load_checkpoint
from geoseg.training.spec import TrainSpec
from tests.training.conftest import tiny_spec, zarr_pair

STEPS = 4  # stopped at step 3 of epoch 2: neither a multiple of checkpoint_steps 2 nor its end


def quiet(_: str) -> None:
    pass


def _spec(scene_zarr: str, out: Path, **training: object) -> dict:
    # keep: last, so the final weights are those of the last step whatever the metrics
    return tiny_spec([zarr_pair(scene_zarr)], out, training__epochs=2, training__steps_per_epoch=STEPS,
                     training__batch_size=2, training__keep="last", **training)


def _same_metrics(a: list[dict], b: list[dict]) -> bool:
    keys = ("epoch", "step", "train_loss", "val_miou", "val_iou", "lr", "best")
    return [{k: m[k] for k in keys} for m in a] == [{k: m[k] for k in keys} for m in b]


def test_a_run_stopped_mid_epoch_resumes_at_the_next_step_with_identical_weights(tmp_path, scene_zarr):
    reference = train(_spec(scene_zarr, tmp_path / "ref"), log=quiet)  # no mid-epoch checkpoints

    spec = _spec(scene_zarr, tmp_path / "run", training__checkpoint_steps=2)
    stopped = train(spec, max_steps=STEPS + 3, log=quiet)  # epoch 2, step 3: checkpoint at step 2
    assert stopped.status == "interrupted" and stopped.model_url is None and stopped.epochs_run == 1
    folder = tmp_path / "run" / "model.run" / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["state-0001-000002.json",
                                                        "state-0001-000002.safetensors"]
    meta = json.loads((folder / "state-0001-000002.json").read_text())
    assert meta["tensors_sha256"] == hashlib.sha256(
        (folder / "state-0001-000002.safetensors").read_bytes()).hexdigest()
    assert meta["state"]["epoch"] == 1 and meta["state"]["step"] == STEPS + 2
    progress = meta["epoch_progress"]
    assert progress["step"] == 2 and progress["loss_count"] == 2 and progress["loss_sum"] > 0
    assert progress["numpy_rng"]["bit_generator"] == "PCG64"
    assert progress["numpy_rng"] != meta["numpy_rng"]  # from before the epoch's chips were planned

    lines: list[str] = []
    resumed = train(spec, log=lines.append)
    assert "tiny: resuming at epoch 2 of 2, step 3 of 4" in lines
    assert resumed.status == "complete" and resumed.resumed_from == 1
    assert [m["epoch"] for m in resumed.history] == [1, 2]
    assert _same_metrics(resumed.history, reference.history)
    assert resumed.model_sha256 == reference.model_sha256
    ours, theirs = load_file(resumed.model_url), load_file(reference.model_url)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    record = json.loads(Path(resumed.record_url).read_text())
    assert [(r["after_epoch"], r.get("epoch"), r.get("step")) for r in record["resumes"]] == [(1, 2, 3)]
    assert sorted(p.name for p in folder.iterdir()) == ["state-0002.json", "state-0002.safetensors"]


def test_checkpoints_inside_an_epoch_replace_older_ones_and_epoch_end_ones_stay_as_they_were(
        tmp_path, scene_zarr):
    spec = _spec(scene_zarr, tmp_path, training__checkpoint_steps=2)
    first = train(spec, max_epochs=1, log=quiet)
    folder = Path(first.run_dir) / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["state-0001.json", "state-0001.safetensors"]
    meta = json.loads((folder / "state-0001.json").read_text())
    assert meta["format"] == "geoseg-train-checkpoint/1" and "epoch_progress" not in meta
    assert load_checkpoint(str(folder)).progress is None

    spec["training"]["checkpoint_steps"] = 1  # a neutral key: the same run goes on
    lines: list[str] = []
    second = train(spec, max_steps=STEPS + 3, log=lines.append)
    assert second.status == "interrupted" and "tiny: resuming after epoch 1 of 2" in lines
    assert sorted(p.name for p in folder.iterdir()) == ["state-0001-000003.json",
                                                        "state-0001-000003.safetensors"]
    checkpoint = load_checkpoint(str(folder))
    assert checkpoint.state.epoch == 1 and checkpoint.progress.step == 3


@pytest.mark.parametrize(("value", "expected"), [
    (0, "training.checkpoint_steps: received 0 (int); expected greater than or equal to 1"),
    (2.5, "training.checkpoint_steps: received 2.5 (float); expected a valid integer"),
    ("often", "training.checkpoint_steps: received 'often' (str); expected a valid integer"),
])
def test_checkpoint_steps_must_be_a_positive_integer(tmp_path, value, expected):
    spec = tiny_spec([zarr_pair("scene.zarr")], tmp_path, training__checkpoint_steps=value)
    with pytest.raises(TrainSpecError) as err:
        TrainSpec.from_dict(spec)
    assert expected in str(err.value)
