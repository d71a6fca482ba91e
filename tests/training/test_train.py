"""The trainer end to end on tiny scenes: lazy chip reads, model files, records, seeds, resume."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr
from safetensors.torch import load_file

import geoseg
from geoseg.demo import write_scene
from geoseg.errors import OutputExistsError
from geoseg.training import CheckpointError, TrainingDataError, TrainSpecError, train
from geoseg.training import trainer as trainer_module
from geoseg.training.loop import Loop
from tests.training.conftest import CHIP, SIZE, tiny_spec, zarr_pair

HEX64 = set("0123456789abcdef")


def quiet(_: str) -> None:
    pass


def test_zarr_run_reads_chips_lazily_and_writes_model_and_record(tmp_path, scene, scene_zarr, read_log):
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path)
    result = train(spec, log=quiet)

    # Every read is one window no larger than a chip: chips, statistics windows, validation tiles.
    assert read_log.largest() <= CHIP
    images = [c for c in read_log.calls if c[0] == "ZarrSource"]
    expected = 6 + 2 * 3 * 4 + 5  # stats windows + epochs * steps * batch + validation windows
    assert len(images) == 2 * expected  # one image read and one labels read each

    model = geoseg.load_model(result.model_url, device="cpu")
    train_rows = scene.image[:, : int(SIZE * 0.8)].reshape(3, -1).astype(np.float64)
    assert np.allclose(model.info.mean, train_rows.mean(1), rtol=0.15)
    assert np.allclose(model.info.std, train_rows.std(1), rtol=0.3)
    assert model.info.config == {"depth": 2, "width": 4, "in_channels": 3, "num_classes": 5}
    assert model.info.bands == ("red", "green", "blue") and model.n_classes == 5
    assert model.predict_image(scene.image[:, :64, :64]).shape == (5, 64, 64)

    record = json.loads(Path(result.record_url).read_text())
    assert record["status"] == "complete" and result.status == "complete"
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert all(0.0 <= e["val_miou"] <= 1.0 and e["train_loss"] > 0 for e in record["epochs"])
    assert record["model"]["sha256"] == model.info.sha256 == result.model_sha256
    assert record["normalization"]["source"] == "measured" and record["normalization"]["windows"] == 6
    assert record["normalization"]["mean"] == pytest.approx(list(model.info.mean))
    train_entry = record["data"]["train"][0]
    for role in ("image", "labels"):
        checksum = train_entry[role]["checksum"]
        assert checksum["method"] == "content" and set(checksum["sha256"]) <= HEX64 and checksum["files"] > 1
    assert train_entry["image"]["checksum"] != train_entry["labels"]["checksum"]
    assert train_entry["region"] == [0, 128, 0, SIZE]
    assert record["data"]["validation"][0]["region"] == [128, SIZE, 0, SIZE]
    assert record["spec"]["training"]["lr"] == 0.01 and record["resolved"]["total_steps"] == 6

    summary = model.info.extra["training"]
    assert summary["run_record"] == result.record_url and summary["seed"] == 0
    assert summary["validation"]["best_val_miou"] == pytest.approx(result.best_val_miou)
    assert summary["data"]["train"][0]["image_sha256"] == train_entry["image"]["checksum"]["sha256"]


def test_checkpoints_are_safetensors_and_json_not_pickle(tmp_path, scene_zarr):
    result = train(tiny_spec([zarr_pair(scene_zarr)], tmp_path), log=quiet)
    files = sorted(p.name for p in (Path(result.run_dir) / "checkpoint").iterdir())
    assert files == ["state-0002.json", "state-0002.safetensors"]  # older epochs removed
    tensors = load_file(str(Path(result.run_dir) / "checkpoint" / "state-0002.safetensors"))
    assert {"rng.torch"} <= set(tensors) and any(k.startswith("optim.") for k in tensors)
    assert any(k.startswith("best.") for k in tensors) and any(k.startswith("model.") for k in tensors)
    meta = json.loads((Path(result.run_dir) / "checkpoint" / "state-0002.json").read_text())
    assert meta["state"]["epoch"] == 2 and meta["numpy_rng"]["bit_generator"] == "PCG64"
    assert meta["tensors_sha256"] == hashlib.sha256(
        (Path(result.run_dir) / "checkpoint" / "state-0002.safetensors").read_bytes()).hexdigest()


def test_geotiff_pairs_with_explicit_validation_window(tmp_path, scene_tiffs, read_log):
    image, labels = scene_tiffs
    pair = {"image": {"url": image}, "labels": {"url": labels}}
    spec = tiny_spec([{**pair, "window": [0, 112, 0, SIZE]}], tmp_path,
                     data__validation=[{**pair, "window": [112, SIZE, 0, SIZE]}])
    result = train(spec, log=quiet)

    assert {c[0] for c in read_log.calls} == {"GeoTIFFSource"}
    assert read_log.largest() <= CHIP
    model = geoseg.load_model(result.model_url)
    assert all(m > 10 and s > 5 for m, s in zip(model.info.mean, model.info.std))
    record = json.loads(Path(result.record_url).read_text())
    checksum = record["data"]["train"][0]["image"]["checksum"]
    assert checksum == {"method": "content", "sha256": hashlib.sha256(Path(image).read_bytes()).hexdigest(),
                        "bytes": Path(image).stat().st_size, "files": 1}
    assert record["data"]["validation"][0]["region"] == [112, SIZE, 0, SIZE]
    assert record["resolved"]["holdout"] == 0.0
    assert len(record["epochs"]) == 2


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, scene_zarr):
    runs = [train(tiny_spec([zarr_pair(scene_zarr)], tmp_path / name, seed=seed), log=quiet)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert runs[0].model_sha256 == runs[1].model_sha256
    assert _same_metrics(runs[0].history, runs[1].history)
    assert runs[2].model_sha256 != runs[0].model_sha256


def _same_metrics(a: list[dict], b: list[dict]) -> bool:
    keys = ("epoch", "train_loss", "val_miou", "val_iou", "lr")
    return [{k: m[k] for k in keys} for m in a] == [{k: m[k] for k in keys} for m in b]


class Crash(Exception):
    pass


def test_interrupted_run_resumes_from_checkpoint_with_identical_weights(tmp_path, scene_zarr):
    def spec(name: str) -> dict:
        # keep: last, so the final weights are those of the last epoch whatever the metrics
        return tiny_spec([zarr_pair(scene_zarr)], tmp_path / name, training__epochs=4, training__keep="last")

    reference = train(spec("ref"), log=quiet)

    def crash_after_2(metrics: dict) -> None:
        if metrics["epoch"] == 2:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        train(spec("crashed"), on_epoch=crash_after_2, log=quiet)
    record = json.loads((tmp_path / "crashed" / "model.run" / "run.json").read_text())
    assert record["status"] == "failed" and "simulated crash" in record["error"]
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    seen: list[int] = []
    resumed = train(spec("crashed"), on_epoch=lambda m: seen.append(m["epoch"]), log=quiet)
    assert resumed.resumed_from == 2 and seen == [3, 4]
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
    assert resumed.model_sha256 == reference.model_sha256
    assert _same_metrics(resumed.history, reference.history)

    first = train(spec("stopped"), max_epochs=1, log=quiet)
    assert first.status == "interrupted" and first.epochs_run == 1 and first.model_url is None
    assert not (tmp_path / "stopped" / "model.safetensors").exists()
    rest = train(spec("stopped"), log=quiet)
    assert rest.resumed_from == 1 and rest.model_sha256 == reference.model_sha256

    again = train(spec("stopped"), log=quiet)  # complete: nothing retrained
    assert again.model_sha256 == reference.model_sha256 and again.status == "complete"


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, scene_zarr, monkeypatch):
    scripted = iter([0.30, 0.50, 0.45, 0.50, 0.49, 0.90, 0.95])
    monkeypatch.setattr(trainer_module, "mean_iou", lambda confusion: next(scripted))
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__epochs=7, training__steps_per_epoch=1,
                     training__early_stopping={"patience": 3, "min_delta": 0.0})
    result = train(spec, log=quiet)
    assert result.stopped_early and result.epochs_run == 5
    assert result.best_epoch == 2 and result.best_val_miou == 0.5
    assert [m["best"] for m in result.history] == [True, True, False, False, False]
    record = json.loads(Path(result.record_url).read_text())
    assert record["final"]["stopped_early"] and record["final"]["kept_epoch"] == 2
    assert geoseg.load_model(result.model_url).info.extra["training"]["validation"]["best_epoch"] == 2


def test_no_early_stopping_without_patience(tmp_path, scene_zarr, monkeypatch):
    scripted = iter([0.5, 0.4, 0.3])
    monkeypatch.setattr(trainer_module, "mean_iou", lambda confusion: next(scripted))
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__epochs=3, training__steps_per_epoch=1)
    result = train(spec, log=quiet)
    assert not result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_existing_outputs_and_changed_specs_are_refused(tmp_path, scene_zarr):
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__epochs=1)
    train(spec, log=quiet)
    changed = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__epochs=1, training__lr=0.02)
    with pytest.raises(CheckpointError, match=r"different spec \(changed: training\.lr\)") as refused:
        train(changed, log=quiet)
    from geoseg.cli import exit_code

    assert exit_code(refused.value) == 2  # the user's choice of folder, as for a job's output (was 1)
    with pytest.raises(CheckpointError, match="resume is off"):
        train(spec, resume=False, log=quiet)
    fresh = train(changed, overwrite=True, log=quiet)
    assert fresh.status == "complete" and fresh.resumed_from is None

    other = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__epochs=1,
                      output={"model": fresh.model_url, "run_dir": str(tmp_path / "elsewhere")})
    with pytest.raises(OutputExistsError, match="already exists"):
        train(other, log=quiet)


def test_a_run_never_replaces_or_claims_the_model_another_run_wrote_to_its_output(tmp_path,
                                                                                  scene_zarr):
    """Two specs naming one output.model: B resumed over A's finished model, replacing it, and
    A then called itself complete over B's weights."""
    model = str(tmp_path / "model.safetensors")

    def spec(name: str, width: int) -> dict:
        return tiny_spec([zarr_pair(scene_zarr)], tmp_path, name=name, training__epochs=2,
                         model={"architecture": "unet", "config": {"depth": 2, "width": width}},
                         output={"model": model, "run_dir": str(tmp_path / name)})

    assert train(spec("b", 8), max_epochs=1, log=quiet).status == "interrupted"
    a = train(spec("a", 4), log=quiet)
    with pytest.raises(OutputExistsError, match=r"\(output.model\) is another run's \(its record: "
                                                rf"{tmp_path / 'a' / 'run.json'}\); this run "):
        train(spec("b", 8), log=quiet)
    assert geoseg.load_model(model).info.sha256 == a.model_sha256  # A's model is intact
    b = train(spec("b", 8), overwrite=True, log=quiet)  # asked for: B's model replaces A's
    with pytest.raises(OutputExistsError, match=r"is another run's \(its record: "):
        train(spec("a", 4), log=quiet)
    assert geoseg.load_model(model).info.sha256 == b.model_sha256


