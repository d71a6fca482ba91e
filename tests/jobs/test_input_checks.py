"""What a newcomer sees before running: a model's card, a warning when the input's values are
far from what the model was trained on, and band advice that fits the input."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
import zarr
from hypothesis import given
from hypothesis import strategies as st

from geoseg.demo import write_scene
from geoseg.io.readers import open_source
from geoseg.models.modelfile import load_model, read_header
from geoseg.models.ranges import range_warnings, sample_windows
from geoseg.synth import make_scene
from tests.cli import geoseg
from tests.conftest import CRS, TRANSFORM, write_zarr
from tests.test_errors_cli import assert_clean


def test_info_prints_a_models_card():
    result = geoseg("info", "builtin:demo-unet")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    header = read_header("builtin:demo-unet")
    network = load_model("builtin:demo-unet").net  # the real network, built with its weights
    parameters = sum(p.numel() for p in network.parameters())
    assert f"parameters {parameters:,}" in text
    assert f"sha256 {header.info.sha256}" in text
    assert "architecture unet (depth=3, in_channels=3, num_classes=5, width=16)" in text
    assert f"red (mean {header.info.mean[0]:.4g}, std {header.info.std[0]:.4g})" in text
    assert "receptive field 51 x 51 pixels" in text and "stride 8 x 8" in text
    for i, c in enumerate(header.info.classes):
        assert f"{i} {c.name} #{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}" in text
    assert "training record" in text and "validation val_miou 0.972" in text


def test_info_on_an_unknown_builtin_lists_the_real_ones():
    result = geoseg("info", "builtin:nope")
    assert result.returncode == 2
    assert "built-in models: demo-instances, demo-unet" in result.stderr
    assert "Traceback" not in result.stderr


def _geotiff(path: Path, image: np.ndarray, names: list[str] | None = None) -> str:
    profile = {"driver": "GTiff", "width": image.shape[2], "height": image.shape[1],
               "count": image.shape[0], "dtype": image.dtype, "crs": CRS, "transform": TRANSFORM,
               "tiled": True, "blockxsize": 64, "blockysize": 64}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
        for i, name in enumerate(names or []):
            dst.set_band_description(i + 1, name)
    return str(path)


def _validate(tmp_path: Path, url: str, **input_keys: object) -> subprocess.CompletedProcess:
    job = {"input": {"url": url, **input_keys}, "model": {"path": "builtin:demo-unet"},
           "output": {"url": str(tmp_path / "out.zarr")}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    return geoseg("validate", str(tmp_path / "job.yaml"))


def test_an_int16_input_far_from_the_models_range_is_warned_about_with_figures(tmp_path):
    image = np.random.default_rng(0).integers(-2000, 8000, (3, 256, 256)).astype(np.int16)
    result = _validate(tmp_path, _geotiff(tmp_path / "int16.tif", image))
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, result.stderr
    assert said.count("warning:") == 3, said
    assert "band 1 (band_1): sampled values" in said and "demo-unet was trained on band red" in said
    assert "model stds away" in said and "rescale the input" in said


def test_reflectance_scaled_to_0_1_is_warned_about_as_too_narrow(tmp_path):
    """Only a spread wider than the model's was called off: values 250 times narrower ran."""
    image = make_scene(256, 256, seed=7).image / np.float32(255)
    result = _validate(tmp_path, _geotiff(tmp_path / "reflectance.tif", image))
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, result.stderr
    assert said.count("warning:") == 3, said
    assert "its values reach 0.9" in said and "pick other bands (input.bands)" in said
    assert "16,384 pixels of 4 chunk(s)" in said  # four 64 x 64 blocks


def test_a_scene_of_calm_water_draws_no_range_warning(tmp_path):
    """In range but narrow (uint8 water about 30, std 2.5): it was told to 'rescale'."""
    water = np.clip(np.random.default_rng(5).normal(30, 2.5, (3, 256, 256)), 0, 255)
    result = _validate(tmp_path, _geotiff(tmp_path / "water.tif", water.astype(np.uint8)))
    assert result.returncode == 0 and "warning" not in result.stdout + result.stderr


def test_volumes_are_sampled_in_windows_of_a_plane_s_pixels():
    """512 per axis read 512**3 voxels (1 GiB as float64) per window of a volume."""
    windows = sample_windows((1024, 1024, 1024), (512, 512, 512))
    assert len(windows) == 4 and all(
        [w.stop - w.start for w in window] == [64, 64, 64] for window in windows)
    assert all(w.stop - w.start == 512 for w in sample_windows((2048, 2048), (1024, 1024))[0])


def test_the_demo_scene_draws_no_range_warning(tmp_path):
    url = write_scene(make_scene(384, 384, seed=7), str(tmp_path / "scene.zarr"), chunks=128)
    result = _validate(tmp_path, url, variable="image")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stdout + result.stderr, result.stdout


def test_infinite_pixels_are_no_data_to_the_range_check_as_to_the_run(tmp_path):
    image = make_scene(256, 256, seed=7).image.astype(np.float32)
    image[0, 0, 0], image[2, 5, 9] = np.inf, -np.inf  # in the first sampled chunk
    source = open_source(write_zarr(tmp_path / "scene.zarr", image, chunks=(128, 128)))
    assert range_warnings(source, read_header("builtin:demo-unet").info, "input") == []


