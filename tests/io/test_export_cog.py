"""COG export of finished outputs, read back by rasterio (GDAL) as an independent reader."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest
import rasterio
import zarr
from rasterio.crs import CRS

from geoseg.errors import ExportError, InstanceError, OutputExistsError
from geoseg.io.exports import export_cog, open_finished
from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output
from geoseg.jobs import JobSpec, run
from tests.cli import geoseg as geoseg_cli
from tests.conftest import textured_image, write_geotiff

CLASSES = 3


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cluster_address) -> tuple[str, str]:
    """A real job's output (multi-Otsu, 3 classes) on a GeoTIFF with a no-data corner."""
    folder = tmp_path_factory.mktemp("cog")
    image = textured_image(300, 260, seed=3)
    image[:, :40, :70] = 0
    tif = write_geotiff(folder / "scene.tif", image, nodata=0)
    out = str(folder / "mask.zarr")
    spec = {
        "input": {"url": tif},
        "output": {"url": out, "chunks": [96, 80]},
        "model": {"method": "multiotsu", "params": {"feature": "mean", "classes": CLASSES}},
    }
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    return tif, out


def overview_values(path: str) -> list[np.ndarray]:
    """Every overview level's pixels, each read at its own resolution."""
    with rasterio.open(path) as ds:
        n = len(ds.overviews(1))
    levels = []
    for level in range(n):
        with rasterio.open(path, overview_level=level) as ds:
            levels.append(ds.read(1))
    return levels


@pytest.mark.parametrize("resampling", ["mode", "nearest"])
def test_cog_round_trip_keeps_values_georeference_and_classes(finished, tmp_path, resampling):
    tif, out = finished
    dest = str(tmp_path / "mask.tif")
    assert export_cog(out, dest, blocksize=64, resampling=resampling) == dest
    group = zarr.open_group(out, mode="r")
    classes = group["classes"][...]
    with rasterio.open(dest) as cog, rasterio.open(tif) as scene:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"  # GDAL's own COG layout check
        assert cog.profile["tiled"] and cog.block_shapes == [(64, 64)]
        assert cog.overviews(1) == [2, 4, 8]  # until a level fits in one tile
        np.testing.assert_array_equal(cog.read(1), classes)
        assert cog.crs == scene.crs == CRS.from_wkt(group["spatial_ref"].attrs["crs_wkt"])
        assert cog.transform == scene.transform
        assert cog.nodata == 255 == group.attrs["geoseg"]["nodata_class"]
        names = group.attrs["geoseg"]["class_names"]
        assert json.loads(cog.tags()["CLASS_NAMES"]) == names
        assert [cog.tags(1)[f"CLASS_{i}"] for i in range(CLASSES)] == names
        colormap = cog.colormap(1)
        for i, color in enumerate(group.attrs["geoseg"]["class_colors"]):
            assert colormap[i][:3] == tuple(color[:3])
        assert colormap[255] == (0, 0, 0, 0)
    present = set(np.unique(classes).tolist())
    assert present == {0, 1, 2, 255}
    levels = overview_values(dest)
    for level, factor in zip(levels, (2, 4, 8), strict=True):
        assert np.allclose(level.shape, (300 / factor, 260 / factor), atol=1)
    for level in levels:
        assert set(np.unique(level).tolist()) <= present  # never an averaged class id


def test_gdal_cog_validator_where_installed(finished, tmp_path):
    """GDAL's own validate_cloud_optimized_geotiff, when GDAL's Python bindings are installed
    (rasterio wheels do not ship them; the LAYOUT=COG check above always runs)."""
    validator = pytest.importorskip("osgeo_utils.samples.validate_cloud_optimized_geotiff")
    dest = str(tmp_path / "mask.tif")
    export_cog(finished[1], dest, blocksize=64)
    _, errors, _ = validator.validate(dest, full_check=True)
    assert not errors


def test_mode_overview_is_the_block_majority(tmp_path):
    """2 x 2 blocks, three pixels of class 1 and one of class 0 whose place differs from block to
    block: mode overviews are all 1, nearest ones (a fixed place per block) are not."""
    pattern = np.ones((4, 4), dtype=np.uint8)
    pattern[0, 0] = pattern[0, 3] = pattern[3, 0] = pattern[3, 3] = 0  # one odd pixel per block
    classes = np.tile(pattern, (32, 32))
    out = finished_output(tmp_path / "out.zarr", classes, ["background", "thing"])
    for resampling in ("mode", "nearest"):
        export_cog(out, str(tmp_path / f"{resampling}.tif"), blocksize=32, resampling=resampling)
    assert (overview_values(str(tmp_path / "mode.tif"))[0] == 1).all()
    assert (overview_values(str(tmp_path / "nearest.tif"))[0] == 0).any()


