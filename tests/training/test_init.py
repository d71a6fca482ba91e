"""Fine-tuning from a model file (``model.init``): the file's weights and normalisation at the
start, fresh tensors only where the classes or bands differ, refusals that name what differs,
resumes that end as an uninterrupted run does."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from geoseg.errors import CheckpointError, ModelFileError, TrainSpecError
from geoseg.models import save_model
from geoseg.models.modelfile import load_model
from geoseg.training import train
from geoseg.training.spec import load_train_spec
from geoseg.training.trainer import as_train_spec, prepare
from tests.cli import geoseg
from tests.training.conftest import CLASSES, tiny_spec, zarr_pair


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory, scene_zarr: str) -> str:
    """A tiny U-Net (depth 2, width 4) trained on the scene: the file runs start from."""
    out = tmp_path_factory.mktemp("base")
    return train(tiny_spec([zarr_pair(scene_zarr)], out), log=quiet).model_url


def _fine_tune(scene_zarr: str, out: Path, init: str, **sections: object) -> dict:
    return tiny_spec([zarr_pair(scene_zarr)], out, model={"init": init}, **sections)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.cpu(), b.cpu())


def test_a_fine_tuning_run_starts_from_the_files_weights_and_normalisation(
        tmp_path, scene_zarr, base_model):
    shutil.copy(base_model, tmp_path / "base.safetensors")
    path = tmp_path / "train.yaml"  # init relative to the spec's folder, as data paths are
    path.write_text(yaml.safe_dump(_fine_tune(scene_zarr, tmp_path / "run", "base.safetensors")))
    spec = load_train_spec(path)
    assert spec.model.init == str(tmp_path / "base.safetensors")

    lines: list[str] = []
    setup = prepare(spec, None, lines.append)
    file = load_model(base_model)
    ours, theirs = setup.net.state_dict(), file.net.state_dict()
    assert ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k]) for k in ours)
    assert setup.architecture == file.info.architecture and setup.net_config == file.info.config
    norm = setup.record["normalization"]
    assert norm["source"] == "init"
    assert norm["mean"] == pytest.approx(file.info.mean) and norm["std"] == pytest.approx(file.info.std)
    init = setup.record["init"]
    assert init["sha256"] == file.info.sha256 and init["fresh"] == []
    assert init["loaded"] == init["tensors"] == len(theirs)
    assert any(f"starting from model.init {tmp_path / 'base.safetensors'} ({len(theirs)} of "
               f"{len(theirs)} tensors loaded)" in line for line in lines), lines

    result = train(spec, log=quiet)
    training = load_model(result.model_url).info.extra["training"]
    assert training["init"]["sha256"] == file.info.sha256
    assert training["normalization"]["source"] == "init"
    assert json.loads(Path(result.record_url).read_text())["init"]["url"] == init["url"]


@pytest.mark.parametrize("classes", [["a", "b", "c", "d", "e"], [*CLASSES, "cloud"]],
                         ids=["renamed", "one-more"])
def test_other_classes_start_the_head_fresh_and_load_everything_else(
        tmp_path, scene_zarr, base_model, classes):
    lines: list[str] = []
    setup = prepare(as_train_spec(_fine_tune(scene_zarr, tmp_path, base_model, data__classes=classes)),
                    None, lines.append)
    scratch = prepare(as_train_spec(tiny_spec([zarr_pair(scene_zarr)], tmp_path, data__classes=classes)),
                      None, quiet)  # the same network from the same seed, from random weights
    ours, fresh = setup.net.state_dict(), scratch.net.state_dict()
    theirs = load_model(base_model).net.state_dict()
    head = ["head.weight", "head.bias"]
    assert all(_same(ours[k], fresh[k]) and not _same(ours[k], theirs[k]) for k in head)
    assert all(_same(ours[k], theirs[k]) for k in ours if k not in head)
    reason = (f"the file's classes [{', '.join(CLASSES)}] differ from data.classes "
              f"[{', '.join(classes)}]")
    assert (f"tiny: 2 tensor(s) that depend on the number of classes (head.weight, head.bias) "
            f"start fresh: {reason}") in lines, lines
    init = setup.record["init"]
    assert init["fresh"] == [{"depends_on": "classes", "tensors": head, "reason": reason}]
    assert init["loaded"] == len(ours) - 2
    assert setup.record["normalization"]["source"] == "init"  # the first layer is the file's


def test_other_bands_start_the_first_layer_fresh_and_measure_the_normalisation(
        tmp_path, scene_zarr, base_model):
    pair = zarr_pair(scene_zarr)
    pair["image"]["bands"] = [1, 2]
    lines: list[str] = []
    spec = tiny_spec([pair], tmp_path, model={"init": base_model})
    setup = prepare(as_train_spec(spec), None, lines.append)
    fresh = setup.record["init"]["fresh"]
    assert [g["depends_on"] for g in fresh] == ["bands"] and fresh[0]["tensors"]
    assert "the file's network takes 3 band(s)" in fresh[0]["reason"]
    ours, theirs = setup.net.state_dict(), load_model(base_model).net.state_dict()
    assert all(_same(ours[k], theirs[k]) for k in ours if k not in fresh[0]["tensors"])
    assert not any(_same(ours[k], theirs[k]) for k in fresh[0]["tensors"])
    assert setup.record["normalization"]["source"] == "measured"


@pytest.mark.parametrize(("model", "said"), [
    ({"architecture": "fcn"}, r"model\.architecture: received 'fcn'; expected 'unet'"),
    ({"config": {"depth": 2, "width": 8}},
     r"model\.config: received \{'depth': 2, 'width': 8\}; expected \{'depth': 2, 'width': 4\}"),
], ids=["architecture", "config"])
def test_an_architecture_or_config_other_than_the_files_is_refused_naming_both(
        tmp_path, scene_zarr, base_model, model, said):
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path, model={"init": base_model, **model})
    with pytest.raises(TrainSpecError, match=said):
        train(spec, log=quiet)
    assert not (tmp_path / "model.run").exists()


def test_restating_the_files_architecture_and_config_is_accepted(tmp_path, scene_zarr, base_model):
    spec = tiny_spec([zarr_pair(scene_zarr)], tmp_path,
                     model={"init": base_model, "architecture": "unet", "config": {"depth": 2, "width": 4}})
    setup = prepare(as_train_spec(spec), None, quiet)
    assert setup.record["init"]["loaded"] == setup.record["init"]["tensors"]


@pytest.mark.parametrize(("content", "said"), [
    (None, "No model file at"),
    (pickle.dumps({"weights": [1, 2, 3]}), "is a pickle or torch.save checkpoint"),
], ids=["missing", "pickle"])
def test_a_missing_or_pickled_init_file_is_refused_cleanly(tmp_path, scene_zarr, content, said):
    if content is not None:
        (tmp_path / "init.safetensors").write_bytes(content)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_fine_tune(scene_zarr, tmp_path / "run", "init.safetensors")))
    with pytest.raises(ModelFileError, match=f"^model.init: .*{said}"):
        train(path, log=quiet)
    done = geoseg("train", str(path))
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "model.init:" in message and said in message, done.stderr
    assert str(tmp_path / "init.safetensors") in message and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_an_interrupted_fine_tuning_resumes_to_the_weights_of_an_uninterrupted_one(
        tmp_path, scene_zarr, base_model):
    init = tmp_path / "init.safetensors"
    shutil.copy(base_model, init)

    def spec(name: str, **training: object) -> dict:
        return _fine_tune(scene_zarr, tmp_path / name, str(init), training__epochs=2,
                          training__steps_per_epoch=4, training__batch_size=2, training__keep="last",
                          **{f"training__{k}": v for k, v in training.items()})

    reference = train(spec("ref"), log=quiet)
    stopped = train(spec("run", checkpoint_steps=2), max_steps=7, log=quiet)  # epoch 2, step 3
    assert stopped.status == "interrupted"

    original = init.read_bytes()
    other = load_model(str(init))
    with torch.no_grad():
        next(other.net.parameters()).add_(1.0)
    save_model(other, str(init), overwrite=True)  # the same URL, other weights
    with pytest.raises(CheckpointError, match=r"started from model\.init .* \(the file was replaced\)"):
        train(spec("run", checkpoint_steps=2), log=quiet)
    init.write_bytes(original)

    lines: list[str] = []
    resumed = train(spec("run", checkpoint_steps=2), log=lines.append)
    assert resumed.status == "complete" and resumed.resumed_from == 1
    assert not any("starting from model.init" in line for line in lines)  # the checkpoint's weights
    assert resumed.model_sha256 == reference.model_sha256
    record = json.loads(Path(resumed.record_url).read_text())
    assert record["init"] == json.loads(Path(reference.record_url).read_text())["init"]


def test_fine_tuning_a_model_of_similar_data_scores_at_least_as_well_as_training_from_scratch(
        tmp_path, scene_zarr):
    """The bundled demo U-Net was trained on synthetic scenes like this one: a few steps from
    it score at least as well as the same steps from random weights (about 0.77 against 0.05 to
    0.14 over seeds 0-2). At the default lr of 1e-3: the tiny specs' 0.01 undoes the file's
    training within 4 steps."""
    steps = {"training__epochs": 1, "training__steps_per_epoch": 4, "training__lr": 1e-3}
    tuned = train(_fine_tune(scene_zarr, tmp_path / "tuned", "builtin:demo-unet", **steps), log=quiet)
    header = load_model("builtin:demo-unet").info
    config = {k: v for k, v in header.config.items() if k not in ("in_channels", "num_classes")}
    scratch = train(tiny_spec([zarr_pair(scene_zarr)], tmp_path / "scratch",
                              model={"architecture": "unet", "config": config}, **steps), log=quiet)
    assert tuned.best_val_miou >= scratch.best_val_miou


def test_an_init_file_in_object_storage_is_read_with_the_models_storage_options(
        tmp_path, scene_zarr, base_model, s3_server):
    import fsspec

    fs = fsspec.filesystem("s3", **s3_server)
    fs.put(base_model, "geoseg/models/base.safetensors")
    spec = as_train_spec(tiny_spec([zarr_pair(scene_zarr)], tmp_path / "run", model={
        "init": "s3://geoseg/models/base.safetensors", "storage_options": s3_server}))
    setup = prepare(spec, None, quiet)
    file = load_model(base_model)
    assert all(_same(setup.net.state_dict()[k], v) for k, v in file.net.state_dict().items())
    assert "SUPER-SECRET" not in json.dumps(setup.record)


def test_bands_named_otherwise_than_the_files_are_warned_of(tmp_path, scene_zarr, base_model):
    from geoseg.training.finetune import _warn_band_names

    spec = as_train_spec(_fine_tune(scene_zarr, tmp_path / "run", base_model))
    said: list[str] = []
    _warn_band_names(spec, ("red", "green", "blue"), ("nir", "red", "green"), said.append)
    _warn_band_names(spec, ("red", "green", "blue"), ("band_1", "band_2", "band_3"), said.append)
    _warn_band_names(spec, ("red", "green", "blue"), ("red", "green", "blue"), said.append)
    assert len(said) == 1 and "trained on bands [red, green, blue]" in said[0], said
    assert "the images' bands are [nir, red, green]" in said[0]
