"""Every GEOSEG_* variable is read in geoseg/config.py, and a bad value names itself."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import geoseg
from geoseg import config
from geoseg.errors import SettingError

PACKAGE = Path(geoseg.__file__).parent
NAME = re.compile(r"GEOSEG_[A-Z][A-Z0-9_]*")

# (accessor, variable): each parses its variable as a number of some kind.
NUMERIC = [
    (config.torch_threads, "GEOSEG_TORCH_THREADS"),
    (config.batch_size, "GEOSEG_BATCH_SIZE"),
    (config.region_bytes, "GEOSEG_REGION_BYTES"),
    (config.tile_size, "GEOSEG_TILE"),
    (lambda: config.tile_size(3), "GEOSEG_VOLUME_TILE"),
    (config.read_cache_bytes, "GEOSEG_READ_CACHE_BYTES"),
    (config.model_cache, "GEOSEG_MODEL_CACHE"),
    (config.inprocess_pixels, "GEOSEG_INPROCESS_PIXELS"),
    (config.worker_wait, "GEOSEG_WORKER_WAIT"),
    (config.gpu_threads, "GEOSEG_GPU_THREADS"),
]


def _environment_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """``os.environ[...]``, ``os.environ.get(...)`` and ``os.getenv(...)`` with a GEOSEG_ literal."""
    found = []
    for node in ast.walk(tree):
        text = ast.unparse(node) if isinstance(node, (ast.Call, ast.Subscript)) else ""
        if re.match(r"os\.(environ(\.get)?|getenv)\b", text) and NAME.search(text):
            found.append((node.lineno, text))
    return found


def test_settings_are_read_only_in_config():
    outside = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
               for path in PACKAGE.rglob("*.py") if path.name != "config.py"
               for line, text in _environment_reads(ast.parse(path.read_text()))]
    assert not outside, "\n".join(outside)


def test_every_setting_named_in_the_code_has_a_default():
    named = {m for path in PACKAGE.rglob("*.py") for m in NAME.findall(path.read_text())}
    assert named - set(config.DEFAULTS) == set()


@pytest.mark.parametrize(("read", "variable"), NUMERIC, ids=[v for _, v in NUMERIC])
@pytest.mark.parametrize("value", ["many", "-3", "nan", "inf", ""])
def test_a_bad_number_names_its_variable(monkeypatch, read, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingError, match=rf"^{variable}: received {re.escape(repr(value))}; "
                                           r"expected a (whole )?number"):
        read()


def _retry_policy():
    from geoseg.io.remote import RetryPolicy

    return RetryPolicy.from_env()


@pytest.mark.parametrize(("read", "variable", "value", "most"), [
    (config.torch_threads, "GEOSEG_TORCH_THREADS", "100000", "1024"),
    (config.gpu_threads, "GEOSEG_GPU_THREADS", "5000", "1024"),
    (_retry_policy, "GEOSEG_RETRIES", "1e9", "100"),
])
def test_a_setting_past_its_bound_is_refused_before_it_starts_threads_or_waits(
        monkeypatch, read, variable, value, most):
    """100000 torch threads ended in "can't start new thread"; a billion retries never end."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingError, match=rf"^{variable}: received '{value}'; expected a whole "
                                           rf"number >= \d and <= {most} "):
        read()


@pytest.mark.parametrize(("read", "variable"), NUMERIC, ids=[v for _, v in NUMERIC])
def test_defaults_parse(monkeypatch, read, variable):
    monkeypatch.delenv(variable, raising=False)
    assert read() == float(config.DEFAULTS[variable])


def test_whole_numbers_take_exponent_form_but_not_fractions(monkeypatch):
    monkeypatch.setenv("GEOSEG_REGION_BYTES", "1e9")
    assert config.region_bytes() == 10**9
    monkeypatch.setenv("GEOSEG_REGION_BYTES", "1.5")
    with pytest.raises(SettingError, match="expected a whole number >= 1"):
        config.region_bytes()


