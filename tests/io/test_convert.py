"""geoseg convert: inputs to chunked Zarr, checked with nibabel, rioxarray and a job on it."""

from __future__ import annotations

import gzip
import json
import shutil

import fsspec
import nibabel as nib
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
import zarr
from rasterio.enums import Resampling

import geoseg
from geoseg.errors import OutputExistsError, UnsupportedFormatError
from geoseg.io.convert import convert
from geoseg.io.exports import export_nifti
from geoseg.io.georef import GeoRef
from geoseg.io.nifti import nifti_affine
from geoseg.jobs import JobSpec, run
from tests.cli import geoseg as geoseg_cli
from tests.conftest import textured_image, write_geotiff
from tests.io.test_export_nifti import coded_nifti, otsu_job
from tests.io.test_volume_inputs import oblique_affine, write_nifti


def gzipped_nifti(tmp_path, data: np.ndarray, affine: np.ndarray, **scaling: float) -> str:
    path = write_nifti(tmp_path / "scan.nii", data, affine, **scaling)
    gz = tmp_path / "scan.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return str(gz)


def test_gzipped_nifti_to_zarr_equals_nibabel_and_keeps_the_affine(tmp_path):
    data = np.random.default_rng(0).integers(-500, 3000, size=(23, 17, 9), dtype=np.int16)
    gz = gzipped_nifti(tmp_path, data, oblique_affine())
    out = str(tmp_path / "scan.zarr")
    done = convert(gz, out, chunks=[4, 8, 16])
    assert done.shape == (1, 9, 17, 23) and done.chunks == (1, 4, 8, 16) and done.dtype == "int16"
    raster = geoseg.open_raster(out)
    image = nib.load(gz)
    assert raster.dims == ("band", "z", "y", "x")
    np.testing.assert_array_equal(raster.values[0], np.transpose(image.get_fdata(), (2, 1, 0)))
    georef = GeoRef.from_voxel_affine(raster.attrs["voxel_affine"])
    np.testing.assert_allclose(nifti_affine(georef), image.affine, atol=1e-6)
    np.testing.assert_allclose(raster.attrs["spacing"], [2.5, 0.9, 0.8], rtol=1e-6)
    assert raster.attrs["units"] == "mm"
    assert zarr.open_group(out, mode="r")["raster"].metadata.dimension_names == (
        "band",
        "z",
        "y",
        "x",
    )


def test_scaled_4d_gzipped_nifti_with_band_selection(tmp_path):
    data = np.random.default_rng(1).integers(0, 1000, size=(11, 13, 7, 3), dtype=np.int16)
    gz = gzipped_nifti(tmp_path, data, np.diag([1.5, 1.5, 3.0, 1.0]), slope=0.5, inter=-10.0)
    out = str(tmp_path / "dwi.zarr")
    convert(gz, out, bands=[3, 1], chunks=3)
    raster = geoseg.open_raster(out)
    expected = np.transpose(nib.load(gz).get_fdata(dtype=np.float32), (3, 2, 1, 0))[[2, 0]]
    assert raster.dtype == np.float32 and list(raster["band"].values) == ["volume_3", "volume_1"]
    np.testing.assert_allclose(raster.values, expected, rtol=1e-6)


def test_geotiff_to_zarr_reads_the_same_in_rioxarray_and_a_job_runs_on_it(
    tmp_path, cluster_address
):
    image = textured_image(150, 170, seed=4)
    image[:, :20, :30] = 0
    tif = write_geotiff(tmp_path / "scene.tif", image, nodata=0)
    with rasterio.open(tif, "r+") as ds:
        ds.descriptions = ("red", "green", "nir")
    out = str(tmp_path / "scene.zarr")
    convert(tif, out, chunks=64)
    original = rioxarray.open_rasterio(tif)
    converted = xr.open_zarr(out)["raster"]
    assert converted.rio.crs == original.rio.crs
    assert converted.rio.transform() == original.rio.transform()
    assert converted.rio.nodata == original.rio.nodata == 0
    assert (
        list(converted.attrs["long_name"])
        == list(original.attrs["long_name"])
        == ["red", "green", "nir"]
    )
    np.testing.assert_array_equal(converted.values, original.values)
    np.testing.assert_array_equal(converted["x"].values, original["x"].values)
    assert converted.dtype == np.uint8 and converted.data.chunksize == (3, 64, 64)
    mask = str(tmp_path / "mask.zarr")
    spec = {
        "input": {"url": out},
        "model": {"method": "otsu", "params": {"feature": "mean"}},
        "output": {"url": mask, "chunks": [64, 64]},
    }
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    classes = xr.open_zarr(mask, mask_and_scale=False)["classes"]
    assert (
        classes.rio.crs == original.rio.crs and classes.rio.transform() == original.rio.transform()
    )
    assert (classes.values[:20, :30] == 255).all() and (classes.values[20:] != 255).all()


