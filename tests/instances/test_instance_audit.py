"""The GIS analyst's audit of ``geoseg instances``: seams, nodata, class names, messages, CRS."""

from __future__ import annotations

import json
import logging

import dask.array as da
import numpy as np
import pytest
import rasterio
import zarr
from scipy import ndimage as ndi
from skimage import draw

from geoseg.errors import InstanceError
from geoseg.instances.stage import InstanceSettings, routes
from geoseg.instances.watershed import (
    distance_watershed,
    inner_borders,
    instances_from_classes,
    window_seams,
)
from tests.cli import geoseg
from tests.instances.test_cli_instances import assert_same_partition, objects_of
from tests.instances.test_watershed import whole_distance_watershed

WARNED = "reach the edge of their window"


def big_blobs() -> np.ndarray:
    """Pairs of touching discs of radius 14 (about 56 pixels across a pair) on a 128 x 128 mask."""
    mask = np.zeros((128, 128), bool)
    for cy, cx in ((30, 30), (30, 90), (95, 60)):
        for dx in (-12, 12):
            rr, cc = draw.disk((cy, cx + dx), 14, shape=mask.shape)
            mask[rr, cc] = True
    return mask


# -- 1: a halo narrower than the objects ---------------------------------------------------------


def test_a_halo_narrower_than_the_objects_warns_and_a_wide_one_matches_the_whole_image(caplog):
    mask = big_blobs()
    ref = whole_distance_watershed(mask, 2.0)
    with caplog.at_level(logging.WARNING, logger="geoseg.instances"):
        labels, _ = distance_watershed(da.from_array(mask, chunks=32), h=2.0, halo=2)
    said = caplog.text
    assert WARNED in said and "halo 2 pixels" in said, said
    extent = int(said.split("spans at least ")[1].split()[0])
    assert 28 <= extent <= 60  # a disc is 29 pixels wide, a pair 53
    assert labels.shape == mask.shape

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg.instances"):
        labels, count = distance_watershed(da.from_array(mask, chunks=32), h=2.0, halo=64)
    assert WARNED not in caplog.text
    assert count == ref.max()
    assert_same_partition(labels.compute(), ref)


def test_objects_split_at_seams_are_among_those_warned_about(caplog):
    """Whenever the chunked result differs from the whole image, the warning came."""
    mask = big_blobs()
    ref = whole_distance_watershed(mask, 2.0)
    for halo in (1, 4, 8):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="geoseg.instances"):
            labels, _ = distance_watershed(da.from_array(mask, chunks=(40, 24)), h=2.0, halo=halo)
        got = labels.compute()
        same = np.unique(np.stack([got.ravel(), ref.ravel()]), axis=1).shape[1] == \
            np.unique(ref).size == np.unique(got).size
        assert same or WARNED in caplog.text, halo


@pytest.mark.parametrize("chunks, depth", [((5, 5), 2), ((3, 4, 3), 2), ((10,), 4), ((4, 4, 2), 4)])
def test_inner_borders_mark_exactly_the_window_sides_inside_the_raster(chunks, depth):
    """Checked against dask's own windows: an index array overlapped as the watershed is."""
    n = sum(chunks)
    index = da.from_array(np.arange(n), chunks=(chunks,))
    windows = da.overlap.overlap(index, {0: depth}, "none")
    blocks = [b.compute() for b in windows.to_delayed().ravel()]
    sides = inner_borders(windows.chunks, (depth,))
    assert len(sides) == len(blocks)
    for block, ((low_halo, high_halo, low, high),) in zip(blocks, sides):
        assert low == (block[0] > 0) and high == (block[-1] < n - 1)
        core = block[low_halo:block.size - high_halo]
        assert core.size and core.size == len(set(core))  # one chunk, trimmed as dask trims it


def test_window_seams_count_core_objects_reaching_an_inner_side_only():
    window = np.zeros((10, 10), np.uint32)
    window[0:4, 3:5] = 7   # reaches the top side (inside the raster), has core pixels
    window[0:2, 7:9] = 8   # reaches the top side, only in the halo: trimmed away, harmless
    window[4:6, 4:9] = 9   # inside the window
    window[6:10, 0:2] = 5  # reaches the left side, which is the raster's edge
    seams = window_seams(window, ((2, 0, True, False), (0, 0, False, False)))
    assert seams.ids.tolist() == [7] and seams.extent == 4