def test_overwrite_keeps_the_old_model_until_the_new_one_replaces_it(tmp_path, scene_zarr):
    """--overwrite deleted the model file before training: a run that then failed (a crash, a
    full disk) left no model at all."""
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__epochs=2)
    train(spec, log=quiet)
    model = tmp_path / "model.safetensors"
    old = model.read_bytes()

    def crash(metrics: dict) -> None:
        raise Crash("simulated crash")

    with pytest.raises(Crash):
        train(spec, overwrite=True, on_epoch=crash, log=quiet)
    assert model.read_bytes() == old
    other = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__epochs=2, seed=1)
    replaced = train(other, overwrite=True, log=quiet)
    assert model.read_bytes() != old
    assert replaced.model_sha256 == geoseg.load_model(str(model)).info.sha256


@pytest.mark.parametrize("key", ["model", "run_dir"])
def test_an_output_under_a_file_is_refused_before_any_training(tmp_path, scene_zarr, key):
    """A model file under a regular file was refused only after the whole training."""
    (tmp_path / "afile").write_text("x")
    where = str(tmp_path / "afile" / ("m.safetensors" if key == "model" else "run"))
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, output={
        "model": str(tmp_path / "m.safetensors"), key: where})
    epochs: list[dict] = []
    with pytest.raises(geoseg.errors.OutputLocationError,
                       match=f"output.{key}: Cannot write .* is a file, not a folder"):
        train(spec, on_epoch=epochs.append, log=quiet)
    assert epochs == [] and not (tmp_path / "m.safetensors").exists()


