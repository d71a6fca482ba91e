"""``geoseg validate`` refuses the classical methods' parameters that a fit, or the first task,
would refuse (or would silently run with): each case passed validate before, exits 2 with one
line naming the key, what was received and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
import zarr

from geoseg.methods.kmeans import PALETTE
from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr
from tests.test_errors_cli import assert_clean


@pytest.fixture()
def scene(tmp_path) -> str:
    return write_zarr(tmp_path / "scene.zarr", textured_image(64, 64))  # 3 bands, uint8


def write_job(tmp_path: Path, scene: str, model: dict, **more: object) -> str:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"input": {"url": scene}, "model": model,
                                   "output": {"url": str(tmp_path / "out.zarr")}, **more}))
    return str(job)


def validate(tmp_path: Path, scene: str, model: dict):
    return geoseg("validate", write_job(tmp_path, scene, model))


@pytest.mark.parametrize("method, params, message", [
    ("kmeans", {"k": 3, "init": [[0, 0, 0], [9, 9, 9]]},
     ("model.params: init: received 2 centre(s) for k=3; expected 3 centres x 3 numbers (all 3 "
     "bands). Give one centre per cluster, set k to 2, or use init: k-means++.")),
    ("kmeans", {"k": 2, "bands": [1, 2], "init": [[0, 0, 0], [9, 9, 9]]},
     "model.params: init: centre 0 has 3 number(s); expected 2 centres x 2 numbers (bands [1, 2])"),
    ("kmeans", {"k": 2, "init": [[0, 0, 0], [9, 9]]}, "init: centre 1 has 2 number(s)"),
    ("kmeans", {"k": 2, "init": [[0, 0, 0], [9, 9, 9]], "n_init": 3},
     "model.params: n_init=3 with explicit init centroids"),
])
def test_kmeans_init_of_another_shape_than_k_centres_by_bands_fails_validate(
        tmp_path, scene, method, params, message):
    assert_clean(validate(tmp_path, scene, {"method": method, "params": params}), 2, message)


@pytest.mark.parametrize("method, params, message", [
    ("otsu", {"feature": 1, "classes": 3},
     "model.params: method 'otsu' finds one threshold (2 classes); for 3 classes use method="),
    ("multiotsu", {"feature": 1, "classes": 3, "class_names": ["low", "high"]},
     ("model.params: class_names: received 2 name(s) ['low', 'high'], but method 'multiotsu' "
     "gives 3 classes")),
    ("kmeans", {"k": 3, "class_names": ["water", "forest"]},
     ("model.params: class_names: received 2 name(s) ['water', 'forest'], but k-means with k=3 "
      "gives 3 classes; give one name per class, or set k to 2.")),
    ("histogram", {"feature": 1, "max_smoothing": 0},
     "model.params.max_smoothing: received 0; expected a whole number >= 1"),
    ("sobel", {"feature": 1, "threshold": -1},
     "model.params.threshold: received -1; expected a number >= 0, or null"),
    ("local", {"feature": 1, "block_size": 5, "mode": "wrap"}, "mode: received 'wrap'"),
    ("threshold", {"feature": 1, "thresholds": [300]},
     ("model.params: thresholds: received [300.0], but band 1 of the input (uint8) lies in "
     "[0, 255], so [300.0] would leave a class empty on every pixel")),
    ("threshold", {"feature": [1, 2], "thresholds": [5]},
     "(b1 - b2) / (b1 + b2) of the input (uint8) lies in [-1, 1]"),
])
def test_method_parameters_a_fit_or_a_task_would_refuse_fail_validate(
        tmp_path, scene, method, params, message):
    assert_clean(validate(tmp_path, scene, {"method": method, "params": params}), 2, message)


def test_a_threshold_in_range_still_validates(tmp_path, scene):
    result = validate(tmp_path, scene, {"method": "threshold",
                                        "params": {"feature": 1, "thresholds": [0, 254]}})
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_ensemble_member_out_of_range_is_named_by_its_key(tmp_path, scene):
    members = [{"method": "threshold", "params": {"feature": 1, "thresholds": [100]}},
               {"method": "threshold", "params": {"feature": 2, "thresholds": [-5]}}]
    result = validate(tmp_path, scene, {"ensemble": {"members": members}})
    assert_clean(result, 2, "model.ensemble.members.1.params: thresholds: received [-5.0]")


def test_kmeans_class_names_in_a_job_spec_name_the_output_classes(tmp_path, scene):
    """The names a spec gives k-means reach the output's attributes, in the clusters' order (of
    init); the colours stay the palette's."""
    model = {"method": "kmeans", "params": {"k": 3, "init": [[40] * 3, [128] * 3, [220] * 3],
                                            "class_names": ["water", "forest", "urban"]}}
    result = geoseg("run", write_job(tmp_path, scene, model, cluster={"kind": "threads"}))
    assert result.returncode == 0, result.stdout + result.stderr
    attrs = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["geoseg"]
    assert attrs["class_names"] == ["water", "forest", "urban"]
    assert [tuple(c[:3]) for c in attrs["class_colors"]] == list(PALETTE[:3])


@pytest.mark.parametrize("model, fit", [
    ({"method": "kmeans", "params": {"k": 2, "cache": True}},
     "k-means on all 3 bands would keep 12 KiB (12288 bytes)"),
    ({"method": "otsu", "params": {"feature": 2, "cache": True}},
     "the otsu threshold on band 2 would keep 4 KiB (4096 bytes)"),
    ({"method": "histogram", "params": {"feature": "mean", "cache": True}},
     "would keep 12 KiB (12288 bytes)"),
])
def test_a_fit_cache_over_its_budget_fails_validate_naming_the_key(tmp_path, scene, model, fit):
    """cache: true on a raster whose bands pass GEOSEG_MAX_FIT_CACHE_BYTES is refused by the
    job's checks, before any read or cluster, rather than once the fit starts."""
    result = geoseg("validate", write_job(tmp_path, scene, model),
                    env={"GEOSEG_MAX_FIT_CACHE_BYTES": "1000"})
    assert_clean(result, 2, "model.params: ")
    assert f"{fit} in memory (cache=True); the limit is 1000 (GEOSEG_MAX_FIT_CACHE_BYTES)" in (
        result.stdout + result.stderr)


@pytest.mark.parametrize("model", [{"method": "kmeans", "params": {"k": 2}},
                                   {"method": "otsu", "params": {"feature": "mean"}}])
def test_a_fit_on_an_input_without_valid_pixels_names_the_input(tmp_path, model):
    import numpy as np

    url = write_zarr(tmp_path / "empty.zarr", np.zeros((3, 64, 64), np.uint8), nodata=0)
    result = geoseg("run", write_job(tmp_path, url, model, cluster={"kind": "threads"}))
    assert_clean(result, 2, f"input {url}: The raster has no valid pixel")
