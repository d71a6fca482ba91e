"""Resuming refuses, by name, a run folder it cannot continue: images whose bands changed since
the checkpoint, checkpoints damaged or edited, and stops before the first epoch or step."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load, save

from geoseg.errors import CheckpointError, ParameterError
from geoseg.training import train
from tests.conftest import write_geotiff
from tests.training.conftest import tiny_spec, zarr_pair


def quiet(_: str) -> None:
    pass


def tiff_spec(folder: Path, image: np.ndarray, labels: np.ndarray) -> dict:
    write_geotiff(folder / "image.tif", image, nodata=None)
    write_geotiff(folder / "labels.tif", labels[None], nodata=None)
    pair = {"image": {"url": str(folder / "image.tif")}, "labels": {"url": str(folder / "labels.tif")}}
    return tiny_spec([pair], folder / "out")


def test_resuming_after_the_images_gained_a_band_is_refused_naming_the_bands(tmp_path, scene):
    """The checkpoint's 3-band normalization met 4-band chips: an internal broadcast error."""
    spec = tiff_spec(tmp_path, scene.image, scene.labels)
    assert train(spec, max_epochs=1, log=quiet).status == "interrupted"
    write_geotiff(tmp_path / "image.tif", np.concatenate([scene.image, scene.image[:1]]), nodata=None)
    with pytest.raises(CheckpointError) as refused:
        train(spec, log=quiet)
    said = str(refused.value)
    assert "a run on images of 3 band(s) (red, green, blue)" in said, said
    assert "data.train.0.image" in said and "now has 4 (red, green, blue, alpha)" in said, said
    assert "new output.run_dir" in said and "--overwrite" in said, said


def test_resuming_after_the_bands_were_renamed_is_refused(tmp_path, scene):
    spec = tiff_spec(tmp_path, scene.image, scene.labels)
    train(spec, max_epochs=1, log=quiet)
    meta_path = next((tmp_path / "out" / "model.run" / "checkpoint").glob("*.json"))
    meta = json.loads(meta_path.read_text())
    assert meta["state"]["data"]["bands"] == ["red", "green", "blue"]  # recorded from now on
    meta["state"]["data"]["bands"] = ["b1", "b2", "b3"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"images of 3 band\(s\) \(b1, b2, b3\); .* now "
                                              r"has 3 \(red, green, blue\)"):
        train(spec, log=quiet)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory, scene_zarr: str) -> tuple[Path, dict]:
    """A run folder after one of two epochs, and its spec, whose outputs are relative to the
    working directory: each test damages a copy of the folder, in the copy."""
    folder = tmp_path_factory.mktemp("one-epoch")
    spec = tiny_spec([zarr_pair(scene_zarr)], Path("."))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        train(spec, max_epochs=1, log=quiet)
    return folder, spec


def _edit_json(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(meta_path: Path) -> None:
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps(edit(meta)))
    return damage


def _truncate(meta_path: Path) -> None:
    text = meta_path.read_text()
    meta_path.write_text(text[: len(text) // 2])


def _drop_model_tensor(meta_path: Path) -> None:
    """A model weight removed from the tensor file, and the JSON's hash updated to match."""
    tensor_path = meta_path.with_suffix(".safetensors")
    tensors = load(tensor_path.read_bytes())
    tensors.pop(next(k for k in sorted(tensors) if k.startswith("model.") and k.endswith(".weight")))
    data = save(tensors)
    tensor_path.write_bytes(data)
    meta = json.loads(meta_path.read_text())
    meta["tensors_sha256"] = hashlib.sha256(data).hexdigest()
    meta_path.write_text(json.dumps(meta))


def _unknown_state_key(meta: dict) -> dict:
    meta["state"]["bogus"] = 1
    return meta


def _state_data_a_list(meta: dict) -> dict:
    meta["state"]["data"] = []
    return meta


def _without(key: str) -> Callable[[dict], dict]:
    return lambda meta: {k: v for k, v in meta.items() if k != key}


@pytest.mark.parametrize(("damage", "problem"), [
    (_truncate, "it is not JSON"),
    (_edit_json(lambda meta: [1, 2]), r"received a JSON list \(\[1, 2\]\); expected an object"),
    (_edit_json(_without("tensors")), r'"tensors": received None; expected the name of the tensor file'),
    (_edit_json(lambda meta: {**meta, "tensors": "../../x.safetensors"}), r'"tensors": received'),
    (_edit_json(_unknown_state_key), r'"state": unknown key\(s\) bogus; expected the keys epoch, '),
    (_edit_json(_without("optimizer")), "its JSON has no 'optimizer' key"),
    (_edit_json(_state_data_a_list), r'"state.data": received \[\]; expected an object'),
    (_drop_model_tensor, r"its state does not fit this run's network and optimizer \(.*Missing key"),
], ids=["truncated", "a-list", "no-tensors", "tensors-elsewhere", "unknown-state-key", "no-optimizer",
        "state-data-a-list", "model-tensor-removed"])
def test_a_damaged_or_edited_checkpoint_is_refused_naming_it(tmp_path, monkeypatch, one_epoch,
                                                            damage, problem):
    """Each was an internal error: JSONDecodeError, TypeError, KeyError, RuntimeError."""
    folder, spec = one_epoch
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    meta_path = Path("model.run/checkpoint/state-0001.json")
    damage(meta_path)
    with pytest.raises(CheckpointError, match=f"checkpoint {meta_path}: {problem}") as refused:
        train(spec, log=quiet)
    said = str(refused.value)
    assert "interrupted while writing, or edited" in said and "(--overwrite)" in said, said


@pytest.mark.parametrize("limit", ["max_epochs", "max_steps"])
@pytest.mark.parametrize("value", [0, -5])
def test_a_stop_before_the_first_epoch_or_step_is_refused(tmp_path, limit, value):
    """max_epochs=0 trained one epoch without a word."""
    with pytest.raises(ParameterError, match=f"{limit}: received {value}; expected None .* at least 1"):
        train({"not": "read"}, log=quiet, **{limit: value})