def finished_output(
    path,
    classes: np.ndarray,
    names: list[str],
    status: str = "complete",
    georef: GeoRef | None = None,
    nodata_class: int = 255,
) -> str:
    """A real output store, as a job would leave it, holding ``classes``."""
    georef = georef or GeoRef.from_crs("EPSG:3857", (2.0, 0.0, 1000.0, 0.0, -2.0, 5000.0))
    target = create_output(
        str(path),
        shape=classes.shape,
        chunks=(48,) * classes.ndim,
        georef=georef,
        class_names=names,
        class_dtype=classes.dtype.name,
        nodata_class=nodata_class,
        attrs={
            "class_colors": [[i % 256, 200, 30] for i in range(len(names))],
            "status": "running",
        },
    )
    target.open_group()["classes"][...] = classes
    if status == "complete":
        target.finalize({"status": "complete"})
    return str(path)


def test_uint16_classes_without_crs(tmp_path):
    classes = (np.arange(100 * 90).reshape(100, 90) % 300).astype(np.uint16)
    classes[:5] = 65535
    out = finished_output(
        tmp_path / "out.zarr",
        classes,
        [f"c{i}" for i in range(300)],
        georef=GeoRef(transform=(1.0, 0.0, 0.0, 0.0, -1.0, 100.0)),
        nodata_class=65535,
    )
    dest = str(tmp_path / "mask.tif")
    export_cog(out, dest, blocksize=32)
    with rasterio.open(dest) as cog:
        assert cog.dtypes == ("uint16",) and cog.nodata == 65535 and cog.crs is None
        np.testing.assert_array_equal(cog.read(1), classes)
        assert cog.colormap(1)[299] == (299 % 256, 200, 30, 255)
    for level in overview_values(dest):
        assert set(np.unique(level).tolist()) <= set(np.unique(classes).tolist())


def test_unfinished_output_is_refused_and_nothing_is_written(tmp_path):
    out = finished_output(
        tmp_path / "out.zarr", np.zeros((50, 50), np.uint8), ["a"], status="running"
    )
    dest = tmp_path / "mask.tif"
    with pytest.raises(
        ExportError, match=r"not finished \(status 'running', expected 'complete'\)"
    ):
        export_cog(out, str(dest))
    assert not dest.exists() and list(tmp_path.iterdir()) == [tmp_path / "out.zarr"]


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    dest = tmp_path / "mask.tif"
    dest.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists; nothing was written"):
        export_cog(out, str(dest))
    assert dest.read_bytes() == b"precious"
    export_cog(out, str(dest), overwrite=True, blocksize=16)
    with rasterio.open(dest) as cog:
        assert (cog.read(1) == 1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "out.zarr"]  # no scratch left


def test_a_folder_as_destination_is_refused_even_with_overwrite(tmp_path):
    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for dest, said in ((tmp_path / "folder", "is a folder; expected the name of a file"),
                       (tmp_path / "out.zarr", "is inside the output store")):  # the output itself
        dest.mkdir(exist_ok=True)
        with pytest.raises(ExportError, match=said):
            export_cog(out, str(dest), overwrite=True)
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert after == sorted([*before, "folder"])  # nothing staged, nothing replaced


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resampling": "average"}, "not allowed for class ids"),
        ({"resampling": "bilinear"}, "not allowed for class ids"),
        ({"compress": "jpeg"}, "expected a lossless one"),
        ({"blocksize": 100}, "multiple of 16"),
        ({"blocksize": 65536}, "from 16 to 4096"),  # a tile GDAL would buffer whole: gigabytes
    ],
)
def test_settings_that_would_alter_class_ids_are_refused(tmp_path, kwargs, message):
    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    with pytest.raises(ExportError, match=message):
        export_cog(out, str(tmp_path / "mask.tif"), **kwargs)
    assert not (tmp_path / "mask.tif").exists()


def test_volume_output_is_refused_with_advice(tmp_path):
    georef = GeoRef.from_voxel_affine(np.eye(4))
    out = finished_output(
        tmp_path / "out.zarr", np.ones((4, 20, 20), np.uint8), ["a", "b"], georef=georef
    )
    with pytest.raises(ExportError, match=r"\(z, y, x\) classes.*--nifti"):
        export_cog(out, str(tmp_path / "mask.tif"))


def test_not_a_geoseg_output_is_refused(tmp_path):
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=(10, 10), dtype="uint8")
    with pytest.raises(ExportError, match="is not a geoseg output"):
        open_finished(str(tmp_path / "plain.zarr"))