def test_label_ids_outside_the_classes_are_named(tmp_path, scene):
    url = str(tmp_path / "bad.zarr")
    write_scene(scene, url, chunks=64)
    zarr.open_group(url, mode="r+")["labels"][5, 5] = 9
    spec = tiny_spec([zarr_pair(url)], tmp_path, data__normalization={"samples": 40, "window": 80})
    with pytest.raises(TrainingDataError, match=r"data\.train\.0\.labels .* holds class id 9 .* 5 classes"):
        train(spec, log=quiet)


def test_a_batch_past_the_budget_with_the_images_bands_is_refused_before_training(
        tmp_path, scene_zarr, monkeypatch):
    """The spec's check counts one band when it selects none; the trainer counts the images'."""
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", "300000")  # 3 batches of 4 chips of 32^2 and
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path)     # 2 being read: 216 KiB at 1 band
    with pytest.raises(TrainSpecError, match=r"training.batch_size: received 4; .* with 3 band\(s\), "
                                             r"80 KiB each, .*: 360 KiB in all .* expected at most "
                                             r"2 chips"):
        train(spec, log=quiet)
    assert not (tmp_path / "model.safetensors").exists()


def test_validation_windows_past_the_budget_are_refused_naming_the_key_before_any_read(
        tmp_path, scene_zarr, monkeypatch, read_log):
    """validation.tile was unbounded: every window is read once and held through training."""
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", "200000")  # a batch of 1 chip: 180 KiB held
    one_chip = {"training__batch_size": 1}
    whole = tiny_spec([zarr_pair(scene_zarr)], tmp_path, validation={"tile": 10**12}, **one_chip)
    with pytest.raises(TrainSpecError) as err:  # the holdout is rows 128:160: one 32 x 160 window
        train(whole, log=quiet)
    assert (f"validation.tile: received {10**12}; 1 validation window(s) of up to 32 x 160 pixels "
            "(padded to the network's stride 4) with 3 band(s), held through training, and 3 "
            "windows' worth more while they are read and scored, take 401 KiB (float32 images, "
            "int64 labels, 1 KiB of bookkeeping a window), over the limit of 195.3 KiB "
            "(GEOSEG_MAX_WINDOW_BYTES); expected a tile of at most 48 pixels, at which one window "
            "fits. Lower validation.tile or validation.max_windows") in str(err.value)
    many = tiny_spec([zarr_pair(scene_zarr)], tmp_path, validation={"tile": 64, "max_windows": 5},
                     **one_chip)
    with pytest.raises(TrainSpecError, match=r"validation.max_windows: received 5; 3 validation "
                                             r"window\(s\) of up to 32 x 64 pixels .* and 4 windows' worth .* take 283 KiB "
                                             r".* expected at most 1 window\(s\) of this size"):
        train(many, log=quiet)
    assert read_log.calls == [] and not (tmp_path / "model.safetensors").exists()


