"""Training and sweep specs: every problem named with its key, what was received and expected."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from geoseg.core import redact
from geoseg.errors import JobSpecError
from geoseg.training import TrainSpec, TrainSpecError, load_sweep_spec, load_train_spec
from geoseg.training.sweeps import SweepSpec, make_trials
from tests.cli import geoseg

REPO = Path(__file__).resolve().parents[2]
PAIR = {"image": {"url": "s.zarr", "variable": "image"}, "labels": {"url": "s.zarr", "variable": "labels"}}


def minimal(**extra: object) -> dict:
    return {"data": {"train": [PAIR], "classes": ["a", "b"]}, "output": {"model": "runs/m.safetensors"}, **extra}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_minimal_spec_gets_defaults(tmp_path):
    spec = load_train_spec(write(tmp_path, minimal()))
    assert spec.model.architecture == "unet" and spec.training.keep == "best"
    assert spec.data.holdout_fraction == 0.2 and spec.output.run_url == str(tmp_path / "runs" / "m.run")
    assert [c.name for c in spec.data.classes] == ["a", "b"]
    with pytest.raises(pydantic.ValidationError):
        spec.training.lr = 1.0  # frozen


def test_unknown_keys_and_wrong_types_name_their_key(tmp_path):
    data = minimal(traning={}, training={"lr": "fast", "epochs": 0, "early_stopping": {"patience": 2, "x": 1}})
    data["data"]["train"] = [{**PAIR, "image": {"url": "a", "urll": 1}, "window": [5, 2, 0, 9]}]
    with pytest.raises(TrainSpecError) as err:
        load_train_spec(write(tmp_path, data))
    text = str(err.value)
    assert isinstance(err.value, JobSpecError) and "6 problem(s)" in text
    assert "data.train.0.image.urll: unknown key; allowed keys here: url, variable, bands, level, storage_options" in text
    assert ("data.train.0.window: received [5, 2, 0, 9] (list); expected [row_start, row_stop, col_start, "
            "col_stop] with 0 <= start < stop") in text
    assert "training.lr: received 'fast' (str); expected a valid number" in text
    assert "training.epochs: received 0 (int); expected greater than or equal to 1" in text
    assert "training.early_stopping.x: unknown key; allowed keys here: patience, min_delta" in text
    assert "traning: unknown key; allowed keys here: name, seed, data, model, training, validation, output" in text


def test_unknown_architecture_and_bad_config_are_named():
    with pytest.raises(TrainSpecError) as err:
        TrainSpec.from_dict(minimal(model={"architecture": "unett"}))
    text = str(err.value)
    assert "model.architecture: received 'unett' (str); expected one of the registered 2D architectures: " in text
    listed = text.split("2D architectures: ")[1].rstrip(".").split(", ")
    assert {"deeplabv3plus", "fcn", "segnet", "unet"} <= set(listed) and "unet3d" not in listed
    with pytest.raises(TrainSpecError, match="model.architecture: received 'unet3d'"):
        TrainSpec.from_dict(minimal(model={"architecture": "unet3d"}))
    with pytest.raises(TrainSpecError, match=r"model.config: received \{'dept': 2\} .* expected arguments that "
                                             r"'unet' accepts .*unexpected keyword argument 'dept'"):
        TrainSpec.from_dict(minimal(model={"architecture": "unet", "config": {"dept": 2}}))
    with pytest.raises(TrainSpecError, match="model.config: .* expected no num_classes: the trainer sets it"):
        TrainSpec.from_dict(minimal(model={"config": {"num_classes": 3}}))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("config", [{"depth": 40, "width": 4}, {"depth": 3, "width": 100000}])
def test_a_config_building_a_network_past_the_budget_is_refused_unbuilt(config):
    """Counted on torch's meta device: depth 40 took 17.8 GB before it was, width 1e5 asked
    for 360 GB."""
    with pytest.raises(TrainSpecError, match=r"model.config: .* expected a network within the "
                                             r"budget: .*GEOSEG_MAX_MODEL_PARAMETERS"):
        TrainSpec.from_dict(minimal(model={"architecture": "unet", "config": config}))


def test_cross_field_checks():
    data = minimal()
    data["data"].update(ignore_index=1, class_weights=[1.0], holdout=0)
    with pytest.raises(TrainSpecError) as err:
        TrainSpec.from_dict(data)
    text = str(err.value)
    assert "data.ignore_index: received 1 (int); expected a value that is not a class id (0..1)" in text
    assert "data.class_weights: received [1.0] (list); expected 'auto'" in text and "list of 2" in text
    assert "data.holdout: received 0 (int); expected > 0 when there are no validation pairs" in text
    for weights in ([0.0, 0.0], [1.0, float("inf")], [True, 1.0]):
        with pytest.raises(TrainSpecError, match=r"data.class_weights: received .*finite "
                                                 r"non-negative weights.*at least one above 0"):
            TrainSpec.from_dict(minimal(data={**minimal()["data"], "class_weights": weights}))
    assert TrainSpec.from_dict(minimal(data={**minimal()["data"], "class_weights": [0, 1]}))
    with pytest.raises(TrainSpecError, match="training.device: received 'gpu' .* 'cuda:N'"):
        TrainSpec.from_dict(minimal(training={"device": "gpu"}))


def test_a_class_name_given_twice_is_refused_naming_it_and_the_field():
    data = minimal()
    data["data"]["classes"] = ["water", "road", {"name": "water", "color": [0, 0, 255]}, "road", "x"]
    with pytest.raises(TrainSpecError) as err:
        TrainSpec.from_dict(data, "train.yaml")
    text = str(err.value)
    assert text.startswith("train.yaml: 1 problem(s):") and "  - data.classes: received [" in text
    assert ("expected each class name once, but 'water' is given 2 times (classes 0 and 2); 'road' "
            "is given 2 times (classes 1 and 3); rename or remove the duplicate") in text


def test_specs_and_model_files_check_class_names_with_the_shared_helpers():
    """The duplicate-name helpers live in the bottom layer, geoseg.core.classes, not in models."""
    from geoseg.core import classes
    from geoseg.models import header
    from geoseg.training import spec

    for module in (spec, header):
        assert module.repeated_names is classes.repeated_names
        assert module.describe_repeats is classes.describe_repeats
    assert classes.describe_repeats(classes.repeated_names(["a", "b", "a"])) == (
        "'a' is given 2 times (classes 0 and 2)")


@pytest.mark.timeout(30)
def test_a_batch_past_the_memory_budget_is_refused_at_validation(tmp_path):
    """batch_size 1e8 reached 9.9 GB before anything refused it; the spec's check is arithmetic."""
    path = write(tmp_path, minimal(training={"batch_size": 100_000_000}))
    result = geoseg("train", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    text = " ".join(result.stderr.split())  # as one line, however the console wraps it
    assert (f"{path}: training.batch_size: received 100000000; the chip loader holds 3 batches "
            "at once (one training, 2 read ahead) of 100000000 chip(s) of 128 x 128 pixels with at "
            "least 1 band(s), at least 17.9 TiB each, and 3 chips' worth for each of the 2 chip(s) "
            "being read (training.loader_threads): at least 53.6 TiB in all (float32 images, int64 "
            "labels), over the limit of 2 GiB (GEOSEG_MAX_WINDOW_BYTES); expected at most 3638 "
            "chips of this size (fewer if the images have more bands)") in text, text
    assert "raise GEOSEG_MAX_WINDOW_BYTES if the machine has the memory" in text
    selected = minimal(training={"batch_size": 100_000})
    selected["data"]["train"] = [{**PAIR, "image": {**PAIR["image"], "bands": [1, 2, 3]}}]
    with pytest.raises(TrainSpecError, match=r"training.batch_size: received 100000; .* with 3 "
                                             r"band\(s\), 30.5 GiB each, .*: 91.6 GiB in all .* "
                                             r"expected at most 2182 chips"):
        TrainSpec.from_dict(selected)
    with pytest.raises(TrainSpecError, match=r"training.chip: received 100000; .* expected a chip "
                                             r"of at most 4459 pixels, in batches of one"):
        TrainSpec.from_dict(minimal(training={"chip": 100_000}))


def test_the_batch_budget_counts_every_batch_and_chip_the_loader_holds_at_once(monkeypatch):
    """A 48 MiB batch fits 128 MiB alone, but the loader holds 3 of them and the chips being read."""
    spec = minimal(training={"batch_size": 64, "chip": 256})  # 64 x 256^2 x 12 bytes = 48 MiB
    TrainSpec.from_dict(spec)
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", str(128 << 20))
    with pytest.raises(TrainSpecError, match=r"at least 48 MiB each, and 3 chips' worth for each "
                                             r"of the 2 chip\(s\) being read .*: at least 148.5 MiB "
                                             r"in all .* limit of 128 MiB .* at most 54 chips"):
        TrainSpec.from_dict(spec)
    TrainSpec.from_dict(minimal(training={"batch_size": 54, "chip": 256}))
    with pytest.raises(TrainSpecError, match=r"the 16 chip\(s\) being read \(training.loader_threads"):
        TrainSpec.from_dict(minimal(training={"batch_size": 54, "chip": 256, "loader_threads": 16}))
    monkeypatch.setenv("GEOSEG_MAX_WINDOW_BYTES", str(150 << 20))
    TrainSpec.from_dict(spec)


@pytest.mark.timeout(30)
def test_thread_counts_past_the_cap_are_refused_naming_the_key(tmp_path):
    """loader_threads 100000 would have started a thread for every chip read ahead."""
    path = write(tmp_path, minimal(training={"loader_threads": 100_000}))
    result = geoseg("train", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    text = " ".join(result.stderr.split())
    assert "training.loader_threads: received 100000 (int); expected at most 1024 threads" in text, text
    with pytest.raises(TrainSpecError, match=r"training.torch_threads: received 1025 \(int\); "
                                             r"expected at most 1024 threads"):
        TrainSpec.from_dict(minimal(training={"torch_threads": 1025}))
    spec = TrainSpec.from_dict(minimal(training={"loader_threads": 1024, "torch_threads": 1024}))
    assert (spec.training.loader_threads, spec.training.torch_threads) == (1024, 1024)


@pytest.mark.parametrize(("mean", "std"), [([0.5, 0.5], [float("nan"), 1.0]),
                                           ([float("inf"), 0.5], [1.0, 1.0]),
                                           ([0.5, 0.5], [1e-46, 1.0]), ([1e39, 0.5], [1.0, 1.0])])
def test_normalization_that_is_not_finite_is_refused(mean, std):
    data = minimal()
    data["data"]["normalization"] = {"mean": mean, "std": std}
    with pytest.raises(TrainSpecError, match="data.normalization.std: .* expected finite means and stds"):
        TrainSpec.from_dict(data)


def test_storage_options_never_echoed():
    data = minimal()
    data["data"]["train"] = [{**PAIR, "image": {"url": "s3://b/x.zarr", "storage_options": 12345}}]
    with pytest.raises(TrainSpecError) as err:
        TrainSpec.from_dict(data)
    assert "12345" not in str(err.value) and "<hidden>" in str(err.value)
    data["data"]["train"] = [{**PAIR, "image": {"url": "s3://user:pw@b/x.zarr", "storage_options": {"secret": "S3CR"}}}]
    redacted = str(TrainSpec.from_dict(data).redacted())
    assert "S3CR" not in redacted and "pw" not in redacted


def test_yaml_problems(tmp_path):
    with pytest.raises(TrainSpecError, match="No training spec at"):
        load_train_spec(tmp_path / "missing.yaml")
    with pytest.raises(TrainSpecError, match="not valid YAML"):
        load_train_spec(write(tmp_path, "data: !!python/object/apply:os.system ['echo hi']\n"))
    with pytest.raises(TrainSpecError, match="expected a mapping of sections"):
        load_train_spec(write(tmp_path, "- a\n- b\n"))


def test_a_training_spec_is_read_as_carefully_as_a_job_spec(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_bytes(b"data:\n  classes: [caf\xe9]\n")
    with pytest.raises(TrainSpecError, match="is not UTF-8 text: byte 0xe9 on line 2"):
        load_train_spec(path)
    path.write_text('data: {train: [{image: {url: s3://b/x.zarr, storage_options: {secret: "QUOTED-7c1\n')
    with pytest.raises(TrainSpecError, match="is not valid YAML: line 2, column 1") as err:
        load_train_spec(path)
    assert "QUOTED-7c1" not in str(err.value)
    data = minimal()
    data["data"]["train"] = [{**PAIR, "image": {"url": "s3://b/x.zarr",
                                                "storage_options": {"secret": "TRAIN-SECRET-5d3"}}}]
    load_train_spec(write(tmp_path, data))
    assert "TRAIN-SECRET-5d3" not in redact.scrub("a library failed with TRAIN-SECRET-5d3")


def test_a_training_spec_with_a_key_given_twice_is_refused(tmp_path):
    text = yaml.safe_dump(minimal()) + "output: {model: elsewhere.safetensors}\n"
    with pytest.raises(TrainSpecError, match="received the key 'output' a second time"):
        load_train_spec(write(tmp_path, text))


def test_example_specs_validate(monkeypatch):
    monkeypatch.chdir(REPO)
    spec = load_train_spec("jobs/train-demo.yaml")
    assert spec.data.validation and spec.training.early_stopping is not None
    sweep = load_sweep_spec("jobs/sweep-demo.yaml")
    trials = make_trials(sweep)
    assert len(trials) == 8 and {t.spec.model.architecture for t in trials} == {"unet", "segnet"}


def test_sweep_spec_errors_and_trial_errors():
    with pytest.raises(TrainSpecError) as err:
        SweepSpec.from_dict({"base": minimal(), "method": "random", "parameters": {"output.model": ["x"]},
                             "output": {"dir": "d"}, "extra": 1})
    text = str(err.value)
    assert "parameters: received {'output.model': ['x']} (dict); expected keys outside output, name" in text
    assert "trials: received None (NoneType); expected a number of trials, required with method: random" in text
    assert "extra: unknown key; allowed keys here: name, base, method, trials, seed, parameters, output" in text
    with pytest.raises(TrainSpecError, match="ranges .* need method: random"):
        SweepSpec.from_dict({"base": minimal(), "parameters": {"training.lr": {"low": 1e-4, "high": 1e-2}},
                             "output": {"dir": "d"}})
    spec = SweepSpec.from_dict({"base": minimal(), "parameters": {"training.lr": [0.001, -1]},
                                "output": {"dir": "d"}})
    with pytest.raises(TrainSpecError, match=r"(?s)trial 1 \{'training.lr': -1\}.*training.lr: received -1"):
        make_trials(spec)


def test_random_search_draws_reproducible_values():
    spec = SweepSpec.from_dict({"base": minimal(), "method": "random", "trials": 5, "seed": 3,
                                "parameters": {"training.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                               "model.config.width": [4, 8, 16], "training.batch_size":
                                                   {"low": 2, "high": 6, "integer": True}},
                                "output": {"dir": "d"}})
    trials, again = make_trials(spec), make_trials(spec)
    assert [t.params for t in trials] == [t.params for t in again] and len(trials) == 5
    assert all(1e-4 <= t.spec.training.lr <= 1e-2 and 2 <= t.spec.training.batch_size <= 6 for t in trials)
    assert all(t.spec.model.config["width"] in (4, 8, 16) and t.spec.model.config == {"width": t.params[
        "model.config.width"]} for t in trials)
    assert trials[0].spec.output.model.endswith("d/trial-000/model.safetensors")
    assert trials[0].spec.data.train[0].image.url == str(Path("s.zarr").resolve())


@pytest.mark.parametrize(("changes", "said"), [
    ({"seed": 2**70}, ("seed: received 1180591620717411303424 (int); expected less than or equal to "
                      "4294967295.")),
    ({"seed": -1}, "seed: received -1 (int); expected greater than or equal to 0."),
    ({"data": {"ignore_index": 2**70}}, ("data.ignore_index: received 1180591620717411303424 (int); "
                                        "expected a value that is not a class id (0..1), e.g. 255, "
                                        "within -2147483648..4294967295")),
    ({"data": {"ignore_index": -(2**31) - 1}}, "within -2147483648..4294967295"),
])
def test_seeds_and_ignore_indexes_past_what_numpy_torch_and_labels_take_are_refused(changes, said):
    """seed 2**70 was an internal 'Overflow' from torch; ignore_index 2**70 an OverflowError."""
    data = minimal(seed=changes.get("seed", 0))
    data["data"].update(changes.get("data", {}))
    with pytest.raises(TrainSpecError) as refused:
        TrainSpec.from_dict(data)
    assert said in str(refused.value)
    edge = minimal(seed=2**32 - 1)
    edge["data"].update(ignore_index=2**32 - 1)
    assert TrainSpec.from_dict(edge).seed == 2**32 - 1


@pytest.mark.parametrize(("key", "training"), [
    ("training.lr", lambda v: {"lr": v}),
    ("training.weight_decay", lambda v: {"weight_decay": v}),
    ("training.early_stopping.min_delta", lambda v: {"early_stopping": {"patience": 1, "min_delta": v}}),
])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_optimisation_numbers_are_refused(key, training, value):
    """An infinite learning rate, weight decay or min_delta was taken as given."""
    with pytest.raises(TrainSpecError, match=rf"{key}: received {value} \(float\); expected a finite "
                                             "number"):
        TrainSpec.from_dict(minimal(training=training(value)))


def test_class_weights_past_float32_are_refused():
    """1e308 is finite in Python, and infinite in the float32 loss."""
    for weights in ([1e308, 1.0], [3.5e38, 1.0]):
        data = minimal()
        data["data"]["class_weights"] = weights
        with pytest.raises(TrainSpecError, match=r"data.class_weights: received .* finite "
                                                 r"non-negative weights \(at most 3.4e\+38, float32"):
            TrainSpec.from_dict(data)
    data = minimal()
    data["data"]["class_weights"] = [3.4e38, 1.0]
    assert TrainSpec.from_dict(data).data.class_weights == [3.4e38, 1.0]


def random_sweep(parameters: dict) -> dict:
    return {"base": minimal(), "method": "random", "trials": 2, "parameters": parameters,
            "output": {"dir": "d"}}


@pytest.mark.parametrize(("bounds", "said"), [
    ({"low": float("nan"), "high": float("nan")}, ("low: received nan (float); expected a "
                                                  "finite number")),
    ({"low": 1e-4, "high": float("inf"), "log": True}, ("high: received inf (float); "
                                                       "expected a finite number")),
    ({"low": float("-inf"), "high": 1.0}, "low: received -inf (float); expected a finite"),
    ({"low": 0.01, "high": 0.01}, ("high: received 0.01 (float); expected a number above "
                                  "low (0.01); a single value is a list: [0.01]")),
    ({"low": -1e308, "high": 1e308}, ("high: received 1e+308 (float); expected a number "
                                     "less than 1.8e308 above low (-1e+308)")),
])
def test_random_ranges_need_finite_ordered_bounds(bounds, said):
    """NaN and infinite bounds failed with an internal OverflowError when drawn."""
    with pytest.raises(TrainSpecError) as refused:
        make_trials(SweepSpec.from_dict(random_sweep({"training.lr": bounds})))
    assert f"parameters.training.lr.{said}" in str(refused.value)


def test_sweep_values_that_are_strings_stay_strings():
    """'007' became 7.0, refused as a model.name; YAML 1.1's exponent numbers still count."""
    spec = SweepSpec.from_dict({"base": minimal(), "output": {"dir": "d"},
                                "parameters": {"model.name": ["007", "1e3x"], "training.lr": ["1e-3"]}})
    trials = make_trials(spec)
    assert [t.spec.model.name for t in trials] == ["007", "1e3x"]
    assert [t.params["training.lr"] for t in trials] == [1e-3, 1e-3]
    assert all(t.spec.training.lr == 1e-3 for t in trials)
