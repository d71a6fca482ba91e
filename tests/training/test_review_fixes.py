"""Training and sweeps after a review: a password in a data URL reaches no error, log or record;
a run that trains on no labelled pixel, overlapping sweep keys, a device this process lacks and
an absurd learning rate are each refused with a geoseg error that says what to change."""

from __future__ import annotations

import functools
import json
import threading
import warnings
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from geoseg.demo import write_scene
from geoseg.training import TrainingDataError, TrainSpecError, train
from geoseg.training import trainer as trainer_module
from geoseg.training.loop import Loop, adamw, warmup_cosine
from geoseg.training.spec import TrainSpec
from geoseg.training.sweeps import SweepSpec
from tests.training.conftest import tiny_spec, zarr_pair

USER, PASSWORD = "alice", "S3cretPW7x"


def quiet(_: str) -> None:
    """No log lines."""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """No request lines on stderr."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A folder served over HTTP on 127.0.0.1; yields it and the port."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, server.server_address[1]
    server.shutdown()
    server.server_close()


def _record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "model.run" / "run.json").read_text())


# -- 1: a password in a data URL ----------------------------------------------------------------


def test_a_password_in_a_labels_url_reaches_no_error_log_or_record(tmp_path, scene, served):
    """Labels whose nodata is a class (a warning naming them) and which hold a class id past the
    classes (an error naming them), read over HTTP through a URL with a password."""
    folder, port = served
    write_scene(scene, str(folder / "s.zarr"), chunks=64)
    labels = zarr.open_group(str(folder / "s.zarr"), mode="r+")["labels"]
    labels.attrs.update({"nodata": 0, "grid_mapping": "spatial_ref"})
    labels[:, 150:] = 9  # found by a training chip, after the run record is first written
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/s.zarr"
    spec = tiny_spec([zarr_pair(url, [0, 128, 0, 160])], tmp_path,
                     data__validation=[zarr_pair(url, [128, 160, 0, 140])],
                     data__normalization={"samples": 1, "window": 8},
                     training__steps_per_epoch=20, training__batch_size=2, training__epochs=1)
    lines: list[str] = []

    with pytest.raises(TrainingDataError, match=r"holds class id 9") as caught:
        train(spec, log=lines.append)

    public = f"http://127.0.0.1:{port}/s.zarr"
    assert public in str(caught.value) and any(public in line and "nodata 0" in line for line in lines)
    shown = [str(caught.value), *lines, json.dumps(_record(tmp_path))]
    assert not [text for text in shown if PASSWORD in text or f"{USER}:" in text]


def test_a_secret_in_a_failures_message_is_scrubbed_from_the_run_record(tmp_path, scene_zarr,
                                                                        monkeypatch):
    """The backstop: whatever message a failure carries, the record keeps it public."""
    def fail(*_: object, **__: object) -> None:
        raise TrainingDataError(f"could not read http://{USER}:{PASSWORD}@127.0.0.1:9/x.zarr?sig=abc")

    monkeypatch.setattr(trainer_module, "run_epoch", fail)
    with pytest.raises(TrainingDataError):
        train(tiny_spec([zarr_pair(scene_zarr)], tmp_path), log=quiet)
    record = _record(tmp_path)
    assert record["status"] == "failed"
    assert record["error"] == "TrainingDataError: could not read http://127.0.0.1:9/x.zarr"


# -- 2: no labelled pixel in any training chip --------------------------------------------------


def test_a_run_whose_chips_hold_no_labelled_pixel_is_refused_before_any_model(tmp_path, scene):
    url = str(tmp_path / "s.zarr")
    write_scene(scene, url, chunks=64)
    zarr.open_group(url, mode="r+")["labels"][:128] = 255  # the training window: all ignored
    spec = tiny_spec([zarr_pair(url, [0, 128, 0, 160])], tmp_path,
                     data__validation=[zarr_pair(url, [128, 160, 0, 160])])

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(TrainingDataError, match=r"2 epoch\(s\) ended without one optimizer "
                                                    r"step: every pixel of their 24 training chip.*"
                                                    r"ignored.*data\.ignore_index 255.*Check the labels"):
            train(spec, log=quiet)

    assert not (tmp_path / "model.safetensors").exists()
    record = _record(tmp_path)
    assert record["status"] == "failed" and "TrainingDataError" in record["error"]
    assert not [w for w in seen if "lr_scheduler" in str(w.message)]


def test_sparse_labels_an_epoch_misses_train_as_before(tmp_path):
    """Labels ignored but for one 24 x 24 patch, one chip an epoch: the first epoch's chip
    misses it, a later one's finds it. Such a run trained before the check, and still does."""
    from geoseg.synth import make_scene

    url = write_scene(make_scene(160, 160, seed=3), str(tmp_path / "s.zarr"), chunks=64)
    labels = zarr.open_group(url, mode="r+")["labels"]
    patch = labels[40:64, 40:64].copy()
    labels[:128] = 255
    labels[40:64, 40:64] = patch
    spec = tiny_spec([zarr_pair(url, [0, 128, 0, 160])], tmp_path,
                     data__validation=[zarr_pair(url, [128, 160, 0, 160])], seed=2,
                     training__epochs=6, training__steps_per_epoch=1, training__batch_size=1)

    train(spec, log=quiet)

    losses = [epoch["train_loss"] for epoch in _record(tmp_path)["epochs"]]
    assert losses[0] is None and any(loss is not None for loss in losses[1:]), losses  # as set up
    assert _record(tmp_path)["status"] == "complete"
    assert (tmp_path / "model.safetensors").exists()