def test_output_and_cog_on_s3_without_leaking_credentials(tmp_path, s3_server):
    classes = np.tile(np.arange(4, dtype=np.uint8), (60, 20))
    local = finished_output(tmp_path / "out.zarr", classes, ["a", "b", "c", "d"])
    fs = fsspec.filesystem("s3", **s3_server)
    fs.put(local, "s3://geoseg/exports/out.zarr", recursive=True)
    dest = "s3://geoseg/exports/mask.tif"
    export_cog(
        "s3://geoseg/exports/out.zarr",
        dest,
        storage_options=s3_server,
        dest_options=s3_server,
        blocksize=32,
    )
    with fs.open(dest, "rb") as f, rasterio.open(f) as cog:
        np.testing.assert_array_equal(cog.read(1), classes)
        tags = json.dumps([cog.tags(), cog.tags(1), cog.descriptions])
    assert s3_server["secret"] not in tags and s3_server["key"] not in tags


def test_command_line_export(finished, tmp_path):
    _, out = finished
    dest = tmp_path / "mask.tif"
    cmd = ["export", out, "--cog", str(dest), "--blocksize", "128"]
    done = geoseg_cli(*cmd)
    assert done.returncode == 0, done.stderr
    with rasterio.open(dest) as cog:
        assert cog.block_shapes == [(128, 128)] and cog.overviews(1) == [2, 4]
    again = geoseg_cli(*cmd)
    assert again.returncode == 2 and "already exists; nothing was written" in again.stderr


def test_a_finished_output_that_lost_a_chunk_is_refused_but_no_data_chunks_are_not(
        tmp_path, cluster_address):
    """A chunk of only the no-data class is never stored: its absence is no fault. A stored
    chunk deleted afterwards would read as no-data: export and the instance stage refuse."""
    from geoseg.instances.adopt import label_mask
    from geoseg.instances.stage import InstanceSettings

    image = textured_image(200, 160, seed=5)
    image[:, :96, :80] = 0  # exactly the first output chunk
    tif = write_geotiff(tmp_path / "scene.tif", image, nodata=0)
    out = tmp_path / "mask.zarr"
    spec = {"input": {"url": tif}, "output": {"url": str(out), "chunks": [96, 80]},
            "model": {"method": "multiotsu", "params": {"feature": "mean", "classes": CLASSES}}}
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    stored = {p.relative_to(out / "classes").as_posix() for p in (out / "classes").rglob("*")
              if p.is_file() and p.name != "zarr.json"}
    assert "c/0/0" not in stored and "c/1/1" in stored
    export_cog(str(out), str(tmp_path / "whole.tif"))  # the unstored no-data chunk is fine

    (out / "classes" / "c" / "1" / "1").unlink()
    dest = tmp_path / "damaged.tif"
    with pytest.raises(ExportError, match=r"is damaged: 1 task region\(s\) lost stored chunks "
                                          r"since their run recorded them \(1\.1\); nothing was "
                                          r"exported.*geoseg verify"):
        export_cog(str(out), str(dest))
    assert not dest.exists()
    with pytest.raises(InstanceError, match=r"is damaged: .*\(1\.1\); no instances were labelled"):
        label_mask(str(out), InstanceSettings(method="components"))
    assert not (out / "instances").exists()

    (out / "manifest_done" / "c" / "0" / "0").unlink()  # and a region its manifest forgot
    with pytest.raises(ExportError, match=r"its manifest records 5 of the 6 task region\(s\)"):
        export_cog(str(out), str(dest))


def test_a_file_written_at_the_destination_during_the_export_is_kept(tmp_path, monkeypatch):
    """Two exports to one new name both said "wrote" and the later replaced the other's file
    without --overwrite: only the first look refused an existing file."""
    from geoseg.io.exports import cog

    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    dest = tmp_path / "race.tif"
    tiled = cog.write_tiled

    def another_export_finishes_first(*args, **kwargs):
        dest.write_bytes(b"the other export's file")
        return tiled(*args, **kwargs)

    monkeypatch.setattr(cog, "write_tiled", another_export_finishes_first)
    with pytest.raises(OutputExistsError, match="was written by something else while geoseg wrote it"):
        export_cog(out, str(dest))
    assert dest.read_bytes() == b"the other export's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "race.tif"]  # no scratch left
    export_cog(out, str(dest), overwrite=True)  # asked to, it replaces it
    with rasterio.open(dest) as written:
        assert written.read(1).shape == (50, 50)


def test_a_cog_named_as_another_format_is_refused(tmp_path):
    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    with pytest.raises(ExportError, match=r"x\.png: expected a name ending in \.tif or \.tiff"):
        export_cog(out, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_a_dangling_link_at_the_destination_is_refused_before_any_work(tmp_path):
    """Its target does not exist, so the first look passed it, and the finished export was then
    refused as if another export had written it meanwhile."""
    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    (tmp_path / "link.tif").symlink_to(tmp_path / "nowhere.tif")
    with pytest.raises(OutputExistsError, match="link.tif already exists; nothing was written"):
        export_cog(out, str(tmp_path / "link.tif"))
    assert (tmp_path / "link.tif").is_symlink()
