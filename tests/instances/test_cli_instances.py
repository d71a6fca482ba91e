"""``geoseg instances``: label a mask geoseg did not write, or an output in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from scipy import ndimage as ndi
from skimage import filters

from tests.cli import geoseg
from tests.instances.test_components import assert_same_partition


def test_semantic_zarr_mask_gets_instances_per_class(tmp_path, cluster_address):
    rng = np.random.default_rng(3)
    mask = ndi.zoom(rng.integers(0, 3, (12, 10)), 8, order=0).astype(np.uint8)
    arr = zarr.create_array(str(tmp_path / "mask.zarr"), shape=mask.shape, chunks=(30, 17),
                            dtype="uint8", dimension_names=["y", "x"])
    arr[:] = mask
    out = tmp_path / "labels.zarr"
    done = geoseg("instances", str(tmp_path / "mask.zarr"), "--out", str(out), "--cluster",
                  cluster_address, "--classes", "1,2")
    assert done.returncode == 0, done.stderr
    labels = zarr.open_group(str(out), mode="r")["instances"][:]
    ref = np.zeros(mask.shape, np.int64)
    for value in (1, 2):
        part, _ = ndi.label(mask == value)
        ref[part > 0] = part[part > 0] + ref.max()
    assert_same_partition(labels, ref)
    table = pd.read_parquet(out / "instances.parquet")
    assert len(table) == ref.max() and set(table["class"]) == {1, 2}
    assert f"{ref.max()} instance(s)" in " ".join(done.stderr.split())
    assert geoseg("verify", str(out)).returncode == 0
    opened = xr.open_zarr(str(out), mask_and_scale=False)  # as the README says any output opens
    np.testing.assert_array_equal(opened["instances"].values, labels)


def test_instances_made_with_other_settings_are_kept_unless_overwrite(tmp_path):
    mask = ndi.zoom(np.random.default_rng(4).integers(0, 3, (6, 5)), 8, order=0).astype(np.uint8)
    zarr.create_array(str(tmp_path / "mask.zarr"), shape=mask.shape, chunks=(24, 24), dtype="uint8",
                      dimension_names=["y", "x"])[:] = mask
    out = tmp_path / "labels.zarr"
    first = geoseg("instances", str(tmp_path / "mask.zarr"), "--out", str(out), "--cluster",
                   "threads", "--classes", "1,2")
    assert first.returncode == 0, first.stderr
    kept = zarr.open_group(str(out), mode="r")["instances"][:]
    table = (out / "instances.parquet").read_bytes()

    again = geoseg("instances", str(out), "--cluster", "threads", "--classes", "1")
    said = " ".join(again.stderr.split())
    assert again.returncode == 2, said
    assert "made with other settings (classes [1, 2] -> [1])" in said and "--overwrite" in said
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["instances"][:], kept)
    assert (out / "instances.parquet").read_bytes() == table
    assert geoseg("instances", str(out), "--cluster", "threads", "--classes", "1,2").returncode == 0

    replaced = geoseg("instances", str(out), "--cluster", "threads", "--classes", "1",
                      "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    ones, n = ndi.label(mask == 1)
    assert_same_partition(zarr.open_group(str(out), mode="r")["instances"][:], ones)
    assert len(pd.read_parquet(out / "instances.parquet")) == n


def test_thresholded_mri_volume_end_to_end(tmp_path, cluster_address):
    nib = pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    image = nib.load(str(Path(data_path) / "anatomical.nii"))
    volume = np.asarray(image.dataobj, dtype=float)
    mask = (volume > filters.threshold_otsu(volume) * 0.6).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, image.affine), str(tmp_path / "mask.nii"))
    out = tmp_path / "labels.zarr"
    done = geoseg("instances", str(tmp_path / "mask.nii"), "--out", str(out), "--cluster",
                  cluster_address, "--connectivity", "3")
    assert done.returncode == 0, done.stderr
    group = zarr.open_group(str(out), mode="r")
    stored = group["classes"][:]
    ref, n = ndi.label(stored, np.ones((3, 3, 3)))
    assert n > 1 and stored.sum() == mask.sum()
    assert_same_partition(group["instances"][:], ref)
    table = pd.read_parquet(out / "instances.parquet")
    assert len(table) == n and "area" in table and not (out / "polygons.parquet").exists()
    voxel = abs(np.linalg.det(image.affine[:3, :3]))
    np.testing.assert_allclose(table["area"], table["area_px"] * voxel)
    assert xr.open_zarr(str(out), mask_and_scale=False)["instances"].dims == ("z", "y", "x")


def test_a_foreign_mask_without_out_is_refused(tmp_path, cluster_address):
    arr = zarr.create_array(str(tmp_path / "mask.zarr"), shape=(8, 8), chunks=(4, 4), dtype="uint8")
    arr[:] = 1
    done = geoseg("instances", str(tmp_path / "mask.zarr"), "--cluster", cluster_address)
    assert done.returncode == 2 and "give --out" in done.stderr
    assert "Traceback" not in done.stderr


def test_float_mask_is_refused_with_advice(tmp_path, cluster_address):
    arr = zarr.create_array(str(tmp_path / "mask.zarr"), shape=(8, 8), chunks=(4, 4),
                            dtype="float32")
    arr[:] = 0.5
    done = geoseg("instances", str(tmp_path / "mask.zarr"), "--out", str(tmp_path / "o.zarr"),
                  "--cluster", cluster_address)
    assert done.returncode == 2 and "integer class ids" in done.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_a_boolean_mask_is_read_as_0_and_1(tmp_path):
    """A boolean Zarr array (numpy's mask, saved as is) is a mask of class 1 on background 0."""
    rng = np.random.default_rng(5)
    mask = ndi.zoom(rng.random((10, 12)) < 0.4, 6, order=0)
    zarr.create_array(str(tmp_path / "m.zarr"), shape=mask.shape, chunks=(25, 31),
                      dtype=bool)[...] = mask
    out = tmp_path / "o.zarr"
    done = geoseg("instances", str(tmp_path / "m.zarr"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["classes"][:], mask.astype(np.uint8))
    assert_same_partition(group["instances"][:], ndi.label(mask)[0])


def test_a_stage_left_running_by_a_command_that_died_is_told_and_redone(tmp_path):
    """A full disk stopped geoseg instances where it could not even record its failure: the
    stage stayed "running", which status showed as if it were, and verify advised the job."""
    from geoseg.io.output import OutputTarget
    from geoseg.io.stages import mark_stage, stage_record

    mask = np.zeros((40, 40), np.uint8)
    mask[5:15, 5:15] = 1
    zarr.create_array(str(tmp_path / "m.zarr"), shape=mask.shape, chunks=(20, 20),
                      dtype="uint8")[...] = mask
    out = str(tmp_path / "o.zarr")
    assert geoseg("instances", str(tmp_path / "m.zarr"), "--out", out).returncode == 0
    target = OutputTarget(out, {})
    mark_stage(target, "instances", {**stage_record(target, "instances"), "status": "running"})
    mark_stage(target, "edges", {"status": "running"})  # a Canny job's stage, for its own advice
    status = " ".join(geoseg("status", out).stdout.split())
    left = ("no run holds it now: its run was stopped, or failed where it could not record so, "
            "such as on a full disk")
    assert f"instances interrupted ({left}; run geoseg instances, or the job, again)" in status
    assert f"edges interrupted ({left}; run the job again)" in status
    mark_stage(target, "edges", {"status": "complete"})
    verify = geoseg("verify", out)
    said = " ".join((verify.stdout + verify.stderr).split())
    assert verify.returncode == 1 and f"run `geoseg instances {out}` again" in said, said
    assert geoseg("instances", out).returncode == 0
    assert stage_record(target, "instances")["status"] == "complete"


def test_instances_are_not_written_while_another_run_holds_the_output(tmp_path):
    from geoseg.jobs.lease import taken

    mask = np.ones((20, 20), np.uint8)
    zarr.create_array(str(tmp_path / "m.zarr"), shape=mask.shape, chunks=(20, 20),
                      dtype="uint8")[...] = mask
    out = tmp_path / "o.zarr"
    with taken(str(out), None, seconds=60, refused="-"):
        busy = geoseg("instances", str(tmp_path / "m.zarr"), "--out", str(out))
    assert busy.returncode != 0 and "Another run is writing" in busy.stderr
    assert "nothing was labelled" in " ".join(busy.stderr.split()) and not out.exists()


def test_an_out_under_a_file_is_refused_before_a_lease_is_taken(tmp_path):
    """The lease, taken first, met the file: an internal error."""
    zarr.create_array(str(tmp_path / "m.zarr"), shape=(8, 8), chunks=(8, 8), dtype="uint8")[...] = 1
    (tmp_path / "afile").write_text("x")
    done = geoseg("instances", str(tmp_path / "m.zarr"), "--out", str(tmp_path / "afile" / "i.zarr"))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "internal error" not in said, said
    assert f"--out: Cannot write {tmp_path}/afile/i.zarr: {tmp_path}/afile is a file" in said


def test_a_foreign_mask_without_out_leaves_no_lease_beside_it(tmp_path):
    zarr.create_array(str(tmp_path / "m.zarr"), shape=(8, 8), chunks=(8, 8), dtype="uint8")[...] = 1
    done = geoseg("instances", str(tmp_path / "m.zarr"))
    assert done.returncode == 2 and "was not written by geoseg; give --out" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]


def nodata_mask(tmp_path) -> tuple[str, np.ndarray]:
    """Classes 0, 1 and 2 beside a strip of the declared nodata 255, as a GeoTIFF."""
    from tests.conftest import write_geotiff

    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:20], mask[40:50, 40:50], mask[:, :5] = 1, 2, 255
    return write_geotiff(tmp_path / "nd.tif", mask[None], nodata=255), mask


