"""Readers as plugins: found through the entry-point group ``geoseg.readers``, asked in order,
picked by name, and named when none fits. The third-party reader is docs/examples/reader_npy.py,
installed here as a distribution of its own (a ``.dist-info`` folder on ``sys.path``)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import geoseg
from geoseg.errors import UnsupportedFormatError
from geoseg.io.readers import _registry, installed_readers, open_source, probe
from tests.conftest import textured_image, write_geotiff

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "reader_npy.py"
BUILT_IN = ("geotiff", "tiff-stack", "nifti", "image", "zarr", "ome-zarr")


def install(folder: Path, entry_points: str, name: str = "geoseg_npy_example") -> None:
    """A distribution in ``folder``: its metadata, and the example reader as its module."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[geoseg.readers]\n{entry_points}\n")
    shutil.copy(EXAMPLE, folder / "reader_npy.py")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for distributions; the readers are read again with it and after."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    _registry.installed.cache_clear()
    yield folder
    sys.modules.pop("reader_npy", None)
    _registry.installed.cache_clear()


def test_a_reader_registered_by_entry_point_is_found_and_used(plugins, tmp_path):
    install(plugins, "npy = reader_npy:NpyReader")
    scene = textured_image(40, 30, seed=3)
    np.save(tmp_path / "scene.npy", scene)
    assert next(iter(installed_readers())) == "npy"  # a plugin's default priority: asked first
    raster = geoseg.open_raster(str(tmp_path / "scene.npy"), chunks=16)
    source = raster.encoding["geoseg_source"]
    assert type(source).__module__ == "reader_npy" and source.format == "npy"
    assert raster.data.chunks == ((3,), (16, 16, 8), (16, 14))
    np.testing.assert_array_equal(raster.values, scene)
    tif = write_geotiff(tmp_path / "a.tif", scene)  # the built-in readers are still there
    assert open_source(tif).format == "geotiff"


def test_the_group_is_read_once(plugins, tmp_path):
    assert "npy" not in installed_readers()
    install(plugins, "npy = reader_npy:NpyReader")
    assert "npy" not in installed_readers()  # cached: a process reads the group once
    _registry.installed.cache_clear()
    assert "npy" in installed_readers()


@pytest.mark.timeout(60)
def test_the_command_line_reads_with_a_plugin(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    install(folder, "npy = reader_npy:NpyReader")
    np.save(tmp_path / "scene.npy", textured_image(20, 10))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "geoseg.cli", "info", str(tmp_path / "scene.npy")],
                            check=False, capture_output=True, text=True, env=env, timeout=50)
    assert result.returncode == 0, result.stderr
    assert "npy" in result.stdout and "20" in result.stdout, result.stdout


def test_an_unknown_reader_name_lists_the_installed_readers(tmp_path):
    tif = write_geotiff(tmp_path / "a.tif", textured_image(20, 20))
    with pytest.raises(UnsupportedFormatError, match="No reader is called 'netcdf'") as caught:
        open_source(tif, reader="netcdf")
    assert all(f"{name} (" in str(caught.value) for name in BUILT_IN), caught.value


def test_a_url_no_reader_claims_lists_the_installed_readers(tmp_path):
    (tmp_path / "notes.txt").write_text("not a raster\n" * 10)
    with pytest.raises(UnsupportedFormatError, match="not a format geoseg reads") as caught:
        geoseg.open_raster(str(tmp_path / "notes.txt"))
    message = str(caught.value)
    assert all(f"{name} (" in message for name in BUILT_IN), message
    assert "geoseg.readers" in message, message


def test_a_reader_named_overrides_the_guess(tmp_path):
    pages = np.stack([textured_image(24, 20, seed=i)[0] for i in range(4)])
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")
    assert open_source(str(tmp_path / "stack.tif")).format == "tiffstack"
    as_geotiff = open_source(str(tmp_path / "stack.tif"), reader="geotiff")
    assert as_geotiff.format == "geotiff" and as_geotiff.shape == (1, 24, 20)


def test_options_a_reader_does_not_take_are_refused(plugins, tmp_path):
    install(plugins, "npy = reader_npy:NpyReader")
    np.save(tmp_path / "scene.npy", textured_image(20, 10))
    with pytest.raises(UnsupportedFormatError, match=r"bands=\[1\] was given .*the 'npy' reader "
                                                     r"takes no bands; drop bands"):
        open_source(str(tmp_path / "scene.npy"), bands=[1])
    tif = write_geotiff(tmp_path / "a.tif", textured_image(20, 20))
    with pytest.raises(UnsupportedFormatError, match=r"variable='image' was given .* not an OME-Zarr .* or a Zarr"):
        open_source(tif, variable="image")


def test_more_specific_readers_are_asked_first():
    order = list(installed_readers())
    assert order.index("ome-zarr") < order.index("zarr")
    assert order.index("tiff-stack") < order.index("geotiff")


def test_a_broken_plugin_is_left_out_and_logged(plugins, tmp_path, caplog):
    install(plugins, "broken = no_such_module:Reader\nnpy = reader_npy:NpyReader")
    np.save(tmp_path / "scene.npy", textured_image(20, 10))
    with caplog.at_level(logging.WARNING, logger="geoseg.io"):
        readers = installed_readers()
    assert "broken" not in readers and "npy" in readers
    assert "'broken' (no_such_module:Reader) could not be loaded" in caplog.text
    assert open_source(str(tmp_path / "scene.npy")).format == "npy"


def test_the_guesses_share_one_look_at_the_file(tmp_path, monkeypatch):
    """Several readers look at a TIFF's first bytes; the file is read for them once."""
    tif = write_geotiff(tmp_path / "a.tif", textured_image(20, 20))
    looks = []
    original = probe._once
    monkeypatch.setattr(probe, "_once", lambda key, compute: original(
        key, lambda: looks.append(key) or compute()))
    assert open_source(tif).format == "geotiff"
    assert looks.count(("head", tif)) == 1, looks


def test_a_registered_name_replaces_a_built_in_and_duplicates_are_logged(plugins, caplog):
    install(plugins, "image = reader_npy:NpyReader")
    install(plugins, "image = reader_npy:NpyReaderCopy", name="another_copy")
    (plugins / "reader_npy.py").write_text((plugins / "reader_npy.py").read_text()
                                           + "\n\nclass NpyReaderCopy(NpyReader):\n    pass\n")
    with caplog.at_level(logging.WARNING, logger="geoseg.io"):
        readers = installed_readers()
    assert type(readers["image"]).__name__ == "NpyReader"  # a site may swap a built-in reader
    assert "2 readers are registered as 'image'" in caplog.text  # and two of a name are told


def test_the_built_in_table_is_what_pyproject_registers():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["geoseg.readers"] == _registry.BUILT_IN
