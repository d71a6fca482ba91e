"""Where windows, coordinates and units put a result, against independent references: each result
pixel centred on rasterio's ``xy`` of the file pixel it holds (strided and reversed windows of
north-up, rotated and sheared GeoTIFFs), each voxel of a window (negative steps too) where
nibabel's affine puts the file voxel it holds, Zarr coordinates no transform can hold refused, a
COG never claiming a CRS over pixel indices, and OME-Zarr axes in several units read in one."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import rasterio.transform
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
import zarr
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nibabel.affines import apply_affine

import geoseg
from geoseg.errors import ParameterError, UnsupportedFormatError
from geoseg.io.exports import export_cog
from geoseg.io.georef import GeoRef, pixel_window_transform, window_affines
from geoseg.methods import Threshold
from tests.io.test_export_cog import finished_output

HEIGHT, WIDTH = 96, 128
GRIDS = {
    "north-up": Affine(10, 0, 500000, 0, -10, 4500000),
    "sheared by 1e-9": Affine(10, 1e-9, 500000, 0, -10, 4500000),
    "rotated 30 degrees": Affine.translation(500000, 4500000) @ Affine.rotation(30) @ Affine.scale(10, -10),
    "sheared": Affine(10, 3, 500000, 1.5, -10, 4500000),
}


def scene() -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH), np.uint8)
    image[10:30, 20:50] = 200
    image[50:80, 70:100] = 200
    return image


@pytest.fixture(scope="module")
def geotiffs(tmp_path_factory) -> dict[str, str]:
    """One GeoTIFF per grid of :data:`GRIDS`, written by rasterio."""
    folder = tmp_path_factory.mktemp("grids")
    paths = {}
    for i, (name, transform) in enumerate(GRIDS.items()):
        paths[name] = str(folder / f"grid{i}.tif")
        with rasterio.open(paths[name], "w", driver="GTiff", height=HEIGHT, width=WIDTH, count=1,
                           dtype="uint8", crs="EPSG:32633", transform=transform) as dst:
            dst.write(scene(), 1)
    return paths


def axis_window(n: int):
    """A slice of an axis of ``n`` (start, stop, step; steps negative too) holding a pixel."""
    step = st.sampled_from([-4, -3, -2, -1, 1, 2, 3, 4])
    bound = st.one_of(st.none(), st.integers(-n - 2, n + 2))
    return st.builds(slice, bound, bound, step).filter(lambda s: len(range(n)[s]) > 0)


def held(n: int, window: slice) -> np.ndarray:
    """The file indices a window of an axis of ``n`` holds, in its order."""
    return np.arange(n)[window]


def assert_centred(transform: Affine, file_transform: Affine, rows: np.ndarray, cols: np.ndarray):
    """Every result pixel's centre is rasterio's ``xy`` of the file pixel it holds."""
    i, j = np.meshgrid(np.arange(len(rows)), np.arange(len(cols)), indexing="ij")
    got = np.array(transform @ (j.ravel() + 0.5, i.ravel() + 0.5))
    expected = np.array(rasterio.transform.xy(file_transform, rows[i].ravel(), cols[j].ravel()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=axis_window(HEIGHT), cols=axis_window(WIDTH),
       grid=st.sampled_from(["sheared by 1e-9", "rotated 30 degrees", "sheared"]))
def test_any_window_of_a_rotated_image_is_centred_on_the_pixels_it_holds(geotiffs, rows, cols, grid):
    """The pixel-index coordinates of a window of a rotated or sheared GeoTIFF place each of its
    pixels on the file pixel it holds, for any start, stop and step (a strided window was off by
    (step - 1) / 2 pixels, a reversed one by a pixel more)."""
    window = geoseg.open_raster(geotiffs[grid]).isel(y=rows, x=cols)
    transform = pixel_window_transform(GRIDS[grid], window.coords["y"], window.coords["x"])
    assert_centred(transform, GRIDS[grid], held(HEIGHT, rows), held(WIDTH, cols))


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("rows, cols", [(slice(5, 80, 3), slice(7, 120, 2)),
                                        (slice(None), slice(90, 20, -2)),
                                        (slice(70, 3, -3), slice(None, None, -1))])
def test_a_segmented_window_is_placed_alike_on_every_grid(geotiffs, grid, rows, cols):
    """segment() of a strided or reversed window: the result's transform (attribute and
    spatial_ref GeoTransform) centres each pixel on the file pixel it holds, whether the grid is
    north-up or sheared by a negligible 1e-9 m, and the mask holds the pixels it says."""
    window = geoseg.open_raster(geotiffs[grid]).isel(y=rows, x=cols)
    out = geoseg.segment(window, Threshold(thresholds=[100]), chunks=32)
    transform = Affine(*out.attrs["transform"])
    gdal = Affine.from_gdal(*map(float, out.coords["spatial_ref"].attrs["GeoTransform"].split()))
    assert gdal.almost_equals(transform, 1e-9)
    assert_centred(transform, GRIDS[grid], held(HEIGHT, rows), held(WIDTH, cols))
    np.testing.assert_array_equal(out.values, scene()[rows, cols] > 100)


# --- volumes: windows of a NIfTI, negative steps included --------------------------------------

SHAPE_IJK = (40, 36, 24)  # nibabel's (i, j, k): geoseg's (z, y, x) = (24, 36, 40)


def rotation(degrees: float, axis: int) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


@pytest.fixture(scope="module")
def oblique_nifti(tmp_path_factory) -> tuple[str, np.ndarray]:
    """An oblique, anisotropic NIfTI (sform and qform alike) written by nibabel; its affine."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(17, 0) @ rotation(33, 1) @ np.diag([0.5, 0.75, 2.0])
    affine[:3, 3] = [-90, 120, -70]
    data = np.zeros(SHAPE_IJK, np.int16)
    data[5:15, 6:20, 3:9] = 500
    data[22:35, 20:30, 12:22] = 500
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=4)
    path = str(tmp_path_factory.mktemp("nifti") / "oblique.nii")
    nib.save(image, path)
    return path, nib.load(path).affine