def test_too_few_bands_get_advice_that_fits_the_input(tmp_path):
    image = np.full((2, 64, 64), 90, np.uint8)
    result = _validate(tmp_path, _geotiff(tmp_path / "two.tif", image))
    said = " ".join(result.stderr.split())
    assert result.returncode == 2
    assert "input.bands: demo-unet expects 3 band(s)" in said and "has 2" in said
    assert "too few bands" in said and "bands: [" not in said


def test_extra_bands_are_picked_by_name_in_the_models_order(tmp_path):
    image = np.full((4, 64, 64), 90, np.uint8)
    url = _geotiff(tmp_path / "four.tif", image, ["nir", "blue", "green", "red"])
    said = " ".join(_validate(tmp_path, url).stderr.split())
    assert "bands: [4, 3, 2]" in said


@pytest.mark.parametrize("bands, fix", [
    ([3, 2, 4], ("as green, blue, red, but it expects red, green, blue in that order, so it would "
                "read each band as another. Select them in the model's order: input.bands: [4, 3, 2].")),
    ([4, 4, 3], ("as red, red, green, but it expects red, green, blue in that order, so it would "
                "read each band as another. Select bands holding red, green, blue (input.bands).")),
    ([4, 3, 2], None), ([1, 3, 2], None),  # the model's order; nir is a name the model lacks
])
def test_bands_named_as_the_models_in_another_order_are_warned_about(tmp_path, bands, fix):
    image = np.random.default_rng(0).integers(60, 200, (4, 64, 64)).astype(np.uint8)
    url = _geotiff(tmp_path / "four.tif", image, ["nir", "blue", "green", "red"])
    result = _validate(tmp_path, url, bands=bands)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, said
    assert ("warning" in said) == (fix is not None), said
    assert fix is None or f"bands reach demo-unet {fix}" in said


@pytest.mark.parametrize("wanted, have, order", [
    (["red", "green", "blue"], ["Blue", "green", "RED"], [2, 1, 0]),
    (["red", "green", "blue"], ["red", "green", "blue"], None),
    (["red", "green", "blue"], ["red", "red", "green"], []),
    (["red", "green", "blue"], ["band_1", "band_2", "band_3"], None),
    (["red", "green", "blue"], ["green", "red", "nir"], None),
    (None, ["b", "a"], None), (["a", "b"], ["b"], None),
])
def test_band_order_finds_the_permutation_back_to_the_models_order(wanted, have, order):
    from geoseg.core.segmenter import band_order

    assert band_order(wanted, have) == order
    if order:
        assert [have[i].lower() for i in order] == wanted


def test_band_numbers_out_of_range_are_reported_under_input_bands(tmp_path):
    image = np.full((3, 64, 64), 90, np.uint8)
    result = _validate(tmp_path, _geotiff(tmp_path / "three.tif", image), bands=[1, 2, 9])
    said = " ".join(result.stderr.split())
    assert result.returncode == 2
    assert said.startswith("error: input.bands: Band numbers [9] are out of range"), said


@pytest.mark.parametrize("data, named", [
    (np.full((3, 16, 16), "a"), "dtype <U1 (text)"),
    (np.ones((3, 16, 16), np.complex64), "dtype complex64 (complex)"),
])
def test_an_input_of_text_or_complex_pixels_is_refused_naming_its_dtype(tmp_path, data, named):
    """Not read as numbers it does not hold: text fails to convert, complex loses its imaginary
    part silently."""
    url = tmp_path / "odd.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns that text has no Zarr v3 specification
        zarr.create_array(str(url), data=data, chunks=(3, 16, 16))
    result = _validate(tmp_path, str(url))
    assert_clean(result, 2, f"input.url: input {url} has pixels of {named}",
                 "geoseg reads bool, integer and floating-point rasters", "Convert it first")
    assert "ComplexWarning" not in result.stdout + result.stderr


@given(shape=st.tuples(st.integers(1, 3000), st.integers(1, 3000)),
       chunks=st.tuples(st.integers(1, 700), st.integers(1, 700)), n=st.integers(1, 6))
def test_sampled_windows_are_chunk_starts_inside_the_raster(shape, chunks, n):
    windows = sample_windows(shape, chunks, n)
    grid = [-(-s // c) for s, c in zip(shape, chunks)]
    assert 1 <= len(windows) <= min(n, grid[0] * grid[1]) 
    starts = [tuple(w.start for w in window) for window in windows]
    assert len(set(starts)) == len(starts)
    for window in windows:
        for w, size, chunk in zip(window, shape, chunks):
            assert w.start % chunk == 0 and w.start < w.stop <= min(size, w.start + chunk)
    assert windows[0] == tuple(slice(0, min(c, s, 512)) for c, s in zip(chunks, shape))
    last = tuple((g - 1) * c for g, c in zip(grid, chunks))
    assert tuple(w.start for w in windows[-1]) == (last if n > 1 else (0, 0))