def test_a_skipped_first_step_brings_no_torch_scheduler_warning():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 2, 1)
    opt = adamw(net, lr=0.01, weight_decay=0.0)
    loop = Loop(net, opt, warmup_cosine(opt, warmup=1, total=4), nn.CrossEntropyLoss(ignore_index=255),
                ignore_index=255)
    x = np.ones((1, 1, 4, 4), np.float32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        losses = loop.run([(x, np.full((1, 4, 4), 255)), (x, np.zeros((1, 4, 4), np.int64))])
    assert np.isnan(losses[0]) and np.isfinite(losses[1]) and loop.step == 2
    assert not [w for w in seen if "lr_scheduler" in str(w.message)]


# -- 3: sweep keys that overlap -----------------------------------------------------------------


@pytest.mark.parametrize("parameters", [
    {"training.lr": [0.001, 0.1], "training": [{"lr": 0.5}]},
    {"model.config": [{"width": 8}], "model.config.width": [4, 16]},
])
def test_sweep_keys_of_which_one_holds_the_other_are_refused(tmp_path, parameters):
    outer, inner = sorted(parameters, key=len)
    spec = {"name": "overlap", "base": {"model": {}}, "output": {"dir": str(tmp_path)},
            "parameters": parameters}
    with pytest.raises(TrainSpecError, match=rf"parameters: .*got '{outer}' and '{inner}': both set "
                                             rf"{inner}.*Vary it under one key"):
        SweepSpec.from_dict(spec, "sweep.yaml")


def test_sweep_keys_sharing_only_a_section_are_accepted(tmp_path):
    spec = {"name": "ok", "base": {"model": {}}, "output": {"dir": str(tmp_path)},
            "parameters": {"training.lr": [0.01], "training.lr_x": [1], "training.batch_size": [2]}}
    assert list(SweepSpec.from_dict(spec, "sweep.yaml").parameters) == [
        "training.lr", "training.lr_x", "training.batch_size"]


# -- 4: a device this process does not have -----------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_an_absent_cuda_device_is_refused_naming_the_key_before_any_read(tmp_path, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = str(tmp_path / "missing.zarr")  # any read would fail on it first
    spec = tiny_spec([zarr_pair(missing)], tmp_path, training__device=device)
    with pytest.raises(TrainSpecError, match=rf"training\.device: received '{device}'; torch finds no "
                                             r"CUDA device.*use cpu"):
        train(spec, log=quiet)


# -- 5: a learning rate past any use ------------------------------------------------------------


@pytest.mark.parametrize("lr", [1.0e38, 10.5])
def test_a_learning_rate_past_the_maximum_is_refused_by_the_spec(tmp_path, lr):
    with pytest.raises(TrainSpecError, match=r"training\.lr: received .*expected less than or equal to 10"):
        TrainSpec.from_dict(tiny_spec([zarr_pair("s.zarr")], tmp_path, training__lr=lr), "train.yaml")
    assert TrainSpec.from_dict(tiny_spec([zarr_pair("s.zarr")], tmp_path, training__lr=10),
                               "train.yaml").training.lr == 10
