"""The package as a user installs it: a wheel built from the repository, installed into a new
virtual environment, holds its bundled models and runs a job from a folder outside the
repository.

The new environment gets geoseg from the wheel only; its dependencies come from this test
environment's site-packages through a path entry (added after its own, so the wheel's geoseg
comes first; the editable install of the checkout is not visible there), which keeps the test
offline and fast. That pip resolves the dependencies is pip's job, not this test's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from geoseg.models.modelfile import read_header
from tests.conftest import textured_image, write_zarr

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["COLUMNS"] = "1000"
    result = subprocess.run(args, cwd=cwd, check=False, capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel installed; returns its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(work / "dist"), str(ROOT)], cwd=work)
    (wheel,) = (work / "dist").glob("geoseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "geoseg/models/bundled/demo-unet.safetensors" in names
    assert not [n for n in names if n.startswith(("tests/", "geoseg-runs/", "jobs/"))]
    env = work / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=work)
    python = env / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=work).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)], cwd=work)
    return env / "bin"


@pytest.mark.timeout(600)
def test_the_installed_wheel_has_its_models_and_runs_a_job_from_another_folder(installed, tmp_path):
    where = _run([str(installed / "python"), "-c", "import geoseg; print(geoseg.__file__)"],
                 cwd=tmp_path).stdout
    assert str(installed.parent) in where and str(ROOT) not in where  # the wheel's copy

    # both bundled models ship, whole: the instance model's file where the wheel's copy of
    # geoseg looks for it (the job below runs the U-Net); the demo itself, from a checkout, is
    # tests/test_demo.py's
    shipped = Path(where.strip()).parent / "models" / "bundled" / "demo-instances.safetensors"
    assert read_header(str(shipped)).info.sha256 == read_header("builtin:demo-instances").info.sha256

    project = tmp_path / "project"  # a spec with paths relative to itself, run from elsewhere
    (project / "data").mkdir(parents=True)
    write_zarr(project / "data" / "in.zarr", textured_image(96, 80), chunks=(48, 48))
    job = {"input": {"url": "data/in.zarr"}, "model": {"path": "builtin:demo-unet"},
           "output": {"url": "out/mask.zarr", "chunks": [48, 48]}}
    (project / "job.yaml").write_text(yaml.safe_dump(job))
    _run([str(installed / "geoseg"), "run", str(project / "job.yaml")], cwd=tmp_path)
    classes = zarr.open_group(str(project / "out" / "mask.zarr"), mode="r")["classes"][...]
    assert classes.shape == (96, 80) and np.unique(classes).size >= 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "geoseg-runs").exists()