def objects_of(mask: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """scipy.ndimage.label of each class, ids after the previous classes'."""
    ref = np.zeros(mask.shape, np.int64)
    for value in classes:
        part, _ = ndi.label(mask == value)
        ref[part > 0] = part[part > 0] + ref.max()
    return ref


def test_declared_nodata_is_no_object_class(tmp_path):
    """GeoTIFF nodata and a Zarr array's _FillValue are the output's nodata class, not objects;
    0 is background by default yet still a class one may ask for."""
    src, mask = nodata_mask(tmp_path)
    arr = zarr.create_array(str(tmp_path / "nd.zarr"), shape=mask.shape, chunks=(32, 32),
                            dtype="uint8", dimension_names=["y", "x"],
                            attributes={"_FillValue": 255})
    arr[:] = mask
    for name, url in (("tif", src), ("zarr", str(tmp_path / "nd.zarr"))):
        out = tmp_path / f"{name}.zarr"
        done = geoseg("instances", url, "--out", str(out), "--cluster", "threads")
        assert done.returncode == 0, done.stderr
        group = zarr.open_group(str(out), mode="r")
        assert group.attrs["geoseg"]["nodata_class"] == 255, name
        names = group.attrs["geoseg"]["class_names"]
        assert names == ["0", "1", "2"], name  # ids stay ids; the nodata above them is no class
        labels = group["instances"][:]
        assert_same_partition(labels, objects_of(mask, (1, 2)))
        table = pd.read_parquet(out / "instances.parquet")
        assert sorted(table["class"]) == [1, 2] and 255 not in set(table["class"])
    zero = geoseg("instances", src, "--out", str(tmp_path / "zero.zarr"), "--cluster", "threads",
                  "--classes", "0")
    assert zero.returncode == 0, zero.stderr
    assert_same_partition(zarr.open_group(str(tmp_path / "zero.zarr"), mode="r")["instances"][:],
                          objects_of(mask, (0,)))


def test_overwrite_leaves_no_stale_table_or_polygons(tmp_path):
    src, mask = nodata_mask(tmp_path)
    out = tmp_path / "out.zarr"
    assert geoseg("instances", src, "--out", str(out), "--cluster", "threads").returncode == 0
    assert (out / "polygons.geojson").exists()
    again = geoseg("instances", str(out), "--cluster", "threads", "--classes", "2", "--no-table",
                   "--no-polygons", "--overwrite")
    assert again.returncode == 0, again.stderr
    for name in ("instances.parquet", "polygons.parquet", "polygons.geojson"):
        assert not (out / name).exists(), name
    assert_same_partition(zarr.open_group(str(out), mode="r")["instances"][:],
                          objects_of(mask, (2,)))
    assert geoseg("verify", str(out)).returncode == 0


@pytest.mark.parametrize("args, needle", [
    (("--method", "watershed", "--halo", "0"), "--halo: received 0"),
    (("--connectivity", "5"), "--connectivity: received 5"),
    (("--connectivity", "3"), "for a 2D mask"),
    (("--method", "bogus"), "--method: received 'bogus'"),
    (("--classes", "300"), "--classes: received 300"),
    (("--classes", "building"), "--classes: received 'building'"),
    (("--classes", ""), "--classes: received an empty list"),
    (("--method", "decode"), "--method: decode needs a model"),
    (("--method", "watershed", "--h", "-1"), "--h: received -1"),
])
def test_bad_settings_write_nothing(tmp_path, args, needle):
    src, mask = nodata_mask(tmp_path)
    out = tmp_path / "out.zarr"
    bad = geoseg("instances", src, "--out", str(out), "--cluster", "threads", *args)
    said = " ".join((bad.stdout + bad.stderr).split())
    assert bad.returncode == 2, said
    assert needle in said and "internal error" not in said and "Traceback" not in said, said
    assert not out.exists()
    good = geoseg("instances", src, "--out", str(out), "--cluster", "threads")
    assert good.returncode == 0, good.stderr
    assert_same_partition(zarr.open_group(str(out), mode="r")["instances"][:],
                          objects_of(mask, (1, 2)))


def test_a_classes_chunk_that_does_not_decode_is_named_by_its_key_as_a_data_fault(tmp_path):
    """As ``geoseg export`` and ``geoseg eval`` say it: the window, the chunk's key, exit 2."""
    from tests.conftest import output_with_a_bad_chunk
    from tests.test_errors_cli import assert_clean

    out, _ = output_with_a_bad_chunk(tmp_path)
    said = geoseg("instances", str(out), "--classes", "foreground", "--cluster", "threads")
    assert_clean(said, 2, f"input window y 0:32, x 32:64: cannot decode {out}",
                 "chunk(s) that fail on their own: classes/c/0/1", "corrupt or truncated")
    stage = zarr.open_group(str(out), mode="r").attrs["geoseg"]["instances"]
    assert stage["status"] == "failed" and stage["error"] == "CorruptInputError"


@pytest.mark.parametrize("names, ids", [(["background", "building", "road"], (1, 2)),
                                        (["Background", "water"], (1,)),
                                        (["class_0", "class_1"], (0, 1))])
def test_default_classes_leave_out_nodata_and_a_class_named_background(names, ids):
    from geoseg.instances.stage import InstanceSettings, routes

    [route] = routes(InstanceSettings(method="components"), names, nodata_class=255)
    assert route.classes == ids


def test_instances_of_a_job_output_leave_its_background_class_out(tmp_path):
    """The audit's case: a job's classes named background, building; only buildings are objects
    (background used to become one more object), as scipy labels the building mask."""
    import yaml

    from tests.conftest import write_zarr

    image = np.full((1, 64, 64), 20, np.uint8)
    image[:, 5:15, 5:20], image[:, 30:50, 40:60] = 200, 200
    job = {"input": {"url": write_zarr(tmp_path / "in.zarr", image, chunks=(32, 32))},
           "output": {"url": str(tmp_path / "out.zarr")}, "cluster": {"kind": "threads"},
           "model": {"method": "threshold",
                     "params": {"thresholds": [100], "class_names": ["background", "building"]}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert geoseg("run", str(tmp_path / "job.yaml")).returncode == 0
    done = geoseg("instances", str(tmp_path / "out.zarr"), "--cluster", "threads")
    assert done.returncode == 0, done.stderr
    labels = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["instances"][:]
    assert_same_partition(labels, ndi.label(image[0] > 100)[0])


def test_a_rerun_labels_again_what_the_instances_lost_since_they_were_written(tmp_path):
    """A rerun with the same settings skips finished instances only while their chunks and
    files are all there as written: a deleted chunk, a deleted or changed file is labelled
    again, never reported done."""
    _, mask = nodata_mask(tmp_path)
    zarr.create_array(str(tmp_path / "m.zarr"), shape=mask.shape, chunks=(16, 16), dtype="uint8",
                      dimension_names=["y", "x"], attributes={"_FillValue": 255})[:] = mask
    out = tmp_path / "out.zarr"
    assert geoseg("instances", str(tmp_path / "m.zarr"), "--out", str(out), "--cluster",
                  "threads").returncode == 0
    skipped = geoseg("instances", str(out), "--cluster", "threads")
    assert skipped.returncode == 0 and "labelling again" not in skipped.stderr, skipped.stderr
    assert not (out / "instances" / "c" / "3" / "0").exists()  # chunks without objects: not stored

    damages = {"instances:0.0 (absent)": lambda: (out / "instances" / "c" / "0" / "0").unlink(),
               "polygons.geojson (absent)": lambda: (out / "polygons.geojson").unlink(),
               "instances.parquet": lambda: (out / "instances.parquet").open("ab").write(b"junk")}
    for name, damage in damages.items():
        assert geoseg("verify", str(out)).returncode == 0
        damage()
        assert geoseg("verify", str(out)).returncode == 1, name
        again = geoseg("instances", str(out), "--cluster", "threads")
        said = " ".join(again.stderr.split())
        assert again.returncode == 0 and f"lost {name} since they were written" in said, said
        assert geoseg("verify", str(out)).returncode == 0, name
        assert_same_partition(zarr.open_group(str(out), mode="r")["instances"][:],
                              objects_of(mask, (1, 2)))
        assert len(pd.read_parquet(out / "instances.parquet")) == 2


def test_a_cog_geoseg_exported_keeps_its_classes_and_class_0_s_objects(tmp_path):
    """Its tags name class 0 ("water"), yet 0 was taken as background and its objects dropped
    without a word; and the nodata id 255 made 256 classes ('5' ... '254')."""
    import yaml

    from tests.conftest import write_geotiff

    rng = np.random.default_rng(8)
    image = ndi.zoom(rng.integers(0, 256, (10, 12)), 8, order=0).astype(np.uint8)
    write_geotiff(tmp_path / "scene.tif", image[None], nodata=None)
    spec = tmp_path / "job.yaml"
    names = ["water", "land", "cloud"]
    spec.write_text(yaml.safe_dump({
        "name": "cog", "input": {"url": str(tmp_path / "scene.tif")},
        "model": {"method": "threshold", "params": {"thresholds": [85, 170], "class_names": names}},
        "output": {"url": str(tmp_path / "out.zarr"), "chunks": [32, 32]},
        "cluster": {"kind": "threads"}, "runs_dir": str(tmp_path / "runs")}))
    assert geoseg("run", str(spec)).returncode == 0
    assert geoseg("export", str(tmp_path / "out.zarr"), "--cog", str(tmp_path / "m.tif")).returncode == 0

    done = geoseg("instances", str(tmp_path / "m.tif"), "--out", str(tmp_path / "objects.zarr"),
                  "--cluster", "threads")
    assert done.returncode == 0, done.stderr
    group = zarr.open_group(str(tmp_path / "objects.zarr"), mode="r")
    assert group.attrs["geoseg"]["class_names"] == names
    classes = np.digitize(image, [85.5, 170.5])  # x > t, as the threshold's rule
    assert_same_partition(group["instances"][:], objects_of(classes, (0, 1, 2)))
    assert set(pd.read_parquet(tmp_path / "objects.zarr" / "instances.parquet")["class"]) == {0, 1, 2}


def test_a_mask_that_is_not_there_is_named_missing(tmp_path):
    """It was told it was not written by geoseg, and to give --out."""
    done = geoseg("instances", str(tmp_path / "nothere.zarr"))
    assert done.returncode == 2 and f"No mask at {tmp_path / 'nothere.zarr'}" in done.stderr


def test_a_cog_export_keeps_the_background_through_a_round_trip(tmp_path):
    """mask -> instances -> export --cog -> instances: the COG lost which class is background,
    so the second run found the background's regions as objects (3 instead of 2)."""
    import rasterio

    from tests.conftest import write_geotiff

    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:20], mask[40:50, 40:50], mask[30, :] = 1, 1, 2  # 2 cuts the background in two
    src = write_geotiff(tmp_path / "mask.tif", mask[None], nodata=None)
    first, cog, second = tmp_path / "A.zarr", tmp_path / "A.tif", tmp_path / "B.zarr"
    for args in (("instances", src, "--out", str(first)), ("export", str(first), "--cog", str(cog)),
                 ("instances", str(cog), "--out", str(second))):
        done = geoseg(*args, "--cluster", "threads") if args[0] == "instances" else geoseg(*args)
        assert done.returncode == 0, done.stderr
    with rasterio.open(cog) as ds:
        assert ds.tags()["BACKGROUND_CLASS"] == "0"
    ref = objects_of(mask, (1, 2))
    for out in (first, second):
        group = zarr.open_group(str(out), mode="r")
        assert group.attrs["geoseg"]["background_class"] == 0, out.name
        assert group.attrs["geoseg"]["instances"]["count"] == ref.max() == 3, out.name
        assert_same_partition(group["instances"][:], ref)


def test_a_uint16_mask_declaring_nodata_65535_has_only_its_own_classes(tmp_path):
    """Every id up to the nodata was a class: 65,536 classes, a 2 MB zarr.json, and labelling
    and the COG export many times slower."""
    from tests.conftest import write_geotiff

    mask = np.zeros((64, 64), np.uint16)
    mask[10:20, 10:20], mask[40:50, 40:50], mask[:, :3] = 2, 2, 65535
    src = write_geotiff(tmp_path / "m16.tif", mask[None], nodata=65535)
    out = tmp_path / "out.zarr"
    done = geoseg("instances", src, "--out", str(out), "--cluster", "threads")
    assert done.returncode == 0, done.stderr
    attrs = zarr.open_group(str(out), mode="r").attrs["geoseg"]
    assert attrs["class_names"] == ["0", "1", "2"] and attrs["nodata_class"] == 65535  # ids kept
    assert attrs["instances"]["routes"][0]["classes"] == [1, 2]
    assert (out / "zarr.json").stat().st_size < 50_000
    labels = zarr.open_group(str(out), mode="r")["instances"][:]
    assert_same_partition(labels, objects_of(mask, (2,)))
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["classes"][:], mask)


def test_a_negative_declared_nodata_is_no_data(tmp_path):
    """An int16 mask declaring nodata -9999 was refused as values from -9999: its no-data
    pixels are no data, as a positive declared nodata's are, and become the nodata class."""
    from tests.conftest import write_geotiff

    mask = np.zeros((64, 64), np.int16)
    mask[10:20, 10:20], mask[40:50, 40:50], mask[:, :3] = 1, 2, -9999
    src = write_geotiff(tmp_path / "neg.tif", mask[None], nodata=-9999)
    out = tmp_path / "out.zarr"
    done = geoseg("instances", src, "--out", str(out), "--cluster", "threads")
    assert done.returncode == 0, done.stderr
    group = zarr.open_group(str(out), mode="r")
    attrs = group.attrs["geoseg"]
    assert attrs["class_names"] == ["0", "1", "2"] and attrs["nodata_class"] == 255
    np.testing.assert_array_equal(group["classes"][:], np.where(mask == -9999, 255, mask))
    assert_same_partition(group["instances"][:], objects_of(mask, (1, 2)))
    other = write_geotiff(tmp_path / "other.tif", np.where(mask == -9999, -1, mask)[None],
                          nodata=-9999)  # -1 is not the declared nodata: still refused
    refused = geoseg("instances", other, "--out", str(tmp_path / "o.zarr"), "--cluster", "threads")
    assert refused.returncode != 0
    said = " ".join(refused.stderr.split())
    assert "values from -1 to 2 (it declares nodata -9999, left out)" in said
    assert "declare the value that marks no data as the mask's nodata" in said


@pytest.mark.parametrize("same", ["plain.zarr", "mask.tif", "mask.tif/inside.zarr"])
def test_out_that_is_the_mask_itself_is_refused_as_such(tmp_path, same):
    """--out equal to the mask called a plain mask "a geoseg output whose run has not
    finished (status None)"."""
    from tests.conftest import write_geotiff

    mask = np.zeros((32, 32), np.uint8)
    mask[5:10, 5:10] = 1
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=mask.shape, chunks=(16, 16),
                      dtype="uint8")[:] = mask
    write_geotiff(tmp_path / "mask.tif", mask[None], nodata=None)
    source = str(tmp_path / same.split("/")[0])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    done = geoseg("instances", source, "--out", str(tmp_path / same), "--overwrite",
                  "--cluster", "threads")
    assert done.returncode != 0
    said = " ".join(done.stderr.split())
    assert f"is the mask {source} it would read" in said and "give another --out" in said
    assert "status" not in said
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_zarr_volume_without_dimension_names_is_told_how_to_name_them(tmp_path):
    """A 3-D Zarr without dimension names was called "8 band(s)", with advice about score
    rasters and --variable only."""
    zarr.create_array(str(tmp_path / "vol.zarr"), shape=(8, 32, 32), chunks=(4, 16, 16),
                      dtype="uint8")[:] = 1
    done = geoseg("instances", str(tmp_path / "vol.zarr"), "--out", str(tmp_path / "o.zarr"),
                  "--cluster", "threads")
    assert done.returncode != 0
    said = " ".join(done.stderr.split())
    assert "received 8 band(s) of uint8" in said
    assert 'if it is a volume, name them: Zarr v3 dimension_names ["z", "y", "x"]' in said
    assert '_ARRAY_DIMENSIONS: ["z", "y", "x"]' in said
    assert not (tmp_path / "o.zarr").exists()


