"""An ensemble holding a method still to be fitted (k-means, multi-Otsu, ...) is checked like any
other before a pixel is read: ``geoseg validate`` and ``geoseg run`` build it with a stand-in for
that method (the classes, bands and geometry its fit will give, known from its parameters), so
members whose classes or bands disagree are refused before the fit, as the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geoseg.methods import build
from tests.cli import geoseg
from tests.conftest import random_unet, textured_image, write_zarr
from tests.test_errors_cli import assert_clean


@pytest.fixture()
def scene(tmp_path) -> Path:
    return Path(write_zarr(tmp_path / "scene.zarr", textured_image(130, 120)))


@pytest.fixture()
def no_fit(monkeypatch):
    """Any fit of a classical method fails the test: the check must come before it."""
    def fitted(*args, **kwargs):
        raise AssertionError("a classical method was fitted")

    for name in ("fit_kmeans", "fit_threshold", "fit_histogram_modes"):
        monkeypatch.setattr(build, name, fitted)


def ensemble_job(tmp_path: Path, scene: Path, *members: dict, **output) -> str:
    data = {"input": {"url": str(scene)}, "model": {"ensemble": {"members": list(members)}},
            "output": {"url": str(tmp_path / "out.zarr"), "chunks": [64, 64], **output}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


MISMATCHED = [  # the network (random-unet) has 4 classes, class_0 to class_3
    ({"method": "kmeans", "params": {"k": 3}}, "member 1 (k-means (k=3)) has 3 classes"),
    ({"method": "multiotsu", "params": {"classes": 3, "feature": 1}},
     "member 1 (multiotsu threshold) has 3 classes"),
]


@pytest.mark.parametrize("member, said", MISMATCHED)
def test_validate_refuses_a_network_and_a_fitted_method_of_other_class_counts(
        tmp_path, scene, model_path, no_fit, member, said):
    result = geoseg("validate", ensemble_job(tmp_path, scene, {"path": model_path}, member))
    assert_clean(result, 2, "model.ensemble: " + said,
                 "the ensemble's 4 classes (member 0, random-unet) are ['class_0'")


@pytest.mark.parametrize("member, said", MISMATCHED)
def test_run_refuses_the_mismatch_before_fitting_or_writing(tmp_path, scene, model_path, no_fit,
                                                            member, said):
    job = ensemble_job(tmp_path, scene, {"path": model_path}, member)
    assert_clean(geoseg("run", job, "--cluster", "threads"), 2, said)
    assert not (tmp_path / "out.zarr").exists()


def test_a_fitted_method_first_is_compared_with_the_network_after_it(tmp_path, scene, model_path,
                                                                     no_fit):
    job = ensemble_job(tmp_path, scene, {"method": "kmeans", "params": {"k": 2}}, {"path": model_path})
    assert_clean(geoseg("validate", job), 2, "member 1 (random-unet) has 4 classes",
                 "the ensemble's 2 classes (member 0, k-means (k=2)) are ['cluster_0', 'cluster_1']")


def test_matching_classes_still_validate(tmp_path, scene, model_path, no_fit):
    """multi-Otsu's default names for 4 classes are the network's: nothing to refuse."""
    member = {"method": "multiotsu", "params": {"classes": 4, "feature": 1}}
    result = geoseg("validate", ensemble_job(tmp_path, scene, {"path": model_path}, member))
    said = result.stdout + result.stderr
    assert result.returncode == 0 and "ensemble (its statistics are fitted" in said, said


def test_a_network_of_another_band_count_than_a_fitted_member_fails_validate(tmp_path, scene,
                                                                             no_fit):
    """The fitted member reads the input's 3 bands, the network wants 4."""
    four = tmp_path / "four-bands.safetensors"
    from geoseg.models import save_model

    save_model(random_unet(classes=2, bands=4, width=4, depth=2), str(four))
    member = {"method": "otsu", "params": {"feature": 1, "class_names": ["class_0", "class_1"]}}
    result = geoseg("validate", ensemble_job(tmp_path, scene, {"path": str(four)}, member))
    assert_clean(result, 2, "model.ensemble: member 1 (otsu threshold) expects 3 band(s)",
                 "expects 4 (band_1, band_2, band_3, band_4)")


def test_a_nodata_class_among_an_ensembles_classes_fails_validate(tmp_path, scene, model_path,
                                                                  no_fit):
    """The ensemble's class count is known before the fit, so output.nodata_class is checked."""
    member = {"method": "multiotsu", "params": {"classes": 4, "feature": 1}}
    job = ensemble_job(tmp_path, scene, {"path": model_path}, member, nodata_class=2)
    assert_clean(geoseg("validate", job), 2, "output.nodata_class: received 2, but the model's "
                                             "4 classes (ids 0 to 3)")


def test_an_instance_class_a_fitted_method_will_not_give_is_refused_before_the_fit(
        tmp_path, scene, no_fit):
    data = yaml.safe_load(Path(ensemble_job(tmp_path, scene, {"method": "kmeans",
                                                              "params": {"k": 3}})).read_text())
    data["instances"] = {"classes": ["building"]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    assert_clean(geoseg("validate", str(tmp_path / "job.yaml")), 2,
                 "instances.classes: received 'building'")


def test_a_parameter_a_direct_method_refuses_is_named_by_its_key(tmp_path, scene):
    member = {"method": "local", "params": {"block_size": 15, "mode": "wrap"}}
    job = ensemble_job(tmp_path, scene, {"method": "kmeans", "params": {"k": 2}}, member)
    assert_clean(geoseg("validate", job), 2, "model.ensemble.members.1.params: mode: received 'wrap'")
