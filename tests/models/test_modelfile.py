"""Model files: round trip, integrity, and refusal of anything that could execute."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import geoseg
from geoseg.errors import BudgetError, ModelFileError, ParameterError
from geoseg.models import builtin_models, load_model, save_model
from geoseg.models.modelfile import read_header
from tests.cli import geoseg as run_cli
from tests.conftest import edited_model, random_unet, textured_image


def test_round_trip_keeps_weights_metadata_and_predictions(tmp_path):
    model = random_unet(classes=3, seed=4)
    ref = save_model(model, str(tmp_path / "m.safetensors"))
    loaded = load_model(str(tmp_path / "m.safetensors"))
    assert loaded.info.sha256 == ref.sha256 and len(ref.sha256) == 64
    assert loaded.info.classes == model.info.classes and loaded.info.mean == model.info.mean
    image = textured_image(48, 40)
    np.testing.assert_array_equal(loaded.predict_image(image), model.predict_image(image))


def test_existing_file_is_not_overwritten(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_model(random_unet(), path)
    before = (tmp_path / "m.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(random_unet(seed=9), path)
    assert (tmp_path / "m.safetensors").read_bytes() == before


def test_tampered_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(random_unet(), str(path))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt or was replaced"):
        load_model(str(path))


def test_expected_hash_mismatch_is_refused(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_model(random_unet(), path)
    with pytest.raises(ModelFileError, match=r"the job \(expected_sha256\) expects 0000"):
        load_model(path, expected_sha256="0" * 64)


def test_a_malformed_expected_hash_is_named_as_such_not_as_a_corrupt_file(tmp_path):
    from geoseg.errors import ParameterError

    path = str(tmp_path / "m.safetensors")
    save_model(random_unet(), path)
    with pytest.raises(ParameterError, match=r"expected_sha256: received 'abc'; expected the 64"):
        load_model(path, expected_sha256="abc")


def test_save_model_takes_a_path_object_makes_its_folder_and_refuses_what_it_cannot_save(tmp_path):
    """As load_model and open_raster take os.PathLike; every refusal a geoseg error."""
    from pathlib import Path

    from geoseg import Ensemble
    from geoseg.errors import GeosegError, OutputExistsError, ParameterError

    model = random_unet()
    ref = save_model(model, Path(tmp_path) / "new" / "m.safetensors")
    assert load_model(tmp_path / "new" / "m.safetensors").info.sha256 == ref.sha256
    with pytest.raises(ParameterError, match="expected a SegmentationModel .* save each network"):
        save_model(Ensemble([model]), tmp_path / "e.safetensors")
    with pytest.raises(ParameterError, match="received str"):
        save_model("not a model", tmp_path / "s.safetensors")
    with pytest.raises(OutputExistsError, match="is a folder; expected the path of a file"):
        save_model(model, tmp_path / "new", overwrite=True)
    with pytest.raises(GeosegError, match="already exists; pass overwrite=True"):
        save_model(model, tmp_path / "new" / "m.safetensors")


def test_metadata_naming_other_classes_than_the_network_scores_is_refused_at_once():
    import dataclasses

    from geoseg import SegmentationModel
    from geoseg.errors import ParameterError

    model = random_unet()
    two = dataclasses.replace(model.info, classes=model.info.classes[:2])
    with pytest.raises(ParameterError, match=rf"info names 2 class\(es\) .* but the network "
                                             rf"scores {model.n_classes}"):
        SegmentationModel(model.net, two)


@pytest.mark.parametrize("config", [True, False])
def test_metadata_naming_other_bands_than_the_network_takes_is_refused_at_once(config):
    """Accepted, it failed in every task with torch's "expected input to have 3 channels"."""
    import dataclasses

    from geoseg import SegmentationModel

    model = random_unet()
    kept = model.info.config if config else {k: v for k, v in model.info.config.items()
                                             if k != "in_channels"}  # then its first conv's
    two = dataclasses.replace(model.info, bands=model.info.bands[:2], mean=model.info.mean[:2],
                              std=model.info.std[:2], config=kept)
    with pytest.raises(ParameterError, match=r"info names 2 band\(s\) .* but the network takes "
                                             r"3 input channel\(s\)"):
        SegmentationModel(model.net, two)