def test_more_objects_than_a_table_may_hold_are_refused_before_it_is_built(tmp_path):
    """A checkerboard of 131,072 objects took 0.9 GB of the client for its table and polygons,
    about 2 KB an object, without limit; the labels alone take no more memory per object."""
    mask = (np.indices((64, 64)).sum(0) % 2).astype(np.uint8)  # 2,048 one-pixel objects
    src = str(tmp_path / "checker.zarr")
    zarr.create_array(src, shape=mask.shape, dtype="uint8", chunks=(32, 32))[:] = mask
    out = tmp_path / "out.zarr"
    env = {"GEOSEG_MAX_OBJECTS": "1000"}
    refused = geoseg("instances", src, "--out", str(out), "--cluster", "threads", env=env)
    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "instances holds 2048 objects, whose table and polygons would take about" in said
    assert "the limit is 1000 (GEOSEG_MAX_OBJECTS)" in said and "--no-table --no-polygons" in said
    assert not (out / "instances.parquet").exists()
    done = geoseg("instances", src, "--out", str(out), "--cluster", "threads", "--no-table",
                  "--no-polygons", "--overwrite", env=env)
    assert done.returncode == 0, done.stderr
    assert_same_partition(zarr.open_group(str(out), mode="r")["instances"][:],
                          ndi.label(mask)[0])


@pytest.mark.parametrize(("options", "said"), [
    (["--method", "foo"], "--method: received 'foo'; expected one of auto"),
    (["--halo", "-5"], "--halo: received -5; expected a whole number of pixels >= 0"),
    (["--connectivity", "7"], "--connectivity: received 7; expected an integer from 1"),
])
def test_a_bad_option_is_named_as_typed_not_as_its_spec_key(tmp_path, options, said):
    """The refusals named instances.method, the job spec key the option shares its checks with."""
    mask = np.zeros((40, 40), np.uint8)
    mask[5:15, 5:15] = 1
    zarr.create_array(str(tmp_path / "m.zarr"), shape=mask.shape, chunks=(20, 20),
                      dtype="uint8")[...] = mask
    done = geoseg("instances", str(tmp_path / "m.zarr"), "--out", str(tmp_path / "o.zarr"),
                  *options)
    text = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr
    assert f"error: {said}" in text and "instances." not in text, text
