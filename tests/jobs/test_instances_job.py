"""The instance stage of a job: labels, table and polygons beside the classes, on a real cluster."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage as ndi
from skimage import data, measure
from skimage.filters import threshold_otsu

from geoseg.errors import JobSpecError
from geoseg.jobs import JobSpec, run
from geoseg.jobs.status import output_status, verify_output
from tests.conftest import TRANSFORM, write_geotiff
from tests.instances.test_components import assert_same_partition


def coins_job(tmp_path, instances: dict) -> tuple[dict, np.ndarray]:
    coins = data.coins()
    src = write_geotiff(tmp_path / "coins.tif", coins[None], nodata=None)
    spec = {"input": {"url": src}, "model": {"method": "otsu"},
            "output": {"url": str(tmp_path / "out.zarr"), "chunks": [64, 96]},
            "inference": {"tile": 64}, "instances": instances}
    return spec, coins > threshold_otsu(coins)


def test_components_job_writes_labels_table_and_polygons(tmp_path, cluster_address):
    spec, mask = coins_job(tmp_path, {"classes": [1], "connectivity": 2})
    spec["output"]["probabilities"] = True
    report = run(JobSpec.from_dict(spec), scheduler=cluster_address)
    out = tmp_path / "out.zarr"
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["classes"][:], mask)
    labels = group["instances"][:]
    ref, n = ndi.label(mask, np.ones((3, 3)))
    assert report.instances.count == n and labels.dtype == np.uint32
    assert_same_partition(labels, ref)

    table = pd.read_parquet(out / "instances.parquet")
    props = {p.label: p for p in measure.regionprops(labels)}
    assert len(table) == n and (table["class"] == 1).all()
    np.testing.assert_array_equal(table["mean_probability"], 1.0)  # Otsu's classes are certain
    world = np.array([TRANSFORM @ (c + 0.5, r + 0.5)
                      for r, c in zip(table["centroid_y"], table["centroid_x"])])
    np.testing.assert_allclose(table[["x", "y"]].to_numpy(), world)
    for row in table.itertuples():
        assert row.area_px == props[row.id].area
        assert (row.min_y, row.min_x, row.max_y, row.max_x) == props[row.id].bbox

    polygons = gpd.read_parquet(out / "polygons.parquet")
    pixel_area = abs(TRANSFORM.a * TRANSFORM.e)
    assert sorted(polygons["id"]) == list(range(1, n + 1))
    np.testing.assert_allclose(polygons.area.to_numpy(),
                               polygons["area_px"].to_numpy() * pixel_area, rtol=1e-9)
    assert polygons.crs.to_epsg() is not None
    on_wgs84 = gpd.read_file(out / "polygons.geojson")  # RFC 7946: longitude, latitude
    assert len(on_wgs84) == n and on_wgs84.crs.to_epsg() == 4326
    np.testing.assert_allclose(on_wgs84.total_bounds, polygons.to_crs(4326).total_bounds, atol=1e-7)

    record = report.provenance["instances"]
    assert record["count"] == n and set(record["files"]) == {
        "instances.parquet", "polygons.parquet", "polygons.geojson"}
    assert verify_output(str(out)).ok


def test_rerun_skips_a_complete_stage_and_verify_catches_changes(tmp_path, cluster_address):
    spec, _ = coins_job(tmp_path, {"classes": [1]})
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    again = run(JobSpec.from_dict(spec), scheduler=cluster_address)
    assert again.instances.skipped and again.n_tasks == 0 and again.skipped > 0

    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r+")
    block = group["instances"][:64, :96]
    block[block > 0] += 1
    group["instances"][:64, :96] = block
    (tmp_path / "out.zarr" / "polygons.geojson").write_text("{}")
    report = verify_output(str(tmp_path / "out.zarr"))
    assert not report.ok and "instances:0.0" in report.mismatched
    assert "polygons.geojson" in report.mismatched and "instances:0.1" not in report.mismatched


def test_watershed_job_splits_touching_discs(tmp_path, cluster_address):
    from tests.instances.test_watershed import touching_discs, whole_distance_watershed

    mask = touching_discs(7, shape=(160, 200))
    image = np.where(mask, 200, 20).astype(np.uint8)[None]
    src = write_geotiff(tmp_path / "discs.tif", image, nodata=None)
    spec = {"input": {"url": src}, "model": {"method": "otsu"},
            "output": {"url": str(tmp_path / "out.zarr"), "chunks": [48, 64]},
            "inference": {"tile": 48},
            "instances": {"method": "watershed", "classes": [1], "halo": 40, "h": 2.0,
                          "polygons": False}}
    report = run(JobSpec.from_dict(spec), scheduler=cluster_address)
    labels = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["instances"][:]
    ref = whole_distance_watershed(mask, 2.0)
    assert report.instances.count == ref.max() > ndi.label(mask)[1]
    assert_same_partition(labels, ref)
    assert not (tmp_path / "out.zarr" / "polygons.parquet").exists()


def test_unknown_instance_class_fails_before_any_compute(tmp_path):
    spec, _ = coins_job(tmp_path, {"classes": ["buildings"]})
    spec["model"] = {"path": "builtin:demo-unet"}
    spec["input"]["url"] = write_geotiff(tmp_path / "rgb.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(Exception, match=r"instances.*'buildings'.*expected a name \(.*building"):
        run(JobSpec.from_dict(spec))
    assert not (tmp_path / "out.zarr").exists()


def test_spec_rejects_a_bad_instances_section():
    with pytest.raises(JobSpecError, match="instances.method"):
        JobSpec.from_dict({"input": {"url": "a"}, "model": {"method": "otsu"},
                           "output": {"url": "o"}, "instances": {"method": "magic"}})


def test_an_interrupted_stage_is_redone_on_rerun(tmp_path, cluster_address, monkeypatch):
    """A run killed inside the instance stage leaves it 'running': verify says so, status says
    it was interrupted (or running, with the run, while a run holds the lease), and the next run
    redoes the stage (its chunks are all skipped) and ends complete."""
    from geoseg.io.output import OutputTarget
    from geoseg.io.stages import mark_stage, stage_record

    spec, _ = coins_job(tmp_path, {"classes": [1]})
    first = run(JobSpec.from_dict(spec), scheduler=cluster_address)
    target = OutputTarget(str(tmp_path / "out.zarr"))
    mark_stage(target, "instances", {**stage_record(target, "instances"), "status": "running"})
    (tmp_path / "out.zarr" / "polygons.parquet").unlink()
    assert verify_output(target.url).mismatched == ["instances (stage not complete)"]
    assert output_status(target.url).stages == {  # no run holds it: the run that ran it died
        "instances": ("interrupted (no run holds it now: its run was stopped, or failed where it "
                      "could not record so, such as on a full disk; run geoseg instances, or the "
                      "job, again)")}

    from geoseg.jobs import status
    from geoseg.jobs.lease import Lease, read_lease

    lease = Lease(target.url, owner="another-host-4242-abcdef", seconds=60)
    assert lease.acquire()
    live = read_lease(target.url)
    lease.release()
    target.finalize({"status": "running"})  # as a resumed run leaves it
    monkeypatch.setattr(status, "read_lease", lambda *_: answers.pop(0))
    for answers in ([live, None], [None, live]):
        told = output_status(target.url)  # a run ending as status asks: one answer, read once
        held = told.status.startswith("running (lease held by ")
        assert held == (told.stages["instances"] == "running"), told

    again = run(JobSpec.from_dict(spec), scheduler=cluster_address)
    assert again.n_tasks == 0 and not again.instances.skipped
    assert again.instances.count == first.instances.count
    assert (tmp_path / "out.zarr" / "polygons.parquet").exists() and verify_output(target.url).ok


def small_job(tmp_path, instances: dict) -> tuple[dict, np.ndarray]:
    """A 96 x 96 image of bright squares (otsu: class 1), on threads."""
    image = np.full((96, 96), 10, np.uint8)
    image[8:30, 8:30] = image[50:80, 40:70] = image[10:20, 60:90] = 200
    src = write_geotiff(tmp_path / "small.tif", image[None], nodata=None)
    spec = {"input": {"url": src}, "model": {"method": "otsu"},
            "output": {"url": str(tmp_path / "out.zarr"), "chunks": [48, 48]},
            "inference": {"tile": 48}, "instances": instances, "cluster": {"kind": "threads"}}
    return spec, image > 100


@pytest.mark.parametrize("instances, needle", [
    ({"method": "watershed", "halo": 0}, "instances.halo: received 0"),
    ({"method": "components", "classes": []}, "instances.classes: received an empty list"),
    ({"method": "components", "connectivity": 3}, "instances.connectivity: received 3"),
])
def test_settings_that_would_fail_after_compute_are_refused_first(tmp_path, instances, needle):
    from tests.cli import geoseg

    spec, _ = small_job(tmp_path, instances)
    (tmp_path / "job.yaml").write_text(json.dumps(spec))
    checked = geoseg("validate", str(tmp_path / "job.yaml"))
    assert checked.returncode == 2 and needle in " ".join(checked.stderr.split()), checked.stderr
    with pytest.raises(Exception, match=needle):
        run(JobSpec.from_dict(spec))
    assert not (tmp_path / "out.zarr").exists()


def test_a_failing_stage_is_recorded_failed_not_running(tmp_path, monkeypatch):
    from geoseg.instances import stage

    spec, _ = small_job(tmp_path, {"classes": [1]})

    def broken(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(stage, "routed_labels", broken)
    with pytest.raises(MemoryError):
        run(JobSpec.from_dict(spec))
    assert output_status(str(tmp_path / "out.zarr")).stages == {"instances": "failed"}
    monkeypatch.undo()
    again = run(JobSpec.from_dict(spec))
    assert again.n_tasks == 0 and again.instances.count == 3
    assert output_status(str(tmp_path / "out.zarr")).stages == {"instances": "complete"}


def test_a_job_keeps_instances_made_with_other_settings_unless_overwrite(tmp_path):
    from geoseg.errors import OutputExistsError

    spec, mask = small_job(tmp_path, {"classes": [1]})
    first = run(JobSpec.from_dict(spec))
    out = tmp_path / "out.zarr"
    kept = zarr.open_group(str(out), mode="r")["instances"][:]
    table = (out / "instances.parquet").read_bytes()
    assert_same_partition(kept, ndi.label(mask)[0])
    assert first.instances.count == 3

    spec["instances"] = {"classes": [1], "polygons": False}
    with pytest.raises(OutputExistsError, match=r"made with other settings \(polygons True -> "
                                                r"False\).*--overwrite"):
        run(JobSpec.from_dict(spec))
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["instances"][:], kept)
    assert (out / "instances.parquet").read_bytes() == table and (out / "polygons.parquet").exists()
    replaced = run(JobSpec.from_dict(spec), overwrite=True)
    assert replaced.instances.count == 3 and not (out / "polygons.parquet").exists()


def test_a_run_given_a_client_that_is_not_the_default_computes_everything_on_it(tmp_path):
    """Fitting a method and the instance stage went to dask's default client (another cluster)
    or, with none, ran in the calling process; the regions' wait failed outright."""
    from distributed import Client, LocalCluster

    spec, mask = coins_job(tmp_path, {"classes": [1], "connectivity": 2})

    def prefixes(client: Client) -> set[str]:
        return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as given_cluster, \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                         dashboard_address=None) as other_cluster, \
            Client(given_cluster, set_as_default=False) as given, Client(other_cluster) as other:
        report = run(JobSpec.from_dict(spec), client=given)
        assert not prefixes(other), prefixes(other)  # the default client saw no task
        ran = prefixes(given)
    assert report.instances.count > 0 and "segment_to_store" in ran and len(ran) > 3, ran
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][:],
                                  mask)