# -- 2: a mask without a declared nodata ------------------------------------------------------


@pytest.mark.parametrize("dtype, values, nodata", [("uint16", (0, 1, 2, 1000), 65535),
                                                   ("uint8", (0, 1, 2), 255)])
def test_a_mask_without_nodata_exports_with_a_nodata_no_pixel_has(tmp_path, dtype, values, nodata):
    from tests.conftest import write_geotiff

    mask = np.zeros((64, 64), dtype)
    mask[5:20, 5:20], mask[30:40, 30:50] = values[1], values[2]
    mask[50:60, 2:9] = values[-1]
    src = write_geotiff(tmp_path / "m.tif", mask[None], nodata=None)
    out, cog = tmp_path / "i.zarr", tmp_path / "i.tif"
    done = geoseg("instances", src, "--out", str(out), "--cluster", "threads")
    assert done.returncode == 0, done.stderr
    assert zarr.open_group(str(out), mode="r").attrs["geoseg"]["nodata_class"] == nodata
    labels = zarr.open_group(str(out), mode="r")["instances"][:]
    assert_same_partition(labels, objects_of(mask, tuple(v for v in values if v)))  # 0: ground
    exported = geoseg("export", str(out), "--cog", str(cog))
    assert exported.returncode == 0, exported.stderr
    with rasterio.open(cog) as ds:
        data = ds.read(1)
        assert ds.nodata == nodata and ds.tags()["NODATA_CLASS"] == str(nodata)
        assert not (data == ds.nodata).any()  # the background reads as data, not no-data
        np.testing.assert_array_equal(data, mask)
        assert ds.colormap(1)[0][3] == 255  # class 0 is opaque


# -- 3: class names of geoseg's own COG --------------------------------------------------------


def tagged_geotiff(path, mask: np.ndarray, names: list[str]) -> str:
    """A GeoTIFF tagged as ``geoseg export --cog`` tags one (CLASS_NAMES, CLASS_<id>)."""
    from tests.conftest import write_geotiff

    write_geotiff(path, mask[None], nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(CLASS_NAMES=json.dumps(names), NODATA_CLASS="255")
        ds.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(names)})
    return str(path)


def test_class_names_of_an_exported_cog_are_read_back(tmp_path):
    mask = np.zeros((48, 48), np.uint8)
    mask[4:14, 4:14], mask[20:30, 6:40], mask[36:44, 30:44] = 1, 2, 1
    first = tagged_geotiff(tmp_path / "t.tif", mask, ["background", "building", "road"])
    done = geoseg("instances", first, "--out", str(tmp_path / "a.zarr"), "--cluster", "threads",
                  "--classes", "building")
    assert done.returncode == 0, done.stderr
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["geoseg"]["class_names"][:3] \
        == ["background", "building", "road"]
    # the round trip: geoseg's own export, adopted again by name
    assert geoseg("export", str(tmp_path / "a.zarr"), "--cog", str(tmp_path / "a.tif")).returncode == 0
    again = geoseg("instances", str(tmp_path / "a.tif"), "--out", str(tmp_path / "b.zarr"),
                   "--cluster", "threads", "--classes", "building,road")
    assert again.returncode == 0, again.stderr
    labels = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["instances"][:]
    assert_same_partition(labels, objects_of(mask, (1, 2)))


def test_a_mask_without_class_names_asks_for_ids_without_made_up_names(tmp_path):
    from tests.conftest import write_geotiff

    src = write_geotiff(tmp_path / "m.tif", np.ones((1, 16, 16), np.uint8), nodata=255)
    done = geoseg("instances", src, "--out", str(tmp_path / "o.zarr"), "--cluster", "threads",
                  "--classes", "building")
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, said
    assert "'building'" in said and "this mask has no class names, give class ids" in said
    assert "more)" not in said and "Traceback" not in said


# -- 4: decode drops boundary pixels no interior reaches ------------------------------------------


