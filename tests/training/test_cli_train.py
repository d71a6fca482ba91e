"""``geoseg train`` without a spec reaches the demo trainers in geoseg.training (fast: refusals only)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.errors import OutputExistsError
from tests.training.conftest import tiny_spec, zarr_pair


@pytest.mark.parametrize("extra", [[], ["--instances"]])
def test_demo_trainers_refuse_to_overwrite_a_model(tmp_path, extra):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"kept")
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--steps", "1", *extra])
    assert isinstance(result.exception, OutputExistsError), result.output
    assert "pass --overwrite" in str(result.exception) and out.read_bytes() == b"kept"


def test_without_spec_or_out_says_what_to_give():
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 2 and "--out FILE" in result.output


@pytest.mark.parametrize(("args", "said"), [
    (["--steps", "0"], "Invalid value for '--steps': received 0; expected an integer of at least 1"),
    (["--steps", "-5"], "Invalid value for '--steps': received -5; expected an integer of at least 1"),
    (["--seed", "99999999999999999999999"], ("Invalid value for '--seed': received "
                                           "99999999999999999999999; expected an integer in "
                                           "0..4294967295")),
    (["--seed", "-1"], "Invalid value for '--seed': received -1; expected an integer in 0..4294967295"),
    (["--max-epochs", "0"], ("Invalid value for '--max-epochs': received 0; expected an integer of "
                            "at least 1")),
    (["--max-epochs", "-5"], ("Invalid value for '--max-epochs': received -5; expected an integer "
                             "of at least 1")),
])
@pytest.mark.parametrize("mode", ["demo", "spec"])
def test_numbers_out_of_range_are_refused_naming_the_option_before_any_training(
        tmp_path, monkeypatch, args, said, mode):
    """--steps 0 and an overflowing --seed were internal errors, --seed -1 was refused as the
    scene seed -1000, and --max-epochs 0 trained one epoch."""
    from geoseg.training import demo_unet, trainer

    monkeypatch.setattr(demo_unet, "seed_torch", _no_training)
    monkeypatch.setattr(trainer, "prepare", _no_training)
    spec = tmp_path / "train.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec([zarr_pair(str(tmp_path / "s.zarr"))], tmp_path)))
    where = ["--out", str(tmp_path / "model.safetensors")] if mode == "demo" else [str(spec)]
    result = CliRunner().invoke(app, ["train", *where, *args])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.replace("│", " ").split()), result.output


def _no_training(*args: object, **kwargs: object) -> None:
    raise AssertionError("trained before its options were checked")


@pytest.mark.parametrize("extra", [[], ["--instances"]])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_as_out_is_refused_before_any_training(tmp_path, monkeypatch, extra, overwrite):
    """It was called 'already exists; pass --overwrite', and with --overwrite it trained fully
    and only then failed."""
    from geoseg.training import demo_instances, demo_unet

    monkeypatch.setattr(demo_unet, "seed_torch", _no_training)
    monkeypatch.setattr(demo_instances, "seed_torch", _no_training)
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path), "--steps", "1", *extra,
                                      *overwrite])
    assert isinstance(result.exception, OutputExistsError), result.output
    assert f"--out: Cannot write {tmp_path}: it is a folder" in str(result.exception)


@pytest.mark.parametrize(("extra", "module", "trainer_name"), [
    ([], "demo_unet", "train_demo_model"),
    (["--instances"], "demo_instances", "train_instance_model"),
])
def test_steps_and_seed_reach_either_demo_model_and_defaults_stay_the_recipe_s(
        tmp_path, monkeypatch, extra, module, trainer_name):
    """With --instances, --steps and --seed were ignored without a word."""
    import importlib

    from geoseg.training import demo_instances, demo_unet

    seen = []

    def record(cfg, out, **kwargs):
        seen.append(cfg)
        return {"val_miou": 0.5}

    monkeypatch.setattr(importlib.import_module(f"geoseg.training.{module}"), trainer_name, record)
    out = str(tmp_path / "m.safetensors")
    CliRunner().invoke(app, ["train", "--out", out, "--steps", "7", "--seed", "3", *extra])
    CliRunner().invoke(app, ["train", "--out", out, *extra])
    default = (demo_instances.InstanceTrainConfig() if extra else demo_unet.TrainConfig())
    assert [(c.steps, c.seed) for c in seen] == [(7, 3), (default.steps, default.seed)]