@pytest.mark.parametrize("change", [{"architecture": "fcn"}, {"config": {"depth": 2}}])
def test_a_model_whose_metadata_does_not_build_its_network_is_not_saved(tmp_path, change):
    """It was written, and load_model then refused the file."""
    import dataclasses

    from geoseg import SegmentationModel

    model = random_unet()
    if "config" in change:
        change = {"config": {**model.info.config, **change["config"]}}
    other = SegmentationModel(model.net, dataclasses.replace(model.info, **change))
    with pytest.raises(ParameterError, match="was not written: load_model would refuse it"):
        save_model(other, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    save_model(model, tmp_path / "m.safetensors")
    assert load_model(str(tmp_path / "m.safetensors")).info.architecture == "unet"


def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Exploit()))
    torch.save({"w": torch.zeros(1)}, tmp_path / "ckpt.pt")
    for bad in (path, tmp_path / "ckpt.pt"):
        with pytest.raises(ModelFileError, match="never unpickles"):
            load_model(str(bad))
    assert not marker.exists()


def test_safetensors_without_geoseg_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="not a geoseg model file: expected a safetensors file "
                                             "whose metadata .* but it has no metadata. Save") as err:
        load_model(str(tmp_path / "plain.safetensors"))
    assert "KeyError" not in str(err.value)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "state-0003-000005.safetensors"))
    with pytest.raises(ModelFileError, match="is a checkpoint of a geoseg train run .* The model "
                                             "file is the training spec's output.model"):
        load_model(str(tmp_path / "state-0003-000005.safetensors"))


def test_unknown_architecture_lists_the_known_ones(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(random_unet(), str(path))
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    info = json.loads(header["__metadata__"]["model"])
    info["architecture"] = "resnet-unknown"
    header["__metadata__"]["model"] = json.dumps(info)
    new_header = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + length:])
    with pytest.raises(ModelFileError, match="registered architectures: .*unet"):
        load_model(str(path))


@pytest.mark.parametrize("key, value", [("std", "nan"), ("std", "inf"), ("mean", "nan"), ("mean", "-inf"),
                                        ("std", "1e-320"), ("std", "1e300"), ("mean", "1e300")])
def test_a_normalization_that_is_not_finite_is_refused_with_what_to_give(tmp_path, key, value):
    """1e-320, 1e300: finite in float64, 0 or infinite in the float32 a network computes in:
    NaN scores, or one class everywhere."""
    def edit(description: str) -> str:
        info = json.loads(description)
        info["normalization"][key][1] = float(value)
        return json.dumps(info)  # NaN and Infinity, as Python's json writes them

    path = edited_model(tmp_path, "m.safetensors", edit)
    wrong = {"mean": [128.0, 128.0, 128.0], "std": [64.0, 64.0, 64.0]}
    wrong[key][1] = float(value)
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError) as raised:
            read(path)
        said = str(raised.value)
        assert f"received mean {wrong['mean']} and std {wrong['std']}" in said
        assert "expected a finite mean and a finite std > 0 per band" in said
        assert "geoseg.save_model()" in said


def recolored(index: int, color: object):
    """An edit giving class ``index`` the colour ``color``."""
    def edit(description: str) -> str:
        info = json.loads(description)
        info["classes"][index]["color"] = color
        return json.dumps(info)
    return edit


@pytest.mark.parametrize("color", [[1, 2, 3, 4, 5], [1, 2], [0, 256, 0], [-1, 0, 0], [1.5, 2, 3],
                                   "red", [True, 0, 0], None])
def test_a_class_colour_that_is_not_rgb_is_refused_when_the_file_is_read(tmp_path, color):
    path = edited_model(tmp_path, "m.safetensors", recolored(2, color))
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError) as raised:
            read(path)
        said = str(raised.value)
        assert f"class 'class_2': received colour {color!r}" in said, said
        assert "expected three integers in 0..255 (red, green, blue)" in said
        assert "geoseg.save_model()" in said


def configured(key: str, value: object):
    """An edit setting ``config[key]`` of the model description to ``value``."""
    def edit(description: str) -> str:
        info = json.loads(description)
        info["config"][key] = value
        return json.dumps(info)
    return edit