def test_a_normalization_window_past_the_budget_is_refused_naming_the_key_before_any_read(
        tmp_path, scene_zarr, monkeypatch, read_log):
    """data.normalization.window was unchecked: counted with the images' 3 bands, at the side
    the training regions (128 x 160 here) let it read, before the first window is read."""
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", "300000")  # batches and validation fit
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__batch_size=1,
                     data__normalization={"samples": 6, "window": 10**6})
    with pytest.raises(TrainSpecError) as err:
        train(spec, log=quiet)
    assert (f"data.normalization.window: received {10**6}; each of the 6 window(s) read one at a "
            "time to measure normalization statistics (data.normalization.samples), 128 x 128 "
            "pixels with 3 band(s), takes 1.6 MiB while it is counted") in str(err.value)
    assert "expected a window of at most 54 pixels" in str(err.value)
    assert read_log.calls == [] and not (tmp_path / "model.safetensors").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("steps", [10**9, 10**400], ids=["1e9", "1e400"])
def test_an_epoch_of_any_length_starts_at_once_in_bounded_memory(tmp_path, scene_zarr, monkeypatch,
                                                                 steps):
    """An epoch's chips were all drawn before its first step: 10**9 steps of 4 chips asked for
    32 GB at once, and 10**400 overflowed. They are drawn as they are read."""
    taken: list[int] = []
    step = Loop.train_step

    def three_steps(loop: Loop, x: np.ndarray, y: np.ndarray) -> float:
        taken.append(len(x))
        if len(taken) > 3:
            raise Crash("three steps are enough")
        return step(loop, x, y)

    epoch = trainer_module.run_epoch

    def traced_epoch(*args: object) -> dict:  # from the epoch's start: its plan, chips and steps
        tracemalloc.start()
        return epoch(*args)

    monkeypatch.setattr(Loop, "train_step", three_steps)
    monkeypatch.setattr(trainer_module, "run_epoch", traced_epoch)
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__steps_per_epoch=steps)
    try:
        with pytest.raises(Crash):
            train(spec, log=quiet)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert taken == [4, 4, 4, 4] and 0 < peak < 8 << 20, peak
    record = json.loads((tmp_path / "model.run" / "run.json").read_text())
    assert record["status"] == "failed" and record["resolved"]["total_steps"] == 2 * steps