def assert_voxels_where_nibabel_puts_them(voxel_affine, affine, zs, ys, xs):
    """Window voxel (a, b, c) at nibabel's world point of file voxel (i, j, k) = (xs[c], ys[b],
    zs[a]); geoseg's affine maps (z, y, x) indices."""
    a, b, c = (g.ravel() for g in np.meshgrid(np.arange(len(zs)), np.arange(len(ys)),
                                               np.arange(len(xs)), indexing="ij"))
    expected = apply_affine(affine, np.stack([xs[c], ys[b], zs[a]], axis=1))
    got = apply_affine(np.asarray(voxel_affine), np.stack([a, b, c], axis=1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)  # float32 header terms


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(z=axis_window(SHAPE_IJK[2]), y=axis_window(SHAPE_IJK[1]), x=axis_window(SHAPE_IJK[0]))
def test_any_window_of_a_volume_gets_its_own_voxel_affine(oblique_nifti, z, y, x):
    """window_affines() of any window (reversed axes too, which kept the whole volume's affine:
    voxels up to 37 mm off) places every voxel where nibabel places the file voxel it holds;
    its spacing is the voxel size times the step's length."""
    path, affine = oblique_nifti
    window = geoseg.open_raster(path).isel(z=z, y=y, x=x)
    moved = window_affines(dict(window.attrs), [window.coords[d] for d in ("z", "y", "x")])
    voxel_affine = moved.get("voxel_affine", window.attrs["voxel_affine"])
    zs, ys, xs = held(SHAPE_IJK[2], z), held(SHAPE_IJK[1], y), held(SHAPE_IJK[0], x)
    assert_voxels_where_nibabel_puts_them(voxel_affine, affine, zs, ys, xs)
    spacing = moved.get("spacing", window.attrs["spacing"])
    steps = [abs(s.step or 1) if len(v) > 1 else 1 for s, v in ((z, zs), (y, ys), (x, xs))]
    np.testing.assert_allclose(spacing, np.linalg.norm(affine[:3, [2, 1, 0]], axis=0) * steps,
                               rtol=1e-6)


@pytest.mark.parametrize("window", [{"z": slice(None, None, -1)}, {"x": slice(30, 5, -1)},
                                    {"z": slice(20, 1, -3), "y": slice(None, None, -2)}])
def test_a_segmented_reversed_window_of_a_volume_keeps_nibabel_positions(oblique_nifti, window):
    path, affine = oblique_nifti
    out = geoseg.segment(geoseg.open_raster(path).isel(**window), Threshold(thresholds=[100]),
                         chunks=16)
    zs, ys, xs = (held(n, window.get(d, slice(None)))
                  for d, n in zip("zyx", SHAPE_IJK[::-1]))
    assert_voxels_where_nibabel_puts_them(out.attrs["voxel_affine"], affine, zs, ys, xs)
    data = np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)[np.ix_(zs, ys, xs)]
    np.testing.assert_array_equal(out.values, data > 100)