@pytest.mark.parametrize("key, value, said", [
    ("depth", -1, "got depth=-1"),
    ("width", 0, "width=0"),
    ("depth", "3", "depth='3' (str); expected a whole number"),
    ("bogus", 1, "unexpected keyword argument 'bogus'"),
])
def test_a_config_value_its_architecture_refuses_names_the_model_file_and_the_field(
        tmp_path, key, value, said):
    path = edited_model(tmp_path, "m.safetensors", configured(key, value))
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError) as raised:
            read(path)
        text = str(raised.value)
        assert text.startswith(f"model file {path} (unet, config {{"), text
        assert f'"{key}": {json.dumps(value)}' in text and said in text
        assert "does not build" in text and "geoseg.save_model()" in text and "\n" not in text
    result = run_cli("info", path)
    assert result.returncode == 2 and f"model file {path} (unet" in result.stderr, result


def renamed(names: dict[int, str]):
    """An edit giving class ``i`` the name ``names[i]``."""
    def edit(description: str) -> str:
        info = json.loads(description)
        for index, name in names.items():
            info["classes"][index]["name"] = name
        return json.dumps(info)
    return edit


def test_a_class_name_given_twice_in_a_model_file_is_refused_naming_it_and_the_file(tmp_path):
    path = edited_model(tmp_path, "m.safetensors", renamed({2: "class_0", 3: "class_1"}))
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError) as raised:
            read(path)
        said = str(raised.value)
        assert said.startswith(f"Model file {path} describes a model that cannot be used: "
                               "classes: received 4 classes in which "), said
        assert ("'class_0' is given 2 times (classes 0 and 2); 'class_1' is given 2 times "
                "(classes 1 and 3); expected each class name once") in said
        assert "Rename or remove the duplicate" in said and "geoseg.save_model()" in said


def test_metadata_nested_past_the_recursion_limit_is_a_model_file_error(tmp_path):
    path = edited_model(tmp_path, "m.safetensors",
                        lambda text: text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError, match="its metadata nests arrays or objects 100001 "
                                                 "levels deep; expected at most 256"):
            read(path)


def test_missing_file_names_the_builtin_models(tmp_path):
    with pytest.raises(ModelFileError, match="No model file"):
        load_model(str(tmp_path / "nope.safetensors"))


def test_builtin_model_loads():
    assert "demo-unet" in builtin_models()
    model = geoseg.load_model("builtin:demo-unet")
    assert model.info.bands == ("red", "green", "blue")
    assert [c.name for c in model.classes] == ["water", "vegetation", "bare_soil", "road", "building"]


def traced_archive(path: Path) -> Path:
    """A real TorchScript archive of a small net (torch.jit.trace, then torch.jit.save), with
    geoseg metadata in its ``geoseg.json`` extra file as earlier versions exported it."""
    net = torch.nn.Conv2d(3, 4, 1)
    meta = {**random_unet().info.to_dict(), "sha256": "", "stride": [1, 1],
            "receptive_radius": [0, 0], "global_context": False}
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; tracer chatter too
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.zeros(1, 3, 4, 4))
        torch.jit.save(traced, str(path), _extra_files={"geoseg.json": json.dumps(meta)})
    return path


def test_a_torchscript_archive_is_refused_without_loading_its_code(tmp_path, monkeypatch):
    """TorchScript runs code stored in the file at every forward pass: geoseg never hands it
    to torch.jit.load, and says what to give instead."""
    path = traced_archive(tmp_path / "scripted.pt")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the archive was handed to torch to load")

    monkeypatch.setattr(torch.jit, "load", never)
    monkeypatch.setattr(torch, "load", never)
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError) as raised:
            read(str(path))
        said = str(raised.value)
        assert f"Model file {path} is a TorchScript archive" in said, said
        assert "does not load TorchScript because it runs code stored in the file" in said
        assert "geoseg.models.save_model()" in said
        assert "@geoseg.models.register_architecture(NAME)" in said
        assert "'geoseg.models' entry-point group" in said and "\n" not in said
    result = run_cli("info", str(path))
    assert result.returncode == 2, result
    assert "is a TorchScript archive" in result.stderr and "Traceback" not in result.stderr


def test_torchscript_export_is_gone():
    import geoseg.models

    assert not hasattr(geoseg.models, "export_torchscript")
    assert "export_torchscript" not in geoseg.models.__all__


