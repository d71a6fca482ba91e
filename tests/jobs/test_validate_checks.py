"""``geoseg validate`` catches what a run would fail on, without computing: feature bands of a
fitted method, an output that cannot be written, array metadata that does not describe its
chunks, a model whose classes disagree with its network or with the output's nodata class.
Each case is real (real stores, real model files, a real read-only mount) and exits 2 with
one clean message."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli import geoseg
from tests.conftest import job_dict, textured_image, write_zarr
from tests.test_errors_cli import assert_clean, read_only


@pytest.fixture()
def scene(tmp_path) -> Path:
    return Path(write_zarr(tmp_path / "scene.zarr", textured_image(130, 120)))


@pytest.fixture()
def cli():
    """``geoseg ARGS`` in this process: (exit code, what it printed as one line)."""
    def call(*args: str) -> tuple[int, str]:
        result = geoseg(*args)
        return result.returncode, " ".join((result.stdout + result.stderr).split())

    return call


def test_an_error_naming_a_long_path_keeps_it_on_one_line(tmp_path, monkeypatch, capsys):
    """stderr in a log or a CI job is not a terminal: rich would fold the message at 80
    columns, breaking the path a user copies from it."""
    from geoseg.cli import main

    deep = tmp_path / ("a-folder-with-a-long-name-" * 4) / "job.yaml"
    monkeypatch.setattr(sys, "argv", ["geoseg", "validate", str(deep)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, nothing else printed
    assert str(deep) in line and len(line) > 100


def write_job(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def method_job(tmp_path: Path, scene: Path, method: str, **params) -> str:
    return write_job(tmp_path, {"input": {"url": str(scene)},
                                "model": {"method": method, "params": params},
                                "output": {"url": str(tmp_path / "out.zarr"), "chunks": [64, 64]}})


def test_a_valid_job_still_validates(tmp_path, scene, model_path, cli):
    code, said = cli("validate", write_job(tmp_path, job_dict(str(scene), model_path,
                                                               str(tmp_path / "out.zarr"))))
    assert code == 0 and "ok:" in said, said
    code, said = cli("validate", method_job(tmp_path, scene, "otsu", feature=3))
    assert code == 0 and "method otsu" in said, said
    assert not (tmp_path / "out.zarr").exists()


# --- methods' feature bands --------------------------------------------------------------


@pytest.mark.parametrize("method, params, message", [
    ("otsu", {"feature": 5}, "model.params: Feature band 5 uses band(s) [5] but the input has 3"),
    ("multiotsu", {"feature": [4, 1], "classes": 3}, "uses band(s) [4] but the input has 3"),
    ("otsu", {}, "No feature was given, which means the raster's only band, but the input has 3"),
    ("histogram", {"feature": 9}, "Feature band 9 uses band(s) [9]"),
    ("threshold", {"thresholds": [100], "feature": 5},  # was keyed input.bands, unlike the others
     "model.params: Feature band 5 uses band(s) [5] but input "),
    ("sobel", {"feature": [1, 7]}, "model.params: Feature (b1 - b7) / (b1 + b7) uses band(s) [7]"),
    ("kmeans", {"k": 3, "bands": [1, 4]}, "model.params: bands: received [1, 4], but the input has"),
    ("kmeans", {"k": 3, "feature": 2},
     "model.params: kmeans: received ['feature', 'k']; unknown: feature. Its parameters are k, bands"),
    ("kmeans", {}, "model.params: kmeans: received no parameters; missing, and required: k. Its"),
    ("otsu", {"feature": 1, "k": 2}, "model.params: otsu: received ['feature', 'k']; unknown: k."),
    ("otsu", {"feature": [2, 2]}, "model.params: feature: received the pair (2, 2), (b2 - b2) / "),
])
def test_method_feature_bands_and_params_are_checked(tmp_path, scene, cli, method, params, message):
    code, said = cli("validate", method_job(tmp_path, scene, method, **params))
    assert code == 2 and message in said, said


@pytest.mark.parametrize("method, params, message", [
    ("kmeans", {"k": 0}, "model.params.k: received 0; expected a whole number >= 1"),
    ("kmeans", {"k": "3"}, "model.params.k: received '3'; expected a whole number >= 1 (this is text"),
    ("kmeans", {"k": 3, "bands": 1}, "model.params.bands: received 1; expected a list of band"),
    ("kmeans", {"k": 3, "tol": "tiny"}, "model.params.tol: received 'tiny'; expected a number >= 0"),
    ("multiotsu", {"feature": 1, "classes": 1}, "model.params.classes: received 1; expected a whole"),
    ("otsu", {"feature": 1, "nbins": "x"}, "model.params.nbins: received 'x'"),
    ("threshold", {"thresholds": "abc"}, "model.params.thresholds: received 'abc'; expected a number"),
    ("threshold", {"thresholds": [1], "feature": [1, "x"]}, "model.params.feature: received [1, 'x']"),
    ("local", {"block_size": "x", "feature": 1}, "model.params.block_size: received 'x'"),
    ("canny", {"low_threshold": "x", "high_threshold": 1, "feature": 1},
     "model.params.low_threshold: received 'x'; expected a number >= 0, or null"),
    ("sobel", {"threshold": "x", "feature": 1}, "model.params.threshold: received 'x'"),
])
def test_method_params_of_a_wrong_type_or_value_name_their_key(tmp_path, scene, method, params,
                                                               message):
    result = geoseg("validate", method_job(tmp_path, scene, method, **params))
    assert_clean(result, 2, message)


def test_a_run_refuses_k_0_before_anything_starts(tmp_path, scene):
    result = geoseg("run", method_job(tmp_path, scene, "kmeans", k=0), "--cluster", "threads")
    assert_clean(result, 2, "model.params.k: received 0")
    assert not (tmp_path / "out.zarr").exists()


def test_a_manual_threshold_may_be_one_number(tmp_path, scene, cli):
    code, said = cli("validate", method_job(tmp_path, scene, "threshold", thresholds=100, feature=1))
    assert code == 0 and "manual threshold" in said, said


def test_a_member_of_an_ensemble_is_checked_too(tmp_path, scene, cli):
    data = {"input": {"url": str(scene)},
            "model": {"ensemble": {"members": [{"method": "otsu", "params": {"feature": 1}},
                                               {"method": "li", "params": {"feature": 7}}]}},
            "output": {"url": str(tmp_path / "out.zarr"), "chunks": [64, 64]}}
    code, said = cli("validate", write_job(tmp_path, data))
    assert code == 2 and "model.ensemble.members.1.params: Feature band 7" in said, said


# --- the output folder ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_read_only_output_folder_fails_validate(tmp_path, model_path, scene):
    folder = tmp_path / "ro"
    folder.mkdir()
    prefix = read_only(folder)
    job = write_job(tmp_path, job_dict(str(scene), model_path, str(folder / "sub" / "out.zarr")))
    try:
        result = geoseg("validate", job, prefix=prefix)
    finally:
        folder.chmod(0o755)
    # root writes anywhere: there, the folder is a read-only mount
    reason, said = (("Read-only file system", "its file system is mounted read-only")
                    if os.geteuid() == 0 else ("Permission denied", "permission denied"))
    assert_clean(result, 2, f"output.url: Writing {folder}/sub/out.zarr failed: {said}",
                 f"{reason}: '{folder}'", "read-only or not writable")


def test_a_file_where_the_output_folder_should_be_fails_validate(tmp_path, model_path, scene,
                                                                  cli):
    (tmp_path / "taken").write_text("a thesis")
    out = tmp_path / "taken" / "out.zarr"
    code, said = cli("validate", write_job(tmp_path, job_dict(str(scene), model_path, str(out))))
    assert code == 2 and f"cannot write {out}: {tmp_path / 'taken'} is a file" in said, said


def test_validate_says_what_run_will_do_with_an_existing_output(tmp_path, scene, cli):
    """A folder of the user's is refused as the run refuses it; a geoseg output is resumed by
    the same job and refused, unless --overwrite, by another."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    job = method_job(tmp_path, scene, "threshold", thresholds=[100], feature=1)
    spec = yaml.safe_load(Path(job).read_text())
    code, said = cli("validate", write_job(tmp_path, {**spec, "output": {**spec["output"],
                                                                          "url": str(tmp_path / "mine")}}))
    assert code == 2 and "already exists and is not a geoseg output" in said, said
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"

    job = method_job(tmp_path, scene, "threshold", thresholds=[100], feature=1)
    assert geoseg("run", job, "--cluster", "threads").returncode == 0
    code, said = cli("validate", job)
    assert code == 0 and "written by this job: `geoseg run` resumes it" in said, said
    code, said = cli("validate", method_job(tmp_path, scene, "threshold", thresholds=[90], feature=1))
    assert code == 0 and "made by a different job" in said and "unless --overwrite" in said, said