def test_decode_makes_no_objects_of_boundary_specks():
    classes = np.zeros((40, 40), np.uint8)
    classes[2:12, 2:12], classes[4:10, 4:10] = 2, 1       # a building: outline and interior
    classes[20:22, 20:23] = 2                              # a speck of outline, no interior
    classes[30, 5], classes[39, 39] = 2, 2
    labels, count = instances_from_classes(da.from_array(classes, chunks=16), interior=1,
                                           boundary=[2], halo=4)
    got = labels.compute()
    assert count == ndi.label(classes == 1)[1] == got.max() == 1
    assert (got[classes == 2][got[classes == 2] > 0] == 1).all()
    assert got[20:22, 20:23].max() == 0 and got[30, 5] == 0 and got[39, 39] == 0


# -- 5: settings that cannot take effect ---------------------------------------------------------


def test_absent_class_and_watershed_settings_with_components_warn(tmp_path):
    from tests.conftest import write_geotiff

    mask = np.zeros((32, 32), np.uint8)
    mask[4:10, 4:10] = 1
    mask[20:30, 20:30] = 8
    src = write_geotiff(tmp_path / "m.tif", mask[None], nodata=255)
    done = geoseg("instances", src, "--out", str(tmp_path / "o.zarr"), "--cluster", "threads",
                  "--classes", "1,7", "--method", "components", "--halo", "50", "--h", "7")
    said = " ".join(done.stderr.split())
    assert done.returncode == 0, said
    assert "no pixel of class 7 was found" in said
    assert "halo 50 and h 7.0 apply to method watershed" in said
    assert "no pixel of class 1 " not in said
    quiet = geoseg("instances", src, "--out", str(tmp_path / "p.zarr"), "--cluster", "threads",
                   "--classes", "1")
    assert quiet.returncode == 0 and "no pixel" not in quiet.stderr and "apply to" not in quiet.stderr


# -- 6: messages ---------------------------------------------------------------------------------


def test_negative_class_values_name_the_file_and_a_fix(tmp_path):
    from tests.conftest import write_geotiff

    mask = np.full((1, 16, 16), -1, np.int16)
    mask[0, 4:8, 4:8] = 254
    src = write_geotiff(tmp_path / "neg.tif", mask, nodata=None)
    done = geoseg("instances", src, "--out", str(tmp_path / "o.zarr"), "--cluster", "threads")
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, said
    assert "neg.tif" in said and "from -1 to 254" in said and "Remap" in said
    assert not (tmp_path / "o.zarr").exists()


def test_every_unknown_class_is_named_at_once():
    settings = InstanceSettings(method="components", classes=("buildings", 99, "road"))
    with pytest.raises(InstanceError) as caught:
        routes(settings, ["background", "building", "road"], 255)
    said = str(caught.value)
    assert "'buildings', 99" in said and "are not a class" in said and "'road'," not in said
    assert "a name (background, building, road)" in said


# -- 7: GeoJSON on WGS 84 (RFC 7946) ---------------------------------------------------------------


def test_geojson_in_epsg_4326_is_longitude_first_and_read_back_so():
    import geopandas as gpd
    import shapely

    from geoseg.instances.polygons import geojson_text

    square = shapely.box(10.0, 45.0, 10.5, 45.5)  # lon 10, lat 45: x first
    polygons = gpd.GeoDataFrame({"id": [1]}, geometry=[square], crs="EPSG:4326")
    text = geojson_text(polygons)
    assert "crs" not in json.loads(text)
    assert min(x for x, _ in json.loads(text)["features"][0]["geometry"]["coordinates"][0]) == 10.0
    read = gpd.read_file(text)
    assert read.crs.to_epsg() == 4326 and read.geometry[0].bounds == square.bounds


def test_an_instance_across_the_antimeridian_is_cut_in_two_on_either_side():
    """RFC 7946 3.1.9: a polygon spanning 180 degrees read as one would wrap round the globe."""
    import geopandas as gpd
    import shapely

    from geoseg.instances.polygons import geojson_text

    across = gpd.GeoSeries([shapely.box(179.99, -16.01, 180.01, -16.0)], crs="OGC:CRS84")
    polygons = gpd.GeoDataFrame({"id": [7]}, geometry=across.to_crs("EPSG:32760"))  # UTM 60S
    geometry = shapely.geometry.shape(json.loads(geojson_text(polygons))["features"][0]["geometry"])
    assert geometry.geom_type == "MultiPolygon" and len(geometry.geoms) == 2
    sides = sorted(part.bounds for part in geometry.geoms)
    assert sides[0][0] == pytest.approx(-180.0) and sides[0][2] == pytest.approx(-179.99, abs=1e-6)
    assert sides[1][0] == pytest.approx(179.99, abs=1e-6) and sides[1][2] == pytest.approx(180.0)