def test_the_header_gives_what_the_client_plans_with_and_no_weights(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_model(random_unet(depth=3), path)
    header, model = read_header(path), load_model(path, device="cpu")
    assert (header.stride, header.halo, header.global_context) == (model.stride, model.halo, False)
    assert header.classes == model.classes and header.bands == model.bands
    # url and the weights' sha256: what tasks carry, and the device the model was placed on
    assert header.ref() == dataclasses.replace(model.ref(), device=None)
    assert model.ref().device == "cpu"
    with pytest.raises(ModelFileError, match="header only"):
        header.predict(np.zeros((1, 3, 8, 8), np.float32))


def test_reading_a_header_never_builds_the_weights_it_declares(tmp_path):
    """A small file whose metadata declares a network of about 10^12 parameters: the client
    counts it on a weightless (meta-device) network, allocating nothing, and refuses it."""
    info = random_unet().info.to_dict()
    info.update(config={"in_channels": 3, "num_classes": 4, "depth": 12, "width": 64}, sha256="ab" * 32)
    from safetensors.torch import save

    tensors = {f"w{i}": torch.zeros(1) for i in range(200)}  # as many as such a network holds
    data = save(tensors, metadata={"format": "geoseg-model/1", "model": json.dumps(info)})
    path = tmp_path / "huge.safetensors"
    path.write_bytes(data)
    with pytest.raises(BudgetError, match=r"2.04e12 parameters.*GEOSEG_MAX_MODEL_PARAMETERS"):
        read_header(str(path))


def test_a_header_listing_more_tensors_than_the_limit_is_refused_before_it_is_parsed(
        tmp_path, monkeypatch):
    """Each header entry costs about a kilobyte once parsed (1e6 of them took 1.1 GB and 14 s
    before this check): the entries are counted on the bytes, escaped key names included."""
    path = tmp_path / "m.safetensors"
    save_model(random_unet(depth=3), str(path))
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    table = json.loads(data[8 : 8 + length])
    n_listed = len(table) - 1  # the network's tensors, besides __metadata__
    extra = "".join(f', "x{i}": {{"dtype": "F32", "shape": [1], "data\\u005foffsets": [0, 4]}}'
                    for i in range(50))
    header = data[8 : 8 + length].decode().rstrip()
    header = (header[:-1] + extra + "}").encode()
    header += b" " * (-len(header) % 8)
    hostile = tmp_path / "many.safetensors"
    hostile.write_bytes(struct.pack("<Q", len(header)) + header + data[8 + length :])
    monkeypatch.setenv("GEOSEG_MAX_MODEL_TENSORS", str(n_listed + 40))
    parsed = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(a) or {})
    with pytest.raises(BudgetError, match=r"many.safetensors: its header holds \d+ JSON objects.*"
                                          r"GEOSEG_MAX_MODEL_TENSORS"):
        read_header(str(hostile))
    assert not parsed
    monkeypatch.undo()
    monkeypatch.setenv("GEOSEG_MAX_MODEL_TENSORS", str(n_listed + 10))  # the metadata's own braces
    assert read_header(str(path)).classes == load_model(str(path), device="cpu").classes


def _saved_with(tmp_path: Path, change) -> str:
    """A random U-Net's file written after ``change(first conv weight)`` replaced that weight's
    data (as save_model would write it, but unchecked: save_model refuses what will not load)."""
    from geoseg.models.modelfile import model_to_bytes

    path = tmp_path / "m.safetensors"
    path.write_bytes(model_to_bytes(_changed(change))[0])
    return str(path)


def _changed(change):
    """A random U-Net whose first conv weight ``change`` replaced."""
    model = random_unet(classes=3, seed=2)
    conv = model.net.encoders[0][0]
    conv.weight = torch.nn.Parameter(change(conv.weight.data), requires_grad=False)
    return model


def test_weights_holding_nan_are_refused_naming_the_tensor(tmp_path):
    """A diverged model loaded: its probabilities were all NaN (no data) and its class ids all
    0, and validate passed it."""
    from geoseg.models.modelfile import check_weights

    def poisoned(w):
        w = w.clone()
        w[0, 0, 0, 0] = float("nan")
        return w
    path = _saved_with(tmp_path, poisoned)
    said = r"tensor encoders\.0\.0\.weight holds 1 NaN or infinite value\(s\) of 216; training diverged"
    with pytest.raises(ModelFileError, match=said):
        load_model(path)
    with pytest.raises(ModelFileError, match=said):
        check_weights(path)  # what validate runs: every tensor read, one at a time


def _poisoned(w):
    w = w.clone()
    w[0, 0, 0, 0] = float("nan")
    return w