@pytest.mark.parametrize("window", [{"z": [0, 3, 4]}, {"x": [5, 6, 10, 30]}, {"y": [2, 2, 2]}])
def test_a_window_of_a_volume_picked_with_a_list_is_refused(oblique_nifti, window):
    """No affine places voxels at uneven indices: the whole volume's was kept, silently, and
    the mask placed where its voxels are not (as a list-picked window of a georeferenced image
    is refused)."""
    path, _ = oblique_nifti
    with pytest.raises(ParameterError, match="voxel indices are not evenly spaced"):
        geoseg.segment(geoseg.open_raster(path).isel(**window), Threshold(thresholds=[100]),
                       chunks=16)


# --- Zarr coordinates a transform cannot hold --------------------------------------------------

def write_xarray_zarr(path: Path, x: np.ndarray, y: np.ndarray, transform: Affine | None = None
                      ) -> str:
    """A (band, y, x) image written by xarray with rioxarray's CRS (and ``transform``, when
    given, as its GeoTransform) and these pixel-centre coordinates."""
    image = np.ones((1, len(y), len(x)), np.uint8)
    image[0, 10:30, 20:50] = 200
    array = xr.DataArray(image, dims=("band", "y", "x"), coords={"band": [1], "y": y, "x": x},
                         name="image").rio.write_crs("EPSG:32633")
    if transform is not None:
        array = array.rio.write_transform(transform)
    array.to_dataset().to_zarr(path, mode="w", consolidated=False)
    return str(path)


EVEN_Y = 4500000 - 10 * (np.arange(48) + 0.5)
UNEVEN_X = 500000 + np.cumsum(np.r_[5, np.full(63, 10.0)])
UNEVEN_X[40:] += 7.0  # one step of 17 among steps of 10


@pytest.mark.parametrize("declared", [None, Affine(10, 0, 500000, 0, -10, 4500000)])
def test_zarr_coordinates_not_evenly_spaced_are_refused_by_name(tmp_path, declared):
    """Uneven x coordinates lost the raster's place without a word (no GeoTransform: output
    without a transform or x/y under a CRS) or were placed by the declared step from x[0]:
    refused on opening, naming the coordinate, its steps and how to fix it."""
    url = write_xarray_zarr(tmp_path / "in.zarr", UNEVEN_X, EVEN_Y, declared)
    with pytest.raises(UnsupportedFormatError) as refused:
        geoseg.open_raster(url, variable="image")
    said = str(refused.value)
    assert "x coordinates are not evenly spaced" in said and "from 10 to 17" in said
    assert "x[40] - x[39] = 17" in said and "regular grid" in said


