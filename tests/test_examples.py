"""The examples of docs/architecture.md work as written: a network and a method, each one
file of another package, registered through geoseg's entry-point groups (the reader is
tested in tests/io/test_reader_plugins.py). Each is installed here as a distribution of its
own: a ``.dist-info`` folder on ``sys.path``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
import yaml
import zarr

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.errors import MethodParameterError
from geoseg.methods import build
from geoseg.models import ModelInfo, SegmentationModel, registered, registry
from tests.cli import geoseg as geoseg_command
from tests.conftest import textured_image, write_zarr

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def install(folder: Path, module: str, group: str, entry: str) -> None:
    """The example ``module`` as the only module of a distribution registering ``entry``."""
    info = folder / f"geoseg_example_{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: geoseg-example-{module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    shutil.copy(EXAMPLES / f"{module}.py", folder / f"{module}.py")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for distributions; the plugin groups are read again after."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    saved = dict(registered.ARCHITECTURES)  # the plugin's architecture is forgotten after
    build.plugins.cache_clear()
    yield folder
    build.plugins.cache_clear()
    registered.ARCHITECTURES.clear()
    registered.ARCHITECTURES.update(saved)
    for module in ("network_tiny", "method_ndvi"):
        sys.modules.pop(module, None)


def test_a_network_in_one_file_is_saved_loaded_and_stitched_exactly(site, tmp_path):
    install(site, "network_tiny", "geoseg.models", "tiny-fcn = network_tiny:TinyFCN")
    assert "tiny-fcn" in registry.architectures()
    torch.manual_seed(0)
    net = registry.build_network("tiny-fcn", {"in_channels": 3, "num_classes": 4})
    info = ModelInfo("tiny", "tiny-fcn", {"in_channels": 3, "num_classes": 4},
                     tuple(ClassInfo(f"c{i}") for i in range(4)), ("r", "g", "b"),
                     (128.0,) * 3, (50.0,) * 3)
    path = str(tmp_path / "tiny.safetensors")
    geoseg.save_model(SegmentationModel(net, info, device="cpu"), path)
    model = geoseg.load_model(path, device="cpu")
    assert model.halo == (2, 2)
    image = textured_image(70, 90, seed=4)
    whole = model.predict_image(image).argmax(0)
    assert len(np.unique(whole)) > 1
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, chunks=(16, 16)))
    with dask.config.set(scheduler="sync"):
        chunked = geoseg.segment(raster, model, chunks=(16, 16), tile=16).values
    np.testing.assert_array_equal(chunked, whole)


def test_a_method_in_one_file_runs_in_a_job_by_name(site, tmp_path):
    install(site, "method_ndvi", "geoseg.methods", "ndvi = method_ndvi:NdviThreshold")
    assert "ndvi" in build.method_names() and not build.needs_fit("ndvi")
    image = textured_image(48, 64, bands=2, seed=1).astype(np.float32)
    spec = {"input": {"url": write_zarr(tmp_path / "in.zarr", image, chunks=(16, 16))},
            "model": {"method": "ndvi", "params": {"red": 1, "nir": 2, "threshold": 0.05}},
            "output": {"url": str(tmp_path / "out.zarr"), "chunks": [16, 16]},
            "cluster": {"kind": "threads"}, "runs_dir": str(tmp_path / "runs")}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    result = geoseg_command("run", str(tmp_path / "job.yaml"))  # threads: they share sys.path
    assert result.returncode == 0, result.stderr
    red, nir = image
    expected = ((nir - red) / np.maximum(nir + red, 1e-6) > 0.05).astype(np.uint8)
    assert 0 < expected.mean() < 1
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"))["classes"][:], expected)


def test_a_broken_method_plugin_names_itself(site):
    install(site, "method_ndvi", "geoseg.methods", "ndvi = method_ndvi:NoSuchClass")
    with pytest.raises(MethodParameterError, match="plugin 'ndvi' .*failed to load"):
        build.method_names()


def test_an_unknown_method_lists_the_plugins_too(site):
    install(site, "method_ndvi", "geoseg.methods", "ndvi = method_ndvi:NdviThreshold")
    with pytest.raises(geoseg.errors.JobSpecError, match="known methods: .*ndvi"):
        build.check_method("nvdi")