NAN_SAID = r"tensor encoders\.0\.0\.weight holds 1 NaN or infinite value\(s\) of 216; training diverged"


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
       st.integers(0, 40), st.lists(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e5]),
                                     max_size=3), st.integers(0, 2**32 - 1))
def test_non_finite_weights_are_found_wherever_they_lie_and_counted(dtype, n, specials, seed):
    from geoseg.models.tensors import non_finite_said

    weights = torch.from_numpy(np.random.default_rng(seed).normal(size=n)).to(dtype)
    for i, value in enumerate(specials[:n]):
        weights[(seed + 7 * i) % n] = value  # 1e5 overflows float16 to inf
    bad = int((~torch.isfinite(weights)).sum())
    said = non_finite_said({"w": weights, "steps": torch.tensor([3])})
    assert said == (f"tensor w holds {bad} NaN or infinite value(s) of {n}" if bad else None)


def test_save_model_refuses_weights_holding_nan(tmp_path):
    """save_model wrote a file that load_model then refused, with the same check."""
    path = tmp_path / "nan.safetensors"
    with pytest.raises(ParameterError, match=rf"save_model\(\): .* was not written: .*{NAN_SAID}"):
        save_model(_changed(_poisoned), str(path))
    assert not path.exists()


def test_in_memory_model_with_nan_weights_is_refused_not_class_0(tmp_path):
    """segment() of a diverged in-memory model gave class 0 on every pixel."""
    import xarray as xr

    model = _changed(_poisoned)  # the weight changed after the model was built
    raster = xr.DataArray(textured_image(40, 50, bands=3, seed=1), dims=("band", "y", "x"))
    with pytest.raises(ParameterError, match=NAN_SAID):
        geoseg.segment(raster, model)
    with pytest.raises(ParameterError, match=NAN_SAID):
        model.predict_image(raster.values)  # NaN scores everywhere, read as class 0
    with pytest.raises(ParameterError, match=rf"SegmentationModel: net: its {NAN_SAID}"):
        geoseg.SegmentationModel(model.net, model.info)


def test_integer_weights_of_a_float_layer_are_refused_from_the_header(tmp_path):
    """int32 weights were cast on loading, and the network scored class 0 everywhere."""
    path = _saved_with(tmp_path, lambda w: (w * 100).to(torch.int32))
    said = r"tensor encoders\.0\.0\.weight is stored as torch\.int32 but the network holds it as torch\.float32"
    with pytest.raises(ModelFileError, match=said):
        read_header(path)  # the client refuses it before any worker loads it
    with pytest.raises(ModelFileError, match=said):
        load_model(path)
    with pytest.raises(ParameterError, match=rf"save_model\(\): .* was not written: load_model would refuse it.*{said}"):
        save_model(_changed(lambda w: (w * 100).to(torch.int32)), str(tmp_path / "m2.safetensors"))
    assert not (tmp_path / "m2.safetensors").exists()


def test_float16_weights_load_as_the_float32_they_were_saved_from(tmp_path):
    path = _saved_with(tmp_path, lambda w: w.half())
    loaded = load_model(path)
    assert loaded.net.encoders[0][0].weight.dtype == torch.float32


@pytest.mark.parametrize("dtype", [["F32"], {"F": 32}, 7, None])
def test_a_header_dtype_that_is_no_name_is_a_model_file_error(tmp_path, dtype):
    """A list there raised TypeError (unhashable) from the dtype check (found by the fuzz test)."""
    path = tmp_path / "m.safetensors"
    save_model(random_unet(classes=3, seed=2), str(path))
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    table = json.loads(data[8 : 8 + length])
    table["encoders.0.0.weight"]["dtype"] = dtype
    head = json.dumps(table).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data[8 + length :])
    with pytest.raises(ModelFileError):
        read_header(str(path))
    with pytest.raises(ModelFileError):
        load_model(str(path))