@pytest.mark.parametrize("decimals", [6, 4])
@pytest.mark.parametrize("declared", [True, False])
def test_zarr_coordinates_stored_rounded_are_read_at_their_place(tmp_path, decimals, declared):
    """A 1/120 degree grid whose lat/lon coordinates are stored rounded (as many products
    store them) is even within half a pixel: it was read before the refusal of uneven
    coordinates and must still be, at rioxarray's place (its declared transform), or at the
    step between its ends when none is declared (it lost its place before)."""
    from rasterio.transform import from_origin

    transform = from_origin(10.0, 50.0, 1 / 120, 1 / 120)
    centres = np.arange(200) + 0.5
    x, y = 10.0 + centres / 120, 50.0 - centres / 120
    url = write_xarray_zarr(tmp_path / "in.zarr", np.round(x, decimals),
                            np.round(y[:48], decimals), transform if declared else None)
    raster = geoseg.open_raster(url, variable="image")
    got = Affine(*raster.attrs["transform"])
    expected = transform if declared else Affine(1 / 120, 0, 10, 0, -1 / 120, 50)
    assert got.almost_equals(expected, 10.0 ** -decimals)
    out = geoseg.segment(raster, Threshold(thresholds=[100]), chunks=64)
    assert Affine(*out.attrs["transform"]).almost_equals(got, 1e-12)


def test_uneven_zarr_coordinates_without_a_crs_or_transform_are_a_pixel_grid(tmp_path):
    """Nothing places such a raster, so nothing is lost: read as a pixel grid, as before."""
    image = np.ones((1, 5, 6), np.uint8)
    array = xr.DataArray(image, dims=("band", "y", "x"), name="image",
                         coords={"band": [1], "y": [0, 1, 2, 4, 8], "x": [0, 1, 2, 3, 5, 9]})
    array.to_dataset().to_zarr(tmp_path / "in.zarr", mode="w", consolidated=False)
    raster = geoseg.open_raster(str(tmp_path / "in.zarr"), variable="image")
    assert raster.shape == (1, 5, 6) and not raster.attrs.get("crs")


@pytest.mark.parametrize("flip_y, flip_x", [(False, False), (True, False), (False, True)])
def test_evenly_spaced_zarr_coordinates_place_the_raster_as_rioxarray_does(tmp_path, flip_y,
                                                                            flip_x):
    x = 500000 + 10 * (np.arange(64) + 0.5)
    y = EVEN_Y[::-1].copy() if flip_y else EVEN_Y
    x = x[::-1].copy() if flip_x else x
    url = write_xarray_zarr(tmp_path / "in.zarr", x, y)
    raster = geoseg.open_raster(url, variable="image")
    expected = xr.open_zarr(url, consolidated=False)["image"].rio.transform(recalc=True)
    assert Affine(*raster.attrs["transform"]).almost_equals(expected, 1e-9)


# --- a COG never states a CRS over pixel indices -----------------------------------------------

def test_a_cog_of_an_output_with_a_crs_but_no_transform_claims_no_crs(tmp_path):
    """GDAL wrote the CRS over its default transform: a GIS drew the classes at the CRS's
    origin, a metre a pixel. The COG is now not georeferenced at all, and the export says why."""
    classes = (np.arange(60 * 50).reshape(60, 50) % 3).astype(np.uint8)
    out = finished_output(tmp_path / "out.zarr", classes, ["a", "b", "c"],
                          georef=GeoRef.from_crs("EPSG:32633", None))
    dest = str(tmp_path / "mask.tif")
    with pytest.warns(UserWarning, match=r"CRS \(EPSG:32633\) but no transform.*without a CRS"):
        export_cog(out, dest, blocksize=32)
    with rasterio.open(dest) as cog:
        assert cog.crs is None
        np.testing.assert_array_equal(cog.read(1), classes)


def test_a_cog_of_a_georeferenced_output_keeps_crs_and_transform_without_warning(tmp_path):
    transform = Affine(10, 0, 500000, 0, -10, 4500000)
    classes = np.zeros((40, 40), np.uint8)
    out = finished_output(tmp_path / "out.zarr", classes, ["a"],
                          georef=GeoRef.from_crs("EPSG:32633", transform))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        export_cog(out, str(tmp_path / "mask.tif"), blocksize=32)
    with rasterio.open(tmp_path / "mask.tif") as cog:
        assert cog.crs == rasterio.crs.CRS.from_epsg(32633) and cog.transform == transform


