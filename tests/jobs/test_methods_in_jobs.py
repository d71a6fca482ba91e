"""Classical methods wherever a model goes: a job spec with model.method."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.filters import sobel, threshold_otsu

from geoseg.errors import JobSpecError
from geoseg.jobs import JobSpec, run
from tests.conftest import textured_image, write_zarr


def method_job(src: str, out: str, method: str, **params) -> dict:
    return {"input": {"url": src}, "model": {"method": method, "params": params},
            "output": {"url": out, "chunks": [37, 53]}, "inference": {"tile": 40}}


def test_otsu_job_fits_globally_and_matches_scikit_image(tmp_path, cluster_address):
    image = textured_image(150, 130, bands=1, seed=3)
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(40, 40))
    report = run(JobSpec.from_dict(method_job(src, str(tmp_path / "out.zarr"), "otsu")),
                 scheduler=cluster_address)
    classes = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][:]
    np.testing.assert_array_equal(classes, (image[0] > threshold_otsu(image[0])).astype(np.uint8))
    record = report.provenance["model"]
    assert record["spec"]["method"] == "otsu" and record["fitted"]["thresholds"] == [float(threshold_otsu(image[0]))]


def test_sobel_edge_mask_job(tmp_path, cluster_address):
    image = textured_image(90, 100, bands=1, seed=4).astype(np.float32)
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(40, 40))
    run(JobSpec.from_dict(method_job(src, str(tmp_path / "out.zarr"), "sobel", threshold=20.0)),
        scheduler=cluster_address)
    classes = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][:]
    np.testing.assert_array_equal(classes, (sobel(image[0]) > 20.0).astype(np.uint8))


def test_spec_needs_exactly_one_of_path_and_method():
    with pytest.raises(JobSpecError, match="expected exactly one of path"):
        JobSpec.from_dict({"input": {"url": "a"}, "model": {"path": "m", "method": "otsu"},
                           "output": {"url": "o"}})


def test_unknown_method_lists_the_known_ones(tmp_path):
    src = write_zarr(tmp_path / "in.zarr", textured_image(20, 20, bands=1))
    with pytest.raises(JobSpecError, match="unknown method 'otsuu'; known methods: .*kmeans.*otsu"):
        run(JobSpec.from_dict(method_job(src, str(tmp_path / "out.zarr"), "otsuu")))
    assert not (tmp_path / "out.zarr").exists()


def test_ensemble_with_tta_job_equals_the_python_api(tmp_path, model_path, cluster_address):
    import geoseg
    from geoseg.ensembles import TTA, Ensemble
    from tests.conftest import random_unet

    other = str(tmp_path / "other.safetensors")
    geoseg.save_model(random_unet(seed=5), other)
    image = textured_image(70, 90, seed=6)
    src = write_zarr(tmp_path / "in.zarr", image)
    spec = {"input": {"url": src}, "output": {"url": str(tmp_path / "out.zarr"), "chunks": [37, 53]},
            "model": {"ensemble": {"members": [{"path": model_path}, {"path": other}], "weights": [2, 1]},
                      "tta": "flips"}}
    report = run(JobSpec.from_dict(spec), scheduler=cluster_address)
    members = [geoseg.load_model(model_path), geoseg.load_model(other)]
    expected = TTA(Ensemble(members, weights=[2, 1]), transforms="flips").predict_image(image).argmax(0)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"))["classes"][:], expected)
    assert [m["sha256"] for m in report.provenance["model"]["model_files"]] == [m.info.sha256 for m in members]


def test_a_method_feature_that_does_not_fit_the_bands_fails_before_compute(tmp_path):
    from geoseg.errors import BandMismatchError
    from geoseg.jobs.runner import prepare

    src = write_zarr(tmp_path / "rgb.zarr", textured_image(32, 32, bands=3))
    spec = JobSpec.from_dict(method_job(src, str(tmp_path / "out.zarr"), "threshold", thresholds=[100]))
    with pytest.raises(BandMismatchError, match=r"model.params: .*only band.*3 bands.*feature="):
        prepare(spec)
    assert not (tmp_path / "out.zarr").exists()
