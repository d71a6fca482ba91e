"""A job's model plugin that fails on some workers (one cannot import geoseg, one cannot read the
model file the client reads): a ClusterConfigError (or ModelFileError) naming the worker and
what every worker needs, and nothing left behind: no plugin on the scheduler, no model held."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from geoseg.errors import ClusterConfigError, ModelFileError
from geoseg.models.modelfile import read_header
from geoseg.parallel.plugins import load_models
from tests.jobs.test_worker_faults import BIN, ROOT
from tests.ports import free_port

# sitecustomize of the odd worker: geoseg does not import, or a folder's files do not exist
NO_GEOSEG = """
import importlib.abc, sys
class NoGeoseg(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "geoseg" or name.startswith("geoseg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoGeoseg())
"""
HIDDEN = """
import builtins, os
hidden, real_open = os.environ["HIDDEN_FOLDER"], builtins.open
def open(file, *args, **kwargs):
    if isinstance(file, str) and file.startswith(hidden):
        raise FileNotFoundError(2, "No such file or directory", file)
    return real_open(file, *args, **kwargs)
builtins.open = open
"""


@contextlib.contextmanager
def cluster(folder: Path, odd: str, hidden: str = "") -> Iterator[tuple[str, str]]:
    """A scheduler, a worker w1 and a worker w2 started with the sitecustomize ``odd``:
    (scheduler address, w2's address)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    (folder / "odd").mkdir()
    (folder / "odd" / "sitecustomize.py").write_text(odd)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": ROOT}
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    for name, path in (("w1", str(ROOT)), ("w2", f"{folder / 'odd'}{os.pathsep}{ROOT}")):
        env = {**os.environ, "PYTHONPATH": path, "HIDDEN_FOLDER": hidden}
        procs.append(subprocess.Popen([BIN / "dask", "worker", address, "--nthreads", "1",
                                       "--name", name, "--no-dashboard", "--local-directory",
                                       str(folder / name)], env=env, **quiet))
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            names = {info["name"]: worker
                     for worker, info in client.scheduler_info(n_workers=-1)["workers"].items()}
        yield address, names["w2"]
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def model_plugins(client: Client) -> list[str]:
    names = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    return [n for n in names if n.startswith("geoseg-models-")]


@pytest.mark.timeout(90)
def test_a_worker_that_cannot_import_geoseg_is_named(tmp_path, model_path):
    with cluster(tmp_path, NO_GEOSEG) as (address, odd):
        with Client(address) as client:
            with pytest.raises(ClusterConfigError) as caught:
                load_models(client, read_header(model_path).ref())
            assert model_plugins(client) == []
        message = str(caught.value)
        assert f"Dask worker {odd} cannot import geoseg" in message, message
        assert "same geoseg installation" in message and "internal error" not in message, message


@pytest.mark.timeout(90)
def test_pinned_torch_threads_name_a_worker_that_cannot_import_geoseg(tmp_path, monkeypatch):
    """GEOSEG_TORCH_THREADS registered its plugin before any check: a bare ModuleNotFoundError."""
    from geoseg.parallel.cluster import ClusterSpec, connect

    monkeypatch.setenv("GEOSEG_TORCH_THREADS", "1")
    with cluster(tmp_path, NO_GEOSEG) as (address, odd), \
            pytest.raises(ClusterConfigError, match=rf"Dask worker {odd} cannot import geoseg"), \
            connect(ClusterSpec(kind="address", scheduler=address)):
        pass


@pytest.mark.timeout(90)
def test_a_model_that_one_worker_cannot_read_is_released_everywhere(tmp_path, model_path):
    ref = read_header(model_path).ref()
    with cluster(tmp_path, HIDDEN, hidden=str(Path(model_path).parent)) as (address, odd):
        with Client(address) as client:
            with pytest.raises(ModelFileError) as caught:
                load_models(client, ref)
            assert model_plugins(client) == []  # workers that join later load nothing
            held = client.run(lambda: (__import__("geoseg").models.cache.holds(),
                                       sorted(__import__("geoseg").models.cache.loaded())))
        assert list(held.values()) == [({}, []), ({}, [])], held  # the model freed where it loaded
        message = str(caught.value)
        assert f"Dask worker {odd} cannot read the model file" in message, message
        assert "though this client found it" in message and "same path on every worker" in message
        assert "Check the path, or use one of" not in message, message