# --- OME-Zarr axes in several units ------------------------------------------------------------

SCALE, TRANSLATION = [2.0, 0.5, 0.25], [10.0, -3.0, 7.5]  # (z, y, x), each in its axis's unit


def write_ome(path: Path, units: dict[str, str]) -> str:
    """A one-level NGFF 0.4 (z, y, x) volume written by ome-zarr with these axis units."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    data = np.ones((12, 20, 16), np.uint16)
    data[2:6, 4:12, 3:9] = 900
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(data, group, axes="zyx", fmt=FormatV04(), scale_factors=[], axes_units=units)
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": SCALE}, {"type": "translation", "translation": TRANSLATION}]
    group.attrs["multiscales"] = multiscales
    return str(path)


def test_ome_zarr_axes_in_several_units_are_read_in_the_finest(tmp_path):
    """z in micrometer, y and x in nanometer: spacing (2, 0.5, 0.25) and no unit mixed the
    units (a z:y ratio of 4 where it is 4000); read in nanometer, scale and translation alike."""
    url = write_ome(tmp_path / "img.ome.zarr", {"z": "micrometer", "y": "nanometer",
                                                "x": "nanometer"})
    raster = geoseg.open_raster(url)
    nm = np.array([1000.0, 1.0, 1.0])  # each axis's unit in nanometres
    assert raster.attrs["units"] == "nanometer"
    np.testing.assert_allclose(raster.attrs["spacing"], np.array(SCALE) * nm, rtol=1e-12)
    index = np.array([[0, 0, 0], [11, 19, 15], [3, 7, 2]])  # (z, y, x)
    world = ((index * SCALE + TRANSLATION) * nm)[:, ::-1]  # physical (x, y, z), nanometres
    np.testing.assert_allclose(apply_affine(np.array(raster.attrs["voxel_affine"]), index), world,
                               rtol=1e-12)
    out = geoseg.segment(raster, Threshold(thresholds=[100]), chunks=8)
    assert out.attrs["units"] == "nanometer" and out.attrs["spacing"] == raster.attrs["spacing"]


def test_ome_zarr_axes_in_one_unit_keep_it(tmp_path):
    url = write_ome(tmp_path / "img.ome.zarr", dict.fromkeys("zyx", "micrometer"))
    raster = geoseg.open_raster(url)
    assert raster.attrs["units"] == "micrometer"
    np.testing.assert_allclose(raster.attrs["spacing"], SCALE)


def test_ome_zarr_axes_in_units_no_factor_converts_are_refused(tmp_path):
    url = write_ome(tmp_path / "img.ome.zarr", {"z": "micrometer", "y": "nanometer",
                                                "x": "nanometer"})
    group = zarr.open_group(url, mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"][0]["unit"] = "furlong"
    group.attrs["multiscales"] = multiscales
    with pytest.raises(UnsupportedFormatError, match=r"not an NGFF length unit: 'furlong'"):
        geoseg.open_raster(url)


def test_ome_zarr_axes_in_two_units_and_one_without_are_read_as_written_with_a_warning(tmp_path):
    """Which unit the bare axis is in cannot be told: read as before (no unit, the spacing as
    written), saying so, rather than refused naming 'None' as a unit."""
    url = write_ome(tmp_path / "img.ome.zarr", {"z": "micrometer", "y": "nanometer"})
    group = zarr.open_group(url, mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"][2].pop("unit", None)
    group.attrs["multiscales"] = multiscales
    with pytest.warns(UserWarning, match="one names none"):
        raster = geoseg.open_raster(url)
    assert raster.attrs.get("units") is None
    np.testing.assert_allclose(raster.attrs["spacing"], SCALE)