# --- array metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(data_type="float64"), "cannot reshape array"),
    (lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[3, 50, 50]),  # too small:
     ("declares 12,288 bytes once decoded, but a chunk of this array holds 3 x 50 x 50 uint8 "
      "(7,500 bytes)")),  # refused before decoding, as a decompression bomb would be
])
def test_array_metadata_that_does_not_describe_its_chunks_fails_validate(tmp_path, scene,
                                                                         model_path, cli, edit,
                                                                         message):
    meta = json.loads((scene / "zarr.json").read_text())
    edit(meta)
    (scene / "zarr.json").write_text(json.dumps(meta))
    code, said = cli("validate", write_job(tmp_path, job_dict(str(scene), model_path,
                                                               str(tmp_path / "out.zarr"))))
    assert code == 2, said
    assert "input.url: input window y 0:" in said and "c/0/0/0" in said and message in said, said


# --- classes -----------------------------------------------------------------------------


def with_classes(path: str, out: Path, keep: int) -> str:
    """A copy of model file ``path`` whose metadata names only its first ``keep`` classes."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    model = json.loads(header["__metadata__"]["model"])
    model["classes"] = model["classes"][:keep]
    header["__metadata__"]["model"] = json.dumps(model)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    return str(out)


def test_a_model_whose_classes_disagree_with_its_network_fails_validate(tmp_path, scene,
                                                                        model_path, cli):
    model = with_classes(model_path, tmp_path / "three.safetensors", 3)
    code, said = cli("validate", write_job(tmp_path, job_dict(str(scene), model,
                                                               str(tmp_path / "out.zarr"))))
    assert code == 2, said
    assert "model.path: model file" in said and "scores 4 classes but its metadata names 3" in said


def with_a_weight_changed(model_path: str, out: Path) -> str:
    """The model file with one byte of its weights flipped: its header is intact."""
    data = bytearray(Path(model_path).read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    data[8 + length + 100] ^= 0xFF
    out.write_bytes(bytes(data))
    return str(out)


def test_a_model_file_whose_weights_changed_fails_validate_and_info_as_it_would_a_run(
        tmp_path, scene, model_path, cli):
    """A run's client reads the header alone; its workers refuse the weights when they load
    them. validate and info read the weights too, so that they do not pass such a file."""
    model = with_a_weight_changed(model_path, tmp_path / "flipped.safetensors")
    code, said = cli("validate", write_job(tmp_path, job_dict(str(scene), model,
                                                               str(tmp_path / "out.zarr"))))
    assert code == 2, said
    assert f"model.path: Model file {model} has weights with sha256" in said
    assert "but its metadata expects" in said and "Traceback" not in said
    member = {"input": {"url": str(scene)},
              "model": {"ensemble": {"members": [{"path": model_path}, {"path": model}]}},
              "output": {"url": str(tmp_path / "out.zarr"), "chunks": [64, 64]}}
    code, said = cli("validate", write_job(tmp_path, member))
    assert code == 2 and "model.ensemble.members.1.path: Model file" in said, said
    code, said = cli("info", model)
    assert code == 2 and "but its metadata expects" in said and "parameters" not in said, said
    code, said = cli("info", model_path)
    assert code == 0 and "(of the weights: checked)" in said, said


@pytest.mark.parametrize("nodata_class", [300, -1, 2])
def test_a_nodata_class_the_class_array_cannot_hold_or_a_class_uses_fails_validate(
        tmp_path, scene, model_path, cli, nodata_class):
    """2 is a class of the model: no-data would merge with it, and readers would mask it."""
    data = job_dict(str(scene), model_path, str(tmp_path / "out.zarr"), nodata_class=nodata_class)
    code, said = cli("validate", write_job(tmp_path, data))
    assert code == 2, said
    assert (f"output.nodata_class: received {nodata_class}, but the model's 4 classes (ids 0 to 3) "
            "are stored as uint8, which holds 0 to 255; give an id from 4 to 255") in said


def test_a_runs_dir_that_is_a_file_fails_validate(tmp_path, scene, model_path, cli):
    notes = tmp_path / "notes.txt"
    notes.write_text("a thesis")
    data = {**job_dict(str(scene), model_path, str(tmp_path / "out.zarr")), "runs_dir": str(notes)}
    code, said = cli("validate", write_job(tmp_path, data))
    assert code == 2 and f"runs_dir: cannot write {notes}: {notes} is a file" in said, said


def test_validate_names_an_ensemble_or_a_tta_for_what_it_is(tmp_path, scene, cli):
    base = {"input": {"url": str(scene)}, "output": {"url": str(tmp_path / "out.zarr")}}
    tta = {**base, "model": {"path": "builtin:demo-unet", "tta": "flips"}}
    code, said = cli("validate", write_job(tmp_path, tta))
    assert code == 0 and "model demo-unet (TTA flips) (test-time augmentation)" in said, said
    members = [{"method": "otsu", "params": {"feature": b}} for b in (1, 2)]
    code, said = cli("validate", write_job(tmp_path, {**base, "model": {"ensemble": {
        "members": members}}}))
    assert code == 0 and "ensemble (its statistics are fitted" in said and "None" not in said, said


def _volume_job(tmp_path: Path, shape: tuple[int, ...], **inference: object) -> Path:
    """A job thresholding a declared (empty) int16 volume into 256-voxel output chunks."""
    import zarr

    zarr.create_array(str(tmp_path / "vol.zarr"), shape=(1, *shape), chunks=(1, 500, 500, 500),
                      dtype="int16", dimension_names=["band", "z", "y", "x"])
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "input": {"url": str(tmp_path / "vol.zarr"), "missing_chunks": "fill"},
        "model": {"method": "threshold", "params": {"thresholds": [400]}},
        "inference": inference, "output": {"url": str(tmp_path / "out.zarr"),
                                           "chunks": [256, 256, 256]}}))
    return job


def test_a_halo_free_method_is_not_warned_of_recomputation(tmp_path):
    """The audit's case: a threshold (no halo) on 4000^3 voxels in 256-voxel chunks was told
    it infers 1.40x and to use chunks of at least 96."""
    said = geoseg("validate", str(_volume_job(tmp_path, (4000, 4000, 4000))), own_process=True)
    assert said.returncode == 0, said.stderr
    assert "infer" not in said.stderr and "Warning" not in said.stderr, said.stderr


def test_a_recompute_warning_is_one_log_line_not_a_python_warning(tmp_path):
    job = _volume_job(tmp_path, (1000, 1000, 1000), halo=8)
    said = geoseg("validate", str(job), env={"GEOSEG_REGION_BYTES": str(256**3 * 24)},
                  own_process=True)
    assert said.returncode == 0, said.stderr
    lines = [line for line in said.stderr.splitlines() if "infer 1.30x" in line]
    assert len(lines) == 1 and " WARNING Output chunks (256, 256, 256) make tasks" in lines[0]
    assert "UserWarning" not in said.stderr and "runner.py" not in said.stderr, said.stderr
    assert "whole multiples of the tile, 96 pixels per axis" in lines[0]


def test_a_model_file_whose_tensor_offsets_run_backwards_is_a_model_file_error(tmp_path, model_path,
                                                                               cli):
    data = Path(model_path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    first = next(k for k in sorted(header) if k != "__metadata__")
    header[first]["data_offsets"] = header[first]["data_offsets"][::-1]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    model = tmp_path / "backwards.safetensors"
    model.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    code, said = cli("info", str(model))
    assert code == 2 and f"Model file {model} is truncated or corrupt" in said, said
    assert "internal error" not in said