def test_chip_must_fit_the_network_stride_and_the_region(tmp_path, scene_zarr):
    with pytest.raises(TrainSpecError, match=r"training\.chip: received 34; expected a multiple of .* stride 4"):
        train(tiny_spec([zarr_pair(scene_zarr)], tmp_path, training__chip=34), log=quiet)
    small = tiny_spec([zarr_pair(scene_zarr, [0, 24, 0, 24])], tmp_path, data__holdout=0.5)
    with pytest.raises(TrainingDataError, match=r"data\.train\.0: the training region is 12 x 24 pixels, smaller than training\.chip = 32"):
        train(small, log=quiet)


def test_the_command_line_says_when_no_model_is_written_yet_and_refuses_out_with_a_spec(
        tmp_path, scene_zarr):
    """--max-epochs stops before the last epoch: 'model None' read like a bug. --out beside a
    spec was ignored without a word."""
    import yaml

    from tests.cli import geoseg
    from tests.training.conftest import tiny_spec, zarr_pair

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_spec([zarr_pair(scene_zarr)], tmp_path / "run")))
    stopped = geoseg("train", str(path), "--max-epochs", "1")
    said = " ".join((stopped.stdout + stopped.stderr).split())
    assert stopped.returncode == 0, stopped.stderr
    assert "interrupted: model not written yet (rerun the same command to continue)" in said, said
    refused = geoseg("train", str(path), "--out", str(tmp_path / "other.safetensors"))
    assert refused.returncode == 2 and "which is for the demo models without a SPEC" in refused.stderr
    assert not (tmp_path / "other.safetensors").exists()
    for option, value in (("--steps", "5"), ("--seed", "3")):  # ignored with a spec, unsaid
        refused = geoseg("train", str(path), option, value)
        assert refused.returncode == 2 and f"with {option}, which is for the demo models" in \
            refused.stderr, refused.stderr
