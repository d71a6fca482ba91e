"""Store-to-store jobs on a real multi-process cluster."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import zarr

import geoseg
from geoseg.errors import BandMismatchError, OutputExistsError, RasterNotFoundError
from geoseg.jobs import JobSpec, run
from geoseg.jobs.status import verify_output
from geoseg.tiling.plan import n_regions
from tests.conftest import SHARED_DATA, job_dict, textured_image, write_geotiff, write_zarr


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(150, 130, seed=5)


def test_zarr_job_equals_whole_image_inference(tmp_path, image, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(50, 50))
    spec = JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "out.zarr"), probabilities=True,
                                      chunks=[64, 48], tile=None))
    report = run(spec, scheduler=cluster_address)
    reference = geoseg.load_model(model_path).predict_image(image)
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_array_equal(out["classes"][:], reference.argmax(0))
    assert verify_output(str(tmp_path / "out.zarr")).ok
    np.testing.assert_allclose(out["probabilities"][:].astype(np.float32), reference, atol=2e-3)
    assert out["classes"].chunks == (64, 48) and out["classes"].dtype == np.uint8
    region = tuple(out.attrs["geoseg"]["task_region"])  # whole chunks, grown past the small ones
    assert region[0] % 64 == 0 and region[1] % 48 == 0 and region != (64, 48)
    assert report.n_tasks == n_regions((150, 130), region) and report.pixels == 150 * 130
    record = out.attrs["geoseg"]["provenance"]
    assert out.attrs["geoseg"]["status"] == "complete"
    assert record["model"]["sha256"] == geoseg.load_model(model_path).info.sha256
    assert record["job"]["output"]["chunks"] == [64, 48]
    assert (record["resolved"]["chunks"], record["resolved"]["task_region"]) == ([64, 48],
                                                                                 list(region))
    assert set(record["timings"]["task_stage_sums_s"]) == {"read", "infer", "write"}
    timings = record["timings"]  # the workers' model loads are timed apart from the compute
    assert timings["model_load_s"] > 0
    assert timings["model_load_s"] + timings["compute_s"] <= timings["total_s"]
    assert {"dask", "zarr", "torch", "rasterio"} <= set(record["packages"])
    assert sum(record["class_counts"].values()) == 150 * 130


def test_geotiff_job_keeps_crs_transform_and_nodata(tmp_path, image, model_path, cluster_address):
    image = image.copy()
    image[:, :12, :] = 0
    src = write_geotiff(tmp_path / "in.tif", image, nodata=0)
    run(JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "out.zarr"))), scheduler=cluster_address)
    ds = xr.open_zarr(str(tmp_path / "out.zarr"), mask_and_scale=False)
    rio_crs = ds["classes"].rio.crs
    with rasterio.open(src) as tif:
        assert rio_crs == tif.crs
        assert tuple(ds["classes"].rio.transform())[:6] == tuple(tif.transform)[:6]
        np.testing.assert_allclose(ds["x"].values, tif.xy(0, np.arange(tif.width))[0])
    classes = ds["classes"].values
    assert (classes[:12] == 255).all() and (classes[12:] != 255).all()
    assert ds["classes"].attrs["nodata"] == 255


def test_a_folder_geoseg_did_not_write_is_never_deleted_even_with_overwrite(
        tmp_path, image, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", image)
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    spec = JobSpec.from_dict(job_dict(src, model_path, str(out)))
    with pytest.raises(OutputExistsError, match="nothing was written. Choose another output URL: "
                                                "geoseg never deletes what it did not write"):
        run(spec, scheduler=cluster_address)
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    with pytest.raises(OutputExistsError, match="not something geoseg wrote.*nothing was deleted"):
        run(spec, scheduler=cluster_address, overwrite=True)
    assert (out / "precious.txt").read_text() == "keep me"


def test_overwrite_with_a_damaged_model_file_keeps_the_output_it_would_replace(
        tmp_path, image, model_path, cluster_address):
    """The workers found the weights did not hash to the header's sha256 only after the
    output had been deleted: a finished result was lost to a damaged file."""
    import shutil

    from geoseg.errors import ModelFileError

    src = write_zarr(tmp_path / "in.zarr", image)
    out = tmp_path / "out.zarr"
    run(JobSpec.from_dict(job_dict(src, model_path, str(out))), scheduler=cluster_address)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    damaged = tmp_path / "damaged.safetensors"
    shutil.copy(model_path, damaged)
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF  # a bit flipped in the last tensor's bytes
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        run(JobSpec.from_dict(job_dict(src, str(damaged), str(out))), scheduler=cluster_address,
            overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_overwrite_replaces_an_output_geoseg_wrote(tmp_path, image, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", image)
    out = tmp_path / "out.zarr"
    run(JobSpec.from_dict(job_dict(src, model_path, str(out), tile=None)), scheduler=cluster_address)
    (out / "NOTES.txt").write_text("mine")  # a file of the user's inside the output
    again = JobSpec.from_dict(job_dict(src, model_path, str(out)))
    with pytest.raises(OutputExistsError, match=r"also holds what geoseg did not write \(NOTES.txt\); "
                                                "nothing was deleted, even with --overwrite"):
        run(again, scheduler=cluster_address, overwrite=True)
    assert (out / "NOTES.txt").read_text() == "mine" and (out / "classes").is_dir()
    (out / "NOTES.txt").unlink()
    # what a process killed while writing a file into the output left (its polygons, say)
    for left in (".geoseg-staged-k1ll3d", ".geoseg-export-k1ll3d"):  # this version's, earlier's
        (out / left).mkdir()
        (out / left / "polygons.parquet").write_bytes(b"half")
    run(again, scheduler=cluster_address, overwrite=True)
    assert zarr.open_group(str(out), mode="r")["classes"].shape == image.shape[1:]
    assert not list(out.glob(".geoseg-*"))


def test_bad_inputs_fail_before_writing(tmp_path, image, model_path, cluster_address):
    out = tmp_path / "out.zarr"
    with pytest.raises(RasterNotFoundError, match="input.url: No raster at"):
        run(JobSpec.from_dict(job_dict(str(tmp_path / "missing.zarr"), model_path, str(out))))
    four = write_zarr(tmp_path / "four.zarr", textured_image(40, 40, bands=4))
    with pytest.raises(BandMismatchError, match="input.bands: .*expects 3 band"):
        run(JobSpec.from_dict(job_dict(four, model_path, str(out))))
    assert not out.exists()


def test_s3_to_s3_job_matches_local_and_leaks_no_secret(tmp_path, image, model_path, s3_server,
                                                        cluster_address):
    src = "s3://geoseg/jobs/in.zarr"
    arr = zarr.create_array(src, shape=image.shape, chunks=(3, 64, 64), dtype="uint8",
                            storage_options=s3_server)
    arr[:] = image
    data = job_dict(src, model_path, "s3://geoseg/jobs/out.zarr")
    data["input"]["storage_options"] = s3_server
    data["output"]["storage_options"] = s3_server
    run(JobSpec.from_dict(data), scheduler=cluster_address)
    out = zarr.open_group("s3://geoseg/jobs/out.zarr", mode="r", storage_options=s3_server)
    expected = geoseg.load_model(model_path).predict_image(image).argmax(0)
    np.testing.assert_array_equal(out["classes"][:], expected)
    attrs = json.dumps(out.attrs.asdict())
    assert s3_server["secret"] not in attrs and s3_server["key"] not in attrs


@pytest.mark.skipif(not (SHARED_DATA / "RGB.byte.tif").exists(), reason="shared Landsat sample absent")
def test_real_landsat_scene_keeps_its_georeferencing(tmp_path, cluster_address):
    src = str(SHARED_DATA / "RGB.byte.tif")
    spec = JobSpec.from_dict(job_dict(src, "builtin:demo-unet", str(tmp_path / "landsat.zarr"),
                                      chunks=[256, 256]))
    run(spec, scheduler=cluster_address)
    ds = xr.open_zarr(str(tmp_path / "landsat.zarr"), mask_and_scale=False)
    with rasterio.open(src) as tif:
        assert ds["classes"].rio.crs == tif.crs
        assert tuple(ds["classes"].rio.transform())[:6] == tuple(tif.transform)[:6]
        nodata = (tif.read() == 0).all(axis=0)
    classes = ds["classes"].values
    assert (classes[nodata] == 255).all() and (classes[~nodata] < 5).all()


def test_dask_scheduler_address_environment_variable(tmp_path, image, model_path, cluster_address,
                                                     monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster_address)
    src = write_zarr(tmp_path / "in.zarr", image)
    report = run(JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "out.zarr"))))
    assert report.provenance["cluster"] == {"kind": "existing", "workers": 2, "threads": 2}


def _broken_input(folder) -> str:
    src = write_zarr(folder / "in.zarr", textured_image(64, 64, bands=1), chunks=(32, 32))
    (folder / "in.zarr" / "c" / "0" / "1" / "1").write_bytes(b"not zstd")
    return src


@pytest.mark.parametrize("case", ["fit", "scheduler"])
def test_a_run_failing_before_its_output_exists_still_leaves_a_failed_record(tmp_path, case):
    """An Otsu fit meeting an undecodable chunk, or a scheduler nobody listens at, ended the
    run before the output was created, and only a run that failed in its compute left a
    record for `geoseg runs` to list."""
    from tests.ports import free_port

    data = {"name": case, "runs_dir": str(tmp_path / "runs"),
            "input": {"url": _broken_input(tmp_path) if case == "fit" else
                      write_zarr(tmp_path / "ok.zarr", textured_image(64, 64, bands=1))},
            "model": {"method": "otsu", "params": {"feature": 1}},
            "output": {"url": str(tmp_path / "out.zarr")}}
    where = {"scheduler": "threads"} if case == "fit" else {
        "scheduler": f"tcp://127.0.0.1:{free_port()}"}
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), \
            pytest.raises(geoseg.errors.GeosegError):
        run(JobSpec.from_dict(data), **where)
    [saved] = (tmp_path / "runs").glob("*.json")
    record = json.loads(saved.read_text())
    assert record["status"] == "failed" and record["job"]["name"] == case, record
    assert record["chunks"]["computed"] == 0 and record["model"]["name"] == "otsu"
    assert not (tmp_path / "out.zarr").exists()