def test_cog_overview_level_and_bands(tmp_path):
    data = np.random.default_rng(5).integers(0, 255, size=(3, 256, 320), dtype=np.uint8)
    tif = write_geotiff(tmp_path / "cog.tif", data, nodata=None)
    with rasterio.open(tif, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.nearest)
    out = str(tmp_path / "level1.zarr")
    convert(tif, out, level=1, bands=[2])
    raster = geoseg.open_raster(out)
    with rasterio.open(tif) as ds:
        expected = ds.read(2, out_shape=(128, 160), resampling=Resampling.nearest)
        transform = ds.transform @ ds.transform.scale(2, 2)
    np.testing.assert_array_equal(raster.values[0], expected)
    np.testing.assert_allclose(raster.attrs["transform"], tuple(transform)[:6])
    assert "nodata" not in raster.attrs


def test_existing_output_and_the_input_itself_are_refused(tmp_path):
    gz = gzipped_nifti(tmp_path, np.ones((6, 5, 4), np.float32), np.eye(4))
    out = tmp_path / "v.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists; nothing was written"):
        convert(gz, str(out))
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputExistsError, match="is the input .* itself"):
        convert(gz, gz, overwrite=True)
    with pytest.raises(UnsupportedFormatError, match="one resolution"):
        convert(gz, str(out), level=1, overwrite=True)
    with pytest.raises(OutputExistsError, match="not something geoseg wrote.*nothing was deleted"):
        convert(gz, str(out), overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    done = tmp_path / "done.zarr"
    convert(gz, str(done))
    convert(gz, str(done), overwrite=True)  # what geoseg wrote, it may replace
    assert geoseg.open_raster(str(done)).shape == (1, 4, 5, 6)


def test_gzipped_nifti_on_s3_to_zarr_on_s3(tmp_path, s3_server):
    data = np.random.default_rng(6).normal(size=(20, 18, 6)).astype(np.float32)
    gz = gzipped_nifti(tmp_path, data, oblique_affine())
    fs = fsspec.filesystem("s3", **s3_server)
    fs.put(gz, "s3://geoseg/convert/scan.nii.gz")
    out = "s3://geoseg/convert/scan.zarr"
    convert(
        "s3://geoseg/convert/scan.nii.gz", out, storage_options=s3_server, out_options=s3_server
    )
    remote = geoseg.open_raster(out, storage_options=s3_server)
    np.testing.assert_array_equal(remote.values[0], np.transpose(data, (2, 1, 0)))
    stored = json.dumps(dict(zarr.open_group(out, mode="r", storage_options=s3_server).attrs))
    assert s3_server["secret"] not in stored and s3_server["key"] not in stored


def test_command_line_convert(tmp_path):
    gz = gzipped_nifti(tmp_path, np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4), np.eye(4))
    out = str(tmp_path / "v.zarr")

    done = geoseg_cli("convert", gz, out, "--chunks", "2,5,6")
    assert done.returncode == 0, done.stderr
    assert zarr.open_group(out, mode="r")["raster"].chunks == (1, 2, 5, 6)
    bad = geoseg_cli("convert", gz, str(tmp_path / "w.zarr"), "--bands", "2")
    assert bad.returncode == 2 and "out of range" in bad.stderr
    assert not (tmp_path / "w.zarr").exists()