def test_names_with_terminal_escapes_are_shown_escaped_not_obeyed(tmp_path):
    """geoseg info printed a model's name as it was: ESC [31m recoloured the terminal (and an
    OSC sequence could retitle it, or worse)."""
    import dataclasses

    from geoseg import ClassInfo, SegmentationModel

    model = random_unet(classes=2)
    hostile = "\x1b[31mred\x1b]0;pwned\x07"
    info = dataclasses.replace(model.info, name=hostile,
                               classes=(ClassInfo(hostile), ClassInfo("water")))
    path = tmp_path / "m.safetensors"
    save_model(SegmentationModel(model.net, info), path)
    shown = run_cli("info", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "\\x1b[31mred\\x1b]0;pwned\\x07" in shown.stdout.replace("\n", "")
    refused = run_cli("run", str(tmp_path / f"{hostile}.yaml"))  # a message quoting the name
    assert refused.returncode == 2 and "\x1b" not in refused.stderr and "\\x1b" in refused.stderr


def test_a_config_building_far_more_layers_than_the_file_holds_is_stopped_as_it_builds(tmp_path):
    """A 39 KB header asking for fcn with `convs: 60000` of width 1 passed every size budget;
    building it on the meta device took 76 s and 3.6 GB before any check could refuse it."""
    def edit(description: str) -> str:
        info = json.loads(description)
        info.update(architecture="fcn", config={**info["config"], "convs": 20000, "width": 1})
        info["config"].pop("depth", None)
        return json.dumps(info)

    path = edited_model(tmp_path, "deep.safetensors", edit)
    for read in (load_model, read_header):
        with pytest.raises(BudgetError, match=r"builds more than [\d,]+ modules and tensors, though "
                                              r"the file holds \d+ tensors"):
            read(path)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_model_path_that_is_a_fifo_or_a_device_is_refused_before_any_read(tmp_path, kind):
    """A FIFO hung info and validate for ever; a link to /dev/zero was read until MemoryError."""
    path = tmp_path / "m.safetensors"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    said = "a FIFO (named pipe)" if kind == "fifo" else "a device"
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError, match=rf"m.safetensors is {re.escape(said)}, not a file"):
            read(str(path))


def test_a_header_of_128_bytes_mod_256_is_read_as_safetensors_not_called_a_pickle(tmp_path):
    """Its length prefix begins with 0x80, the pickle's first byte: the file was called a
    pickle, and its tensors were not counted against GEOSEG_MAX_MODEL_TENSORS."""
    from safetensors.torch import save

    data = save({"w": torch.zeros(2)}, metadata={"format": "not-geoseg"})
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + length].rstrip(b" ")
    header += b" " * ((0x80 - len(header)) % 256)
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data[8 + length:])
    assert path.read_bytes()[:1] == b"\x80"
    with pytest.raises(ModelFileError, match="is not a geoseg model file") as refused:
        read_header(str(path))
    assert "pickle" not in str(refused.value)


def test_load_model_reads_no_further_than_the_header_declares(tmp_path, monkeypatch):
    """The whole file was read before its header was looked at."""
    path = tmp_path / "m.safetensors"
    save_model(random_unet(depth=2), str(path))
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0" * (8 << 20))  # grown past what its header declares
    asked = []
    from fsspec.implementations import local

    read = local.LocalFileOpener.read
    monkeypatch.setattr(local.LocalFileOpener, "read",
                        lambda self, n=-1: asked.append(n) or read(self, n))
    load_model(str(path))
    assert -1 not in asked and sum(n for n in asked if n > 0) < 2 * size


@pytest.mark.parametrize("bands", ["rgb", {"r": 1}, [1.5, 2, 3], None])
def test_bands_that_are_no_list_of_names_are_refused_not_read_letter_by_letter(tmp_path, bands):
    """'rgb' was read as three bands r, g, b, where a single string for classes is refused."""
    def edit(description: str) -> str:
        return json.dumps({**json.loads(description), "bands": bands})

    path = edited_model(tmp_path, "m.safetensors", edit)
    with pytest.raises(ModelFileError, match=r"bands: received .*; expected a list of band names"):
        read_header(path)


@pytest.mark.parametrize("declared, said", [
    (200_000_000, ("its header declares 200,000,000 bytes, more than the 104,857,600 any "
                   "safetensors file may hold")),
    (5_000, "its header declares 5,000 bytes where 2 follow the length")])
def test_a_header_length_out_of_bounds_is_named_with_the_bound_it_breaks(tmp_path, declared, said):
    """A 200 MB header was "header length 200009408 does not fit a file of 104857608 bytes":
    the bytes read, not the file's size, and never the 100 MB bound it broke."""
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", declared) + b"{}")
    with pytest.raises(ModelFileError) as caught:
        read_header(str(path))
    assert said in str(caught.value), caught.value
