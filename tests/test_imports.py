"""Import weight: the light layers and ``geoseg --help`` load no torch, dask or zarr.

Each check runs in a fresh interpreter, since this test process has imported everything
already (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

HEAVY = ("torch", "dask", "zarr", "distributed")


def python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True,
                          text=True, timeout=60)


def heavy_loaded_by(statement: str) -> list[str]:
    result = python(f"import json, sys\n{statement}\n"
                    f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", ["geoseg", "geoseg.tiling", "geoseg.tiling.plan", "geoseg.metrics", "geoseg.budgets", "geoseg.errors", "geoseg.core.segmenter",
                                    "geoseg.core.spec", "geoseg.core.urls", "geoseg.core.redact", "geoseg.core.records",
                                    "geoseg.config", "geoseg.cli", "geoseg.io", "geoseg.io.allow",
                                    "geoseg.io.readers", "geoseg.jobs", "geoseg.jobs.spec",
                                    "geoseg.jobs.batch_spec", "geoseg.training",
                                    "geoseg.training.spec"])
def test_light_modules_load_no_heavy_library(module):
    assert heavy_loaded_by(f"import {module}") == [], f"import {module} loads them"


@pytest.mark.timeout(120)
def test_every_public_name_resolves_to_its_definition():
    code = """
import importlib, json, geoseg
out = {"submodule": geoseg.io.open_source is importlib.import_module("geoseg.io.readers").open_source}
for name in set(geoseg.__all__) - {"__version__"}:
    value = getattr(geoseg, name)
    home = getattr(value, "__module__", None)
    out[name] = home is not None and getattr(importlib.import_module(home), name, None) is value
from geoseg import segment, load_model
out["from-import"] = segment is geoseg.segment and load_model is geoseg.load_model
out["dir"] = set(geoseg.__all__) <= set(dir(geoseg))
out["version"] = isinstance(geoseg.__version__, str)
out["table"] = set(geoseg._LAZY) | {"__version__"} == set(geoseg.__all__)
print(json.dumps(out))
"""
    result = python(code)
    assert result.returncode == 0, result.stderr
    checks = json.loads(result.stdout.splitlines()[-1])
    assert checks == dict.fromkeys(checks, True)


def test_unknown_name_is_an_attribute_error():
    import geoseg

    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        geoseg.no_such_name  # noqa: B018
    assert not hasattr(geoseg, "no_such_name")


@pytest.mark.timeout(120)
def test_help_exits_zero_without_heavy_libraries():
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules]))\n"
            "from geoseg.cli import main\nmain()")
    result = python(code, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "run" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == "HEAVY []"


# Each command of argv[1] (a JSON list) in turn in this one process, its output ended by a NUL
# line: its exit code and the heavy libraries loaded so far. Modules a command imports stay
# imported, but none of them loaded a heavy library, or that command's line says so.
SEVERAL_COMMANDS = f"""
import atexit, json, sys
atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules]))
from geoseg.cli import main
for args in json.loads(sys.argv[1]):
    sys.argv = ["geoseg", *args]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]), flush=True)
    print("\\0", flush=True)
    print("\\0", file=sys.stderr, flush=True)