def test_command_line_convert_and_export_with_s3_credentials_from_the_environment(
        tmp_path, s3_server, cluster_address):
    """No storage options on the command line: key, secret and endpoint come from AWS_* variables,
    and the secret is printed nowhere."""
    image = textured_image(96, 80, seed=3)
    fsspec.filesystem("s3", **s3_server).put(write_geotiff(tmp_path / "s.tif", image), "s3://geoseg/cli/s.tif")
    env = {"AWS_ACCESS_KEY_ID": s3_server["key"], "AWS_SECRET_ACCESS_KEY": s3_server["secret"],
           "AWS_ENDPOINT_URL": s3_server["client_kwargs"]["endpoint_url"], "AWS_DEFAULT_REGION": "us-east-1"}
    # processes of their own: credentials come from a new process's environment, and
    # everything they print is searched for the secret
    done = geoseg_cli("convert", "s3://geoseg/cli/s.tif", "s3://geoseg/cli/s.zarr", "--chunks", "32",
                      env=env, own_process=True)
    assert done.returncode == 0, done.stderr
    converted = geoseg.open_raster("s3://geoseg/cli/s.zarr", storage_options=s3_server)
    np.testing.assert_array_equal(converted.values, image)
    spec = {"input": {"url": "s3://geoseg/cli/s.zarr", "storage_options": s3_server},
            "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
            "output": {"url": "s3://geoseg/cli/mask.zarr", "storage_options": s3_server, "chunks": [32, 32]}}
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    exported = geoseg_cli("export", "s3://geoseg/cli/mask.zarr", "--cog", str(tmp_path / "mask.tif"),
                          env=env, own_process=True)
    assert exported.returncode == 0, exported.stderr
    with rasterio.open(tmp_path / "mask.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), (image[0] > 128).astype(np.uint8))
    for result in (done, exported):
        assert s3_server["secret"] not in result.stdout + result.stderr


def test_a_conversion_that_fails_midway_leaves_nothing_and_can_be_run_again(tmp_path):
    """A truncated gzipped NIfTI decodes its first planes only: the part-written copy read as
    zeros where its chunks were missing, and a rerun was refused because it existed. (A
    truncated .nii is refused when opened, before anything is written.)"""
    data = np.random.default_rng(1).integers(100, 1000, (40, 50, 30)).astype(np.uint16)
    whole = gzip.compress(write_nifti(tmp_path / "vol.nii", data, np.eye(4)).read_bytes())
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    out = tmp_path / "c.zarr"
    for _ in range(2):  # the same error again, not "already exists"
        done = geoseg_cli("convert", str(truncated), str(out), "--chunks", "8,64,64")
        said = " ".join(done.stderr.split())
        assert done.returncode == 2 and "is truncated" in said, said
        assert f"Nothing was converted: the part-written output {out} was removed." in said
        assert not out.exists()


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_converted_nifti_keeps_the_xform_codes_through_a_job_and_its_export(
        tmp_path, cluster_address, klass):
    """A gzipped NIfTI in scanner (qform) and MNI (sform) space: the converted Zarr carries the
    codes, a job on it hands them to its output, and the export writes them back, with neither
    the NIfTI file nor the converted Zarr there any more."""
    scan = coded_nifti(tmp_path / "scan.nii.gz", klass, (1, 4))
    affine = nib.load(scan).affine
    converted = str(tmp_path / "scan.zarr")
    convert(str(scan), converted, chunks=[4, 8, 8])
    assert zarr.open_group(converted, mode="r")["raster"].attrs["nifti_codes"] == [1, 4]
    assert geoseg.open_raster(converted).attrs["nifti_codes"] == [1, 4]
    out = otsu_job(converted, tmp_path / "mask.zarr", cluster_address)
    scan.unlink()
    shutil.rmtree(converted)
    exported = nib.load(export_nifti(out, str(tmp_path / "mask.nii")))
    assert (int(exported.header["qform_code"]), int(exported.header["sform_code"])) == (1, 4)
    np.testing.assert_allclose(exported.affine, affine, atol=1e-4)


def test_converting_a_nifti_that_names_no_space_stores_no_xform_codes(tmp_path):
    """Codes (0, 0) say nothing: no attribute, as for any other input."""
    scan = coded_nifti(tmp_path / "scan.nii.gz", codes=(0, 0))
    out = str(tmp_path / "scan.zarr")
    convert(str(scan), out)
    assert "nifti_codes" not in zarr.open_group(out, mode="r")["raster"].attrs
    assert "voxel_affine" in zarr.open_group(out, mode="r")["raster"].attrs


def test_chunks_past_the_task_budget_are_refused_before_anything_is_written(tmp_path,
                                                                            monkeypatch):
    """--chunks 1 on a 1 MB image made a million chunk files: 1.7 GB and still writing."""
    from geoseg.errors import BudgetError

    src = write_geotiff(tmp_path / "in.tif", textured_image(64, 48, bands=1, seed=5))
    monkeypatch.setenv("GEOSEG_MAX_TASKS", str(64 * 48 // 4 - 1))
    with pytest.raises(BudgetError, match=r"into chunks of 2 x 2 has 768 tasks \(chunks\); the "
                                          r"limit is 767 \(GEOSEG_MAX_TASKS\)\. Give larger --chunks"):
        convert(src, str(tmp_path / "out.zarr"), chunks=2)
    assert not (tmp_path / "out.zarr").exists()
    convert(src, str(tmp_path / "out.zarr"), chunks=4)  # 192 chunks


def test_a_gzipped_nifti_volume_out_of_range_is_a_band_error_naming_the_volumes(tmp_path):
    """Volumes of a gzipped 4D NIfTI are picked as bands; one out of range was refused as an
    unsupported format (the file is supported): it is the band error every reader gives."""
    from geoseg.errors import BandMismatchError

    data = np.zeros((5, 4, 3, 2), np.int16)  # two volumes
    gz = gzipped_nifti(tmp_path, data, np.eye(4))
    with pytest.raises(BandMismatchError, match=r"Band numbers \[3\] are out of range for .*"
                                                r"scan.nii.gz, which has 2 band\(s\)"):
        convert(gz, str(tmp_path / "scan.zarr"), bands=[3])
    assert not (tmp_path / "scan.zarr").exists()


def test_a_band_out_of_range_is_named_with_the_public_form_of_its_url():
    from geoseg.errors import BandMismatchError
    from geoseg.io.readers.base import band_indexes

    url = "https://reader:pw-9f8e7d@example.org/scene.tif?sig=SAS-token-1234"
    with pytest.raises(BandMismatchError) as caught:
        band_indexes([4], 3, url)
    message = str(caught.value)
    assert "https://example.org/scene.tif" in message, message
    assert "pw-9f8e7d" not in message and "SAS-token" not in message, message