def test_a_crs_with_no_way_to_wgs_84_keeps_its_coordinates_named_in_a_crs_member(caplog):
    import geopandas as gpd
    import shapely

    from geoseg.instances.polygons import geojson_text

    local = 'LOCAL_CS["plant floor",UNIT["metre",1]]'
    floor = shapely.box(3.1, 4 / 3, 5, 6)  # coordinates kept to the last bit
    polygons = gpd.GeoDataFrame({"id": [1]}, geometry=[floor], crs=local)
    collection = json.loads(geojson_text(polygons))
    assert "plant floor" in collection["crs"]["properties"]["name"]
    written = shapely.geometry.shape(collection["features"][0]["geometry"])
    assert written.equals_exact(floor, tolerance=0)
    assert "cannot be put on WGS 84 (Failed to create coordinate transformation" in caplog.text
    utm = gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.box(3, 4, 5, 6)], crs="EPSG:32618")
    from geoseg.instances.polygons import crs_member

    assert crs_member(utm.crs)["properties"]["name"] == "urn:ogc:def:crs:EPSG::32618"


def test_a_nifti_mask_read_plane_by_plane_gets_volume_chunks(tmp_path):
    """An uncompressed NIfTI is read a plane at a time; its instances are not stored one plane
    per chunk (every object would span dozens of chunks), and stay scipy's partition."""
    import nibabel as nib

    mask = np.zeros((40, 50, 60), np.uint8)
    mask[5:20, 10:30, 10:40] = 1
    mask[25:35, 30:45, 20:55] = 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)), np.eye(4)),
             str(tmp_path / "mask.nii"))
    out = tmp_path / "out.zarr"
    done = geoseg("instances", str(tmp_path / "mask.nii"), "--out", str(out), "--cluster", "threads")
    assert done.returncode == 0, done.stderr
    group = zarr.open_group(str(out), mode="r")
    assert group["classes"].chunks == group["instances"].chunks == (40, 50, 60)
    ref, _ = ndi.label(group["classes"][:] == 1)
    assert_same_partition(group["instances"][:], ref)


def test_a_decoded_object_is_of_its_interior_class_however_much_outline_it_has():
    """Each object's class is its most frequent one: small buildings, more outline than inside,
    were tabled (and drawn) as building_edge, 104 of the demo's 1,918 objects."""
    from geoseg.instances.stage import Route, object_classes
    from geoseg.instances.table import object_table

    classes = np.zeros((40, 40), np.uint8)
    classes[2:12, 2:12], classes[4:10, 4:10] = 2, 1   # a large building: 36 inside, 64 outline
    classes[20:25, 20:25], classes[22, 22] = 2, 1     # a small one: 1 inside, 24 outline
    chunked = da.from_array(classes, chunks=16)
    labels, count = instances_from_classes(chunked, interior=1, boundary=[2], halo=4)
    table = object_table(labels, count=count,
                         classes=object_classes(chunked, [Route("decode", (1, 2), 1, (2,))]))
    assert count == 2 and list(table["class"]) == [1, 1]
    assert sorted(table["area_px"]) == [25, 100]  # outline included in each object's area


def test_warnings_while_writing_geojson_still_reach_the_caller(monkeypatch):
    """Its warnings were recorded to read GDAL's reason for a refusal, and so swallowed."""
    import warnings

    import geopandas as gpd
    import shapely

    from geoseg.instances import polygons as module

    written = module._gdal_geojson

    def warning(polygons, **options):
        warnings.warn("a deprecation in some library", DeprecationWarning, stacklevel=1)
        return written(polygons, **options)

    monkeypatch.setattr(module, "_gdal_geojson", warning)
    utm = gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.box(500000, 0, 500010, 10)],
                           crs="EPSG:32618")
    with pytest.warns(DeprecationWarning, match="a deprecation in some library"):
        module.geojson_text(utm)
