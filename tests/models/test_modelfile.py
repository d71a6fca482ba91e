"""Model files: round trip, integrity, and refusal of anything that could execute."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch

import geoseg
from geoseg.errors import BudgetError, ModelFileError
from geoseg.models import builtin_models, load_model, save_model
from geoseg.models.modelfile import export_torchscript, read_header
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
    with pytest.raises(ModelFileError, match="the job expects"):
        load_model(path, expected_sha256="0" * 64)


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
    with pytest.raises(ModelFileError, match="not a geoseg model file"):
        load_model(str(tmp_path / "plain.safetensors"))


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


@pytest.mark.parametrize("key, value", [("std", "nan"), ("std", "inf"), ("mean", "nan"), ("mean", "-inf")])
def test_a_normalization_that_is_not_finite_is_refused_with_what_to_give(tmp_path, key, value):
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


def test_metadata_nested_past_the_recursion_limit_is_a_model_file_error(tmp_path):
    path = edited_model(tmp_path, "m.safetensors",
                        lambda text: text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError, match="its metadata nests lists or objects deeper than"):
            read(path)


def test_missing_file_names_the_builtin_models(tmp_path):
    with pytest.raises(ModelFileError, match="No model file"):
        load_model(str(tmp_path / "nope.safetensors"))


def test_builtin_model_loads():
    assert "demo-unet" in builtin_models()
    model = geoseg.load_model("builtin:demo-unet")
    assert model.info.bands == ("red", "green", "blue")
    assert [c.name for c in model.classes] == ["water", "vegetation", "bare_soil", "road", "building"]


def test_torchscript_model_with_metadata_loads_and_predicts_the_same(tmp_path):
    from geoseg.models import export_torchscript

    model = random_unet(seed=6)
    export_torchscript(model, str(tmp_path / "m.pt"))
    loaded = load_model(str(tmp_path / "m.pt"))
    assert loaded.halo == model.halo and loaded.stride == model.stride
    assert loaded.info.classes == model.info.classes
    image = textured_image(40, 93)  # another size than the one traced
    np.testing.assert_allclose(loaded.predict_image(image), model.predict_image(image), atol=1e-6)


def test_torchscript_without_metadata_is_refused(tmp_path):
    with pytest.warns(DeprecationWarning):  # TorchScript is deprecated in torch 2.13
        traced = torch.jit.trace(torch.nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 4, 4))
    with pytest.warns(DeprecationWarning):
        torch.jit.save(traced, str(tmp_path / "bare.pt"))
    with pytest.raises(ModelFileError, match="TorchScript without geoseg.json"):
        load_model(str(tmp_path / "bare.pt"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript is deprecated in torch 2.13
def test_torchscript_whose_metadata_cannot_be_used_is_a_model_file_error(tmp_path):
    """As with a safetensors file: the file is at fault, not a spec the user wrote."""
    path = str(tmp_path / "m.pt")
    export_torchscript(random_unet(), path)
    extra = {"geoseg.json": ""}
    scripted = torch.jit.load(path, _extra_files=extra)
    meta = json.loads(extra["geoseg.json"])
    meta["normalization"]["mean"] = [128.0]  # one mean for three bands
    torch.jit.save(scripted, path, _extra_files={"geoseg.json": json.dumps(meta)})
    with pytest.raises(ModelFileError, match=r"m.pt describes a model that cannot be used: .*"
                                             r"export_torchscript\(\)"):
        load_model(path)


def test_the_header_gives_what_the_client_plans_with_and_no_weights(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_model(random_unet(depth=3), path)
    header, model = read_header(path), load_model(path, device="cpu")
    assert (header.stride, header.halo, header.global_context) == (model.stride, model.halo, False)
    assert header.classes == model.classes and header.bands == model.bands
    assert header.ref() == model.ref()  # url and the weights' sha256: what tasks carry
    with pytest.raises(ModelFileError, match="header only"):
        header.predict(np.zeros((1, 3, 8, 8), np.float32))
    scripted = str(tmp_path / "m.pt")
    export_torchscript(model, scripted)
    assert read_header(scripted).halo == model.halo


def test_reading_a_header_never_builds_the_weights_it_declares(tmp_path):
    """A small file whose metadata declares a network of about 10^12 parameters: the client
    counts it on a weightless (meta-device) network, allocating nothing, and refuses it."""
    info = random_unet().info.to_dict()
    info.update(config={"in_channels": 3, "num_classes": 4, "depth": 12, "width": 64}, sha256="ab" * 32)
    from safetensors.torch import save

    data = save({"w": torch.zeros(1)}, metadata={"format": "geoseg-model/1", "model": json.dumps(info)})
    path = tmp_path / "huge.safetensors"
    path.write_bytes(data)
    with pytest.raises(BudgetError, match=r"2.04e12 parameters.*GEOSEG_MAX_MODEL_PARAMETERS"):
        read_header(str(path))