"""


@pytest.mark.timeout(120)
def test_a_wrong_job_spec_is_refused_before_torch_or_dask_load(tmp_path):
    """``geoseg validate``, ``run``, ``batch`` and ``train`` read and check the spec before
    loading what runs it: a typo costs the user a second, not the start-up of torch and dask."""
    (tmp_path / "job.yaml").write_text("input: {url: in.zarr}\nmodel: {path: m.safetensors}\n"
                                       "output: {url: out.zarr, chunks: -3}\n")
    (tmp_path / "batch.yaml").write_text("inputs: {glob: '*.tif'}\njob: {model: {path: m.safetensors}}\n"
                                         "output: {url_template: 'out/{stem}.zarr', chunks: -3}\n")
    (tmp_path / "train.yaml").write_text("data: {}\noutput: {chunks: -3}\n")
    commands = [[command, str(tmp_path / f"{spec}.yaml")] for command, spec in
                (("validate", "job"), ("run", "job"), ("batch", "batch"), ("train", "train"))]
    result = python(SEVERAL_COMMANDS, json.dumps(commands))
    assert result.returncode == 0, result.stdout + result.stderr
    *ran, at_exit = result.stdout.split("\0\n")
    errors = result.stderr.split("\0\n")[:-1]
    assert len(ran) == len(errors) == len(commands), result.stdout + result.stderr
    for (command, _), out, err in zip(commands, ran, errors):
        code, heavy = json.loads(out.rstrip().splitlines()[-1])
        assert code == 2, f"{command}: {out}{err}"
        assert "chunks" in err, f"{command}: {err}"
        assert heavy == [], command  # of every command so far: the first it names loaded them
    assert at_exit.rstrip().splitlines()[-1] == "HEAVY []"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["file", "method"])
def test_a_scheduler_unpickling_a_job_graph_loads_no_torch(tmp_path, model_path, model):
    """What a task carries (the function, its RegionWork with a model reference or a small
    method, the raster source) unpickles without torch: a scheduler holds graphs of thousands
    of tasks and should not pay torch's memory for them."""
    import cloudpickle

    from geoseg.jobs import JobSpec, prepare
    from geoseg.parallel.executor import segment_to_store
    from tests.conftest import textured_image, write_zarr

    url = write_zarr(tmp_path / "in.zarr", textured_image(64, 64))
    chosen = {"path": model_path} if model == "file" else {"method": "threshold",
                                                            "params": {"thresholds": [100], "feature": "mean"}}
    spec = JobSpec.from_dict({"input": {"url": url}, "model": chosen,
                              "output": {"url": str(tmp_path / "out.zarr")}})
    prepared = prepare(spec)
    payload = tmp_path / "task.pickle"
    payload.write_bytes(cloudpickle.dumps((segment_to_store, prepared.work, prepared.source)))
    result = python(f"import pickle, sys\npickle.loads(open({str(payload)!r}, 'rb').read())\n"
                    "print([m for m in ('torch', 'geoseg.models.model') if m in sys.modules])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "[]", result.stdout


@pytest.mark.timeout(120)
def test_every_package_lists_its_public_names_and_they_resolve():
    code = """
import importlib, json, pkgutil, geoseg
bad = []
for info in pkgutil.walk_packages(geoseg.__path__, "geoseg."):
    if not info.ispkg:
        continue
    package = importlib.import_module(info.name)
    names = getattr(package, "__all__", None)
    if not names:
        bad.append(f"{info.name}: no __all__")
        continue
    bad += [f"{info.name}.{n} does not resolve" for n in names if not hasattr(package, n)]
print(json.dumps(bad))
"""
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_no_lazy_name_is_also_a_submodule_of_its_package():
    """Importing ``package.name`` sets the package's attribute ``name`` to that module, so a
    lazily exported function of the same name would turn into a module once anything imports
    the submodule (``from geoseg.training import sweep`` did)."""
    import importlib
    import pkgutil

    import geoseg

    clashes = []
    for info in pkgutil.walk_packages(geoseg.__path__, "geoseg."):
        if info.ispkg:
            package = importlib.import_module(info.name)
            modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
            clashes += [f"{info.name}.{n}" for n in getattr(package, "_LAZY", {}) if n in modules]
    assert clashes == []


INSTANCE_LIBRARIES = ("cc3d", "geopandas", "shapely", "pyproj", "pyogrio")


@pytest.mark.timeout(300)
def test_a_semantic_job_runs_where_the_instance_libraries_are_missing(tmp_path, model_path):
    """A GPU node image may hold torch and dask but not cc3d or the polygon stack: a job that
    asks for no instances must not need them, in the client or in its worker process. Each
    library is shadowed by a module that fails to import, as an absent one does."""
    from tests.conftest import job_dict, textured_image, write_zarr

    absent = tmp_path / "absent"
    absent.mkdir()
    for name in INSTANCE_LIBRARIES:
        (absent / f"{name}.py").write_text(f"raise ImportError('no module named {name}')\n")
    write_zarr(tmp_path / "in.zarr", textured_image(96, 80), chunks=(48, 48))
    job = {**job_dict(str(tmp_path / "in.zarr"), model_path, str(tmp_path / "out.zarr")),
           "cluster": {"n_workers": 1, "threads_per_worker": 1}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    path = os.pathsep.join([str(absent), os.getcwd(), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "GEOSEG_DEVICE": "cpu"}
    shadowed = subprocess.run([sys.executable, "-c", "import cc3d"], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
    assert "no module named cc3d" in shadowed.stderr
    result = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", "job.yaml"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ImportError" not in result.stderr
    assert "running on" not in result.stderr  # worker processes, not threads in the client
    assert (tmp_path / "out.zarr" / "classes").is_dir()


@pytest.mark.timeout(120)
def test_the_scheduler_plugin_that_releases_models_loads_no_torch():
    """Every job registers it on the scheduler, which unpickles it: no torch there either."""
    code = ("import cloudpickle, pickle, sys\n"
            "from geoseg.parallel.disconnect import ReleaseOnDisconnect\n"
            "payload = cloudpickle.dumps(ReleaseOnDisconnect())\n"
            "for name in [m for m in sys.modules if m.startswith('geoseg')]:\n"
            "    del sys.modules[name]\n"
            "plugin = pickle.loads(payload)\n"
            "print(type(plugin).__name__, [m for m in ('torch', 'geoseg.models.model') if m in sys.modules])")
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(maxsplit=1) == ["ReleaseOnDisconnect", "[]\n"], result.stdout