def test_runs_dir_and_log_format_come_from_config(monkeypatch, tmp_path):
    from geoseg import logs
    from geoseg.jobs.provenance import runs_dir

    monkeypatch.setenv("GEOSEG_RUNS_DIR", str(tmp_path))
    assert runs_dir() == str(tmp_path)
    monkeypatch.setenv("GEOSEG_LOG_FORMAT", "yaml")
    with pytest.raises(SettingError, match="GEOSEG_LOG_FORMAT: received 'yaml'"):
        logs.log_format()


@pytest.mark.parametrize("value, resolved", [("cpu", "cpu"), (" CUDA:1 ", "cuda:1"), ("cuda", "cuda")])
def test_geoseg_device_takes_what_a_training_spec_takes(monkeypatch, value, resolved):
    monkeypatch.setenv("GEOSEG_DEVICE", value)
    assert config.device_setting() == resolved


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_this_machine_lacks_is_named_where_the_model_would_run(monkeypatch, tmp_path,
                                                                            model_path):
    """Not torch's AssertionError from inside a task (an internal error, exit 1), and not at
    validate, whose process need not be where the workers run."""
    from tests.cli import geoseg as cli
    from tests.conftest import job_dict, textured_image, write_zarr

    monkeypatch.setenv("GEOSEG_DEVICE", "cuda")
    with pytest.raises(SettingError, match="GEOSEG_DEVICE=cuda: torch finds no CUDA device"):
        config.device()
    with pytest.raises(geoseg.errors.ParameterError, match=r"device='cuda:1': torch finds no CUDA"):
        config.resolve_device("cuda:1")
    job = tmp_path / "job.yaml"
    spec = job_dict(write_zarr(tmp_path / "in.zarr", textured_image(32, 32)), model_path,
                    str(tmp_path / "out.zarr"))
    job.write_text(yaml.safe_dump(spec))
    assert cli("validate", str(job), env={"GEOSEG_DEVICE": "cuda"}).returncode == 0
    # a process of its own: this one may hold the model already, loaded on the CPU
    ran = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(job), "--cluster", "threads"],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "GEOSEG_DEVICE": "cuda"})
    said = " ".join(ran.stderr.split())
    assert ran.returncode == 2 and "GEOSEG_DEVICE=cuda: torch finds no CUDA device" in said, said
    assert "internal error" not in said


@pytest.mark.parametrize("value", [pytest.param("gpu", id="a-card-name"), "cuda:x", "mps0", ""])
def test_a_bad_geoseg_device_is_named_before_torch_sees_it(monkeypatch, value):
    monkeypatch.setenv("GEOSEG_DEVICE", value)
    with pytest.raises(SettingError, match=rf"GEOSEG_DEVICE: received {re.escape(repr(value))}; "
                                           r"expected auto \(CUDA when present\), cpu, cuda or cuda:N"):
        config.device()


@pytest.mark.parametrize("variable, value", [
    *((variable, "abc") for _, variable in NUMERIC), ("GEOSEG_DEVICE", "gpu"), ("GEOSEG_GPUS", "0,0"),
])
def test_validate_names_a_bad_setting_before_anything_runs(tmp_path, variable, value):
    """As a run would, once its tasks or workers read it: here before any input is opened."""
    from tests.cli import geoseg as cli

    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{url: {tmp_path / 'absent.tif'}}}\nmodel: {{method: otsu}}\n"
                   f"output: {{url: {tmp_path / 'out.zarr'}}}\n")
    result = cli("validate", str(job), env={variable: value})
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and said.startswith(f"error: {variable}: received {value!r}"), said


def test_a_gpu_index_past_those_a_pinned_worker_sees_says_it_sees_its_gpu_as_cuda_0(monkeypatch):
    """A model placed on cuda:1 in a notebook, computed on workers pinned to one GPU each."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # what such a worker finds
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(geoseg.errors.ParameterError) as err:
        config.resolve_device("cuda:1", "the model's device")
    said = str(err.value)
    assert "the model's device='cuda:1': torch finds 1 CUDA device(s)" in said
    assert "cuda:0 (CUDA_VISIBLE_DEVICES=3): a process given one GPU, as a GPU worker is, sees it " \
           "as cuda:0" in said
    assert "Use 'cuda' (the process's own GPU)" in said
    assert config.resolve_device("cuda:0") == "cuda:0"
