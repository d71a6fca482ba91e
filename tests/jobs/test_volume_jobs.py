"""Volume jobs: NIfTI and OME-Zarr inputs through `run`, store to store, affine kept."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from skimage.filters import threshold_otsu

from geoseg.errors import JobSpecError
from geoseg.jobs.runner import run
from geoseg.jobs.spec import JobSpec
from geoseg.models.modelfile import save_model
from tests.io.test_volume_inputs import ANATOMICAL, oblique_affine, write_nifti
from tests.parallel.test_volumes import random_unet3d, volume


@pytest.mark.skipif(not ANATOMICAL.exists(), reason="nibabel's test data is not installed")
def test_real_mri_otsu_job_equals_scikit_image_and_keeps_the_affine(tmp_path, cluster_address):
    out = str(tmp_path / "anatomical-mask.zarr")
    spec = JobSpec.from_dict({"input": {"url": str(ANATOMICAL)}, "model": {"method": "otsu"},
                              "output": {"url": out, "chunks": [8, 16, 16]}})
    report = run(spec, scheduler=cluster_address)
    image = nib.load(str(ANATOMICAL))
    data = np.asarray(image.dataobj)
    expected = np.transpose(data > threshold_otsu(data), (2, 1, 0))
    classes = zarr.open_group(out, mode="r")["classes"]
    assert report.n_tasks == 4 * 3 * 3
    np.testing.assert_array_equal(classes[...], expected)
    affine = np.asarray(classes.attrs["voxel_affine"])[:, [2, 1, 0, 3]]
    np.testing.assert_allclose(affine, image.affine)


def test_3d_unet_job_on_nifti_equals_whole_volume_inference(tmp_path, cluster_address):
    model = random_unet3d(pool_z=False)
    model_file = str(tmp_path / "unet3d.safetensors")
    save_model(model, model_file)
    image = volume((19, 40, 36), seed=5)[0]  # (z, y, x)
    nifti = write_nifti(tmp_path / "scan.nii", np.transpose(image, (2, 1, 0)), oblique_affine())
    out = str(tmp_path / "mask.zarr")
    spec = JobSpec.from_dict({"input": {"url": str(nifti)}, "model": {"path": model_file},
                              "output": {"url": out, "chunks": [8, 24, 24], "probabilities": True},
                              "inference": {"tile": 16}})
    run(spec, scheduler=cluster_address)
    reference = model.predict_image(image[None])
    group = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(group["classes"][...], reference.argmax(0))
    np.testing.assert_allclose(group["probabilities"][...], reference, atol=2e-3)  # float16 store
    assert group["classes"].metadata.dimension_names == ("z", "y", "x")


def test_image_chunks_for_a_volume_are_refused_before_anything_is_written(tmp_path):
    nifti = write_nifti(tmp_path / "v.nii", np.zeros((8, 8, 8), np.float32), np.eye(4))
    out = tmp_path / "mask.zarr"
    spec = JobSpec.from_dict({"input": {"url": str(nifti)}, "model": {"method": "otsu"},
                              "output": {"url": str(out), "chunks": [64, 64]}})
    with pytest.raises(JobSpecError, match=r"output.chunks: received \[64, 64\].*\('z', 'y', 'x'\)"):
        run(spec)
    assert not Path(out).exists()


def test_a_2d_model_on_a_volume_and_a_3d_one_on_an_image_are_refused_by_validate(tmp_path):
    from geoseg.errors import PlanError
    from geoseg.jobs import prepare

    vol = zarr.create_array(str(tmp_path / "vol.zarr"), shape=(3, 8, 64, 64), chunks=(3, 8, 32, 32),
                            dtype="uint8", dimension_names=["band", "z", "y", "x"])
    vol[:] = 1
    spec = JobSpec.from_dict({"input": {"url": str(tmp_path / "vol.zarr")},
                              "model": {"path": "builtin:demo-unet"},
                              "output": {"url": str(tmp_path / "out.zarr")}})
    with pytest.raises(PlanError, match=r"demo-unet segments images \(y, x\), but the input .* has "
                                        r"spatial axes \('z', 'y', 'x'\).*SliceWise"):
        prepare(spec)
    image = zarr.create_array(str(tmp_path / "img.zarr"), shape=(1, 64, 64), chunks=(1, 64, 64),
                              dtype="float32", dimension_names=["band", "y", "x"])
    image[:] = 0
    save_model(random_unet3d(pool_z=False), str(tmp_path / "u3.safetensors"))
    spec = JobSpec.from_dict({"input": {"url": str(tmp_path / "img.zarr")},
                              "model": {"path": str(tmp_path / "u3.safetensors")},
                              "output": {"url": str(tmp_path / "out.zarr")}})
    with pytest.raises(PlanError, match=r"random-unet3d segments volumes \(z, y, x\), but the input .* has "
                                        r"spatial axes \('y', 'x'\).*Give a 2D model"):
        prepare(spec)
    assert not (tmp_path / "out.zarr").exists()
