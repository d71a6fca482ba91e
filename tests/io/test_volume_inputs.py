"""Volume and multi-resolution inputs: NIfTI, OME-Zarr (NGFF 0.4/0.5), named Zarr volumes, COG
overviews. Each is checked against an independent reader (nibabel, ome-zarr, rasterio)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import zarr
from rasterio.enums import Resampling
from rasterio.transform import from_origin

import geoseg
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.readers import open_source

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


def oblique_affine() -> np.ndarray:
    """An anisotropic, rotated (i, j, k) -> RAS affine, so axis mix-ups cannot pass."""
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, **header: float) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    if header:
        image.header.set_slope_inter(header["slope"], header["inter"])
    nib.save(image, str(path))
    return path


OME_SCALE, OME_TRANSLATION = [2.0, 0.5, 0.25], [10.0, -3.0, 7.5]  # (z, y, x): no axis alike


def write_ome_volume(path: Path, data: np.ndarray, scale: list[float] = OME_SCALE,
                     translation: list[float] = OME_TRANSLATION) -> str:
    """A one-level NGFF 0.4 ``(c, z, y, x)`` image written by ome-zarr, whose level has this
    ``(z, y, x)`` scale and translation (ome-zarr 0.18 writes no translation itself)."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(data[None], group, axes="czyx", fmt=FormatV04(), scale_factors=[],
                axes_units={a: "micrometer" for a in "zyx"})
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [1.0, *scale]},
        {"type": "translation", "translation": [0.0, *translation]}]
    group.attrs["multiscales"] = multiscales
    return str(path)


def ome_world(url: str, zyx_index: np.ndarray) -> np.ndarray:
    """Physical ``(x, y, z)`` of ``(z, y, x)`` indices, from the image's own metadata."""
    transforms = dict(zarr.open_group(url, mode="r").attrs)["multiscales"][0]["datasets"][0][
        "coordinateTransformations"]
    scale, translation = (np.asarray(t[t["type"]][1:]) for t in transforms)
    return (np.asarray(zyx_index) * scale + translation)[..., ::-1]


def zyx(ijk: np.ndarray) -> np.ndarray:
    """nibabel's (i, j, k[, t]) array in geoseg's (band, z, y, x) order."""
    data = ijk if ijk.ndim == 4 else ijk[..., None]
    return np.transpose(data, (3, 2, 1, 0))


def test_nifti_values_affine_and_spacing_match_nibabel(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-500, 3000, size=(23, 17, 9), dtype=np.int16)
    path = write_nifti(tmp_path / "ct.nii", data, oblique_affine())
    raster = geoseg.open_raster(str(path))
    assert raster.dims == ("band", "z", "y", "x")
    assert raster.shape == (1, 9, 17, 23)
    np.testing.assert_array_equal(raster.values, zyx(np.asarray(nib.load(path).dataobj)))
    affine = np.asarray(raster.attrs["voxel_affine"])
    index = np.array([4, 11, 20, 1.0])  # (z, y, x, 1) = (k, j, i, 1)
    world = nib.load(path).affine @ np.array([20, 11, 4, 1.0])
    np.testing.assert_allclose(affine @ index, world, atol=1e-5)
    np.testing.assert_allclose(raster.attrs["spacing"], [2.5, 0.9, 0.8], rtol=1e-5)
    assert raster.attrs["units"] == "mm"


def test_nifti_scaling_and_4d_band_selection(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, size=(11, 13, 7, 3), dtype=np.int16)
    path = write_nifti(tmp_path / "dwi.nii", data, np.diag([1.5, 1.5, 3.0, 1.0]), slope=0.5, inter=-10.0)
    expected = zyx(nib.load(path).get_fdata(dtype=np.float32))
    raster = geoseg.open_raster(str(path), bands=[3, 1])
    assert raster.dtype == np.float32
    assert list(raster["band"].values) == ["volume_3", "volume_1"]
    np.testing.assert_allclose(raster.values, expected[[2, 0]], rtol=1e-6)


def test_nifti_windows_read_only_their_voxels(tmp_path):
    data = np.arange(31 * 29 * 12, dtype=np.float32).reshape(31, 29, 12)
    path = write_nifti(tmp_path / "v.nii", data, np.eye(4))
    source = geoseg.io.readers.open_source(str(path))
    window = (slice(3, 8), slice(10, 21), slice(5, 30))
    np.testing.assert_array_equal(source.read(window), zyx(data)[(slice(None), *window)])


def test_gzipped_nifti_asks_for_convert(tmp_path):
    path = write_nifti(tmp_path / "v.nii", np.zeros((4, 4, 4), np.float32), np.eye(4))
    gz = tmp_path / "v.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(UnsupportedFormatError, match="geoseg convert"):
        geoseg.open_raster(str(gz))


def test_nifti_on_s3_reads_like_local(tmp_path, s3_server):
    import fsspec

    data = np.random.default_rng(2).normal(size=(20, 18, 6)).astype(np.float32)
    path = write_nifti(tmp_path / "v.nii", data, oblique_affine())
    fs = fsspec.filesystem("s3", **s3_server)
    url = "s3://geoseg/volumes/v.nii"
    fs.put(str(path), url)
    remote = geoseg.open_raster(url, storage_options=s3_server)
    np.testing.assert_array_equal(remote.values, geoseg.open_raster(str(path)).values)
    assert remote.attrs["voxel_affine"] == geoseg.open_raster(str(path)).attrs["voxel_affine"]


@pytest.mark.skipif(not ANATOMICAL.exists(), reason="nibabel's test data is not installed")
def test_real_mri_volume_opens_with_its_affine():
    raster = geoseg.open_raster(str(ANATOMICAL))
    image = nib.load(str(ANATOMICAL))
    np.testing.assert_array_equal(raster.values[0], np.transpose(np.asarray(image.dataobj), (2, 1, 0)))
    np.testing.assert_allclose(np.asarray(raster.attrs["voxel_affine"])[:, [2, 1, 0, 3]], image.affine)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels_axes_and_scale(tmp_path, version):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, size=(1, 2, 16, 64, 48), dtype=np.uint8)  # t, c, z, y, x
    url = str(tmp_path / "image.ome.zarr")
    group = zarr.open_group(url, mode="w", zarr_format=2 if version == "0.4" else 3)
    write_image(image, group, axes="tczyx", fmt=fmt, scale_factors=[2, 4], scale={"z": 2.0, "y": 0.5, "x": 0.5},
                axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"})
    full = geoseg.open_raster(url)
    assert full.dims == ("band", "z", "y", "x") and full.shape == (2, 16, 64, 48)
    np.testing.assert_array_equal(full.values, image[0])
    np.testing.assert_allclose(full.attrs["spacing"], [2.0, 0.5, 0.5])
    assert full.attrs["units"] == "micrometer"
    # the writer halves y and x per level and shifts pixel centres; read level 1 its way
    attrs = dict(zarr.open_group(url, mode="r").attrs)
    datasets = (attrs.get("ome", attrs))["multiscales"][0]["datasets"]
    scale, translation = (t[k] for t, k in zip(datasets[1]["coordinateTransformations"],
                                                ("scale", "translation")))
    coarse = geoseg.open_raster(url, level=1, bands=[2])
    reference = np.asarray(zarr.open_group(url, mode="r")[datasets[1]["path"]][0, 1])
    assert coarse.shape == (1, *reference.shape) == (1, 16, 32, 24)
    np.testing.assert_array_equal(coarse.values[0], reference)
    np.testing.assert_allclose(coarse.attrs["spacing"], scale[2:])
    np.testing.assert_allclose(np.asarray(coarse.attrs["voxel_affine"])[:3, 3], translation[:1:-1])
    with pytest.raises(UnsupportedFormatError, match="resolution level"):
        geoseg.open_raster(url, level=7)


def test_ome_zarr_voxel_affine_maps_indices_to_x_y_z_like_nifti(tmp_path):
    """One convention for every volume: rows 0, 1, 2 of ``voxel_affine @ (z, y, x, 1)`` are
    world x, y, z, as for a NIfTI (scanner X, Y, Z); OME-Zarr's own axes say which is which."""
    url = write_ome_volume(tmp_path / "v.ome.zarr", np.zeros((6, 8, 10), np.uint8))
    raster = geoseg.open_raster(url)
    index = np.array([[0, 0, 0], [5, 7, 9], [3, 1, 8]], dtype=float)  # (z, y, x)
    affine = np.asarray(raster.attrs["voxel_affine"])
    world = (affine @ np.column_stack([index, np.ones(3)]).T).T[:, :3]
    np.testing.assert_allclose(world, ome_world(url, index))
    np.testing.assert_allclose(raster.attrs["spacing"], OME_SCALE)
    assert nib.aff2axcodes(affine[:, [2, 1, 0, 3]]) == ("R", "A", "S")


def test_named_zarr_volume_with_spacing(tmp_path):
    data = np.random.default_rng(4).random((12, 30, 20)).astype(np.float32)
    arr = zarr.create_array(str(tmp_path / "vol.zarr"), shape=data.shape, chunks=(4, 16, 16), dtype="float32",
                            dimension_names=["z", "y", "x"], attributes={"spacing": [3.0, 0.7, 0.7]})
    arr[:] = data
    raster = geoseg.open_raster(str(tmp_path / "vol.zarr"))
    assert raster.dims == ("band", "z", "y", "x")
    np.testing.assert_array_equal(raster.values[0], data)
    assert raster.attrs["spacing"] == [3.0, 0.7, 0.7]
    affine = np.asarray(raster.attrs["voxel_affine"])  # world rows x, y, z, as for any volume
    np.testing.assert_allclose(affine @ [2, 5, 7, 1], [7 * 0.7, 5 * 0.7, 2 * 3.0, 1])
    assert nib.aff2axcodes(affine[:, [2, 1, 0, 3]]) == ("R", "A", "S")


def test_unnamed_five_dimensional_zarr_is_refused_with_advice(tmp_path):
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(1, 1, 2, 3, 4), dtype="uint8")
    with pytest.raises(UnsupportedFormatError, match="dimension names"):
        geoseg.open_raster(str(tmp_path / "a.zarr"))


def test_cog_overview_level_matches_rasterio(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 255, size=(3, 256, 320), dtype=np.uint8)
    path = tmp_path / "cog.tif"
    profile = {"driver": "GTiff", "width": 320, "height": 256, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500000, 4200000, 10, 10), "tiled": True,
               "blockxsize": 64, "blockysize": 64}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.build_overviews([2, 4], Resampling.nearest)
    level1 = geoseg.open_raster(str(path), level=1, bands=[2])
    with rasterio.open(path) as ds:
        expected = ds.read(2, out_shape=(128, 160), resampling=Resampling.nearest)
        transform = ds.transform * ds.transform.scale(2, 2)
    assert level1.shape == (1, 128, 160)
    np.testing.assert_array_equal(level1.values[0], expected)
    np.testing.assert_allclose(level1.attrs["transform"], tuple(transform)[:6])
    with pytest.raises(UnsupportedFormatError, match="overview"):
        geoseg.open_raster(str(path), level=3)


@pytest.mark.parametrize("size", [0, -64])
def test_a_nifti_header_with_a_size_below_1_is_refused_naming_the_file_and_the_field(
        tmp_path, size):
    """dim[1] = 0 planned no task (then divided by zero); -64 failed far from the header."""
    good = write_nifti(tmp_path / "good.nii", np.ones((64, 64, 32), np.float32), np.eye(4))
    data = bytearray(good.read_bytes())
    struct.pack_into("<4h", data, 40, 3, size, 64, 32)  # dim[0..3] of the NIfTI-1 header
    bad = tmp_path / "bad.nii"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptInputError, match=rf"NIfTI file {bad} has dim\[1\] = {size} in its "
                       r"header \(data shape \(" + str(size) + r", 64, 32\)\); every size must be >= 1"):
        open_source(str(bad))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_scaled_32_bit_voxels_read_as_nibabel_scales_them(tmp_path, suffix):
    """int32 voxels above 2**24 with a slope and intercept: float32 rounded every one of them
    (by up to 1.5), so a threshold between two stored values cut rounded data; nibabel's
    ``get_fdata`` is float64, as they are read now. int16 ones stay float32 (exact there)."""
    from geoseg.io.convert import convert

    data = np.random.default_rng(2).integers(2**24, 2**26, size=(20, 16, 5), dtype=np.int32)
    path = write_nifti(tmp_path / f"big{suffix}", data, np.eye(4), slope=1.0, inter=0.5)
    expected = zyx(nib.load(path).get_fdata())
    url = str(path)
    if suffix == ".nii.gz":
        url = str(tmp_path / "big.zarr")
        convert(str(path), url)
    raster = geoseg.open_raster(url)
    assert raster.dtype == np.float64
    np.testing.assert_array_equal(raster.values, expected)
    small = write_nifti(tmp_path / "ct.nii", data.astype(np.int16), np.eye(4), slope=0.5, inter=-1.0)
    assert geoseg.open_raster(str(small)).dtype == np.float32


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_slope_float32_cannot_hold_reads_as_nibabel_scales_it_not_as_infinities(tmp_path, suffix):
    """int16 voxels with scl_slope 1e36: read as float32 they overflowed into infinities (with
    numpy's warning), which every method then took for no data."""
    import warnings

    from geoseg.io.convert import convert

    data = np.arange(24, dtype=np.int16).reshape(4, 3, 2) * 1000
    path = write_nifti(tmp_path / f"huge{suffix}", data, np.eye(4), slope=1e36, inter=0.0)
    expected = zyx(nib.load(path).get_fdata())
    url = str(path)
    if suffix == ".nii.gz":
        url = str(tmp_path / "huge.zarr")
        convert(str(path), url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning
        raster = geoseg.open_raster(url)
        values = raster.values
    assert raster.dtype == np.float64 and np.isfinite(values).all()
    np.testing.assert_array_equal(values, expected)


def _singular(affine: np.ndarray) -> np.ndarray:
    affine = affine.copy()
    affine[:3, 2] = 0.0  # the k axis takes no step: voxels of no volume
    return affine


@pytest.mark.parametrize("broken, said", [(_singular, "its voxels have no volume"),
                                          (lambda a: a * np.where(np.eye(4) == 1, np.nan, 1),
                                           "NaN or infinite")])
def test_a_nifti_sform_that_places_no_voxel_is_refused_naming_the_file(tmp_path, broken, said):
    """A singular or NaN sform was read as given: object volumes came out 0 or NaN mm^3 and
    only the NIfTI export failed, as an internal error."""
    image = nib.Nifti1Image(np.ones((8, 8, 4), np.int16), None)
    image.header.set_sform(broken(oblique_affine()), code=1)
    path = tmp_path / "bad.nii"
    nib.save(image, str(path))
    with pytest.raises(UnsupportedFormatError, match=rf"The sform of NIfTI file {path} .*{said}.*"
                                                     r"img\.set_sform"):
        geoseg.open_raster(str(path))


@pytest.mark.parametrize("scale", [[0.0, 0.5, 0.25], [2.0, float("nan"), 0.25], [1e308, 1e308, 1e308]])
def test_an_ome_zarr_scale_that_places_no_voxel_is_refused_naming_the_level(tmp_path, scale):
    url = write_ome_volume(tmp_path / "v.ome.zarr", np.ones((4, 8, 8), np.uint8), scale=scale)
    with pytest.raises(UnsupportedFormatError, match=r"Level 0's coordinateTransformations "
                       rf"\(scale .*\) of OME-Zarr image {url} is not a usable voxel-to-world"):
        geoseg.open_raster(url)


def test_a_voxel_affine_passed_in_that_places_no_voxel_is_a_parameter_error():
    from geoseg.errors import ParameterError
    from geoseg.io.georef import GeoRef

    with pytest.raises(ParameterError, match="voxels have no volume"):
        GeoRef.from_voxel_affine(_singular(np.eye(4)))
    assert GeoRef.from_voxel_affine(np.diag([2.0, 1.0, 0.5, 1.0])).voxel_affine[0] == 2.0


def test_a_single_plane_with_no_step_across_the_plane_still_opens(tmp_path):
    """One plane places nothing by its z step: such files opened before affines were checked,
    and a zero step there is no fault (nibabel loads them too)."""
    image = nib.Nifti1Image(np.ones((5, 4, 1), np.int16), None)
    image.header.set_sform(np.diag([0.5, 0.5, 0.0, 1.0]), code=2)
    nib.save(image, str(tmp_path / "slice.nii"))
    assert geoseg.open_raster(str(tmp_path / "slice.nii")).shape == (1, 1, 4, 5)
    url = write_ome_volume(tmp_path / "plane.ome.zarr", np.ones((1, 8, 8), np.uint8), scale=[0.0, 0.5, 0.5])
    assert geoseg.open_raster(url).shape == (1, 1, 8, 8)


def _with_axes(url: str, names: list[str]) -> str:
    """The image at ``url`` with its multiscales axes renamed (the arrays unchanged)."""
    group = zarr.open_group(url, mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"] = [{**a, "name": n} for a, n in zip(multiscales[0]["axes"], names)]
    group.attrs["multiscales"] = multiscales
    return url


@pytest.mark.parametrize("names, said", [
    (["c", "x", "y", "z"], (r"has its space axes in the order \['x', 'y', 'z'\]; geoseg reads them "
                           r"in the order \['z', 'y', 'x'\]")),
    (["c", "z", "x", "y"], r"in the order \['z', 'x', 'y'\]"),
    (["c", "y", "y", "x"], r"has axes \['c', 'y', 'y', 'x'\]: 'y' named more than once"),
])
def test_ome_zarr_space_axes_out_of_z_y_x_order_are_refused_not_read_transposed(tmp_path, names,
                                                                                 said):
    """They were read by position: an x-first image read transposed, its spacings swapped and
    its NIfTI export mirrored."""
    url = _with_axes(write_ome_volume(tmp_path / "v.ome.zarr", np.zeros((4, 6, 8), np.uint8)),
                     names)
    with pytest.raises(UnsupportedFormatError, match=said):
        geoseg.open_raster(url)


def test_a_named_zarr_with_a_time_axis_longer_than_one_is_refused_not_read_as_bands(tmp_path):
    """(t, band, z, y, x) of shape (3, 2, 2, 16, 16): t was taken for the bands, then failed."""
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(3, 2, 2, 16, 16), dtype="uint8",
                      dimension_names=["t", "band", "z", "y", "x"])
    with pytest.raises(UnsupportedFormatError, match=r"dimensions \('t', 'band', 'z', 'y', 'x'\) "
                                                     r"with shape \(3, 2, 2, 16, 16\): geoseg reads"):
        geoseg.open_raster(str(tmp_path / "a.zarr"))


def test_a_one_dimensional_named_zarr_is_told_apart_from_an_unnamed_one(tmp_path):
    """Its message said "no dimension names" of an array named ["x"]."""
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(16,), dtype="uint8", dimension_names=["x"])
    with pytest.raises(UnsupportedFormatError, match=r"has 1 dimension\(s\) and dimension names "
                                                     r"\('x',\), which name no y and x axes"):
        geoseg.open_raster(str(tmp_path / "a.zarr"))


def _edited_ome(tmp_path: Path, edit) -> str:
    """A one-level OME-Zarr volume whose multiscales metadata ``edit`` changed in place."""
    url = write_ome_volume(tmp_path / "img.zarr", np.zeros((6, 8, 10), np.uint8))
    group = zarr.open_group(url, mode="r+")
    multiscales = group.attrs["multiscales"]
    edit(multiscales)
    group.attrs["multiscales"] = multiscales
    return url


def _image(m: list) -> dict:
    return m[0]


@pytest.mark.parametrize(("edit", "said"), [
    (lambda m: _image(m).update(axes=["t", "c", "z", "y", "x"]),
     r"declares 5 axes \['t', 'c', 'z', 'y', 'x'\], but its level array has 4 dimensions"),
    (lambda m: _image(m)["datasets"][0]["coordinateTransformations"][0].update(scale=[1, 2, 3]),
     r"level 0's scale is \[1, 2, 3\]; expected 4 numbers, one per axis"),
    (lambda m: _image(m)["datasets"][0]["coordinateTransformations"][1].update(
        translation=[0, "a", 1, 2]), r"level 0's translation is .*; expected 4 numbers"),
    (lambda m: m.clear(), r"its multiscales is \[\]; expected a list holding an image object"),
    (lambda m: _image(m).pop("datasets"), r"its multiscales datasets are None; expected a list"),
])
def test_ome_zarr_metadata_unlike_its_arrays_is_refused_naming_the_field(tmp_path, edit, said):
    """Axes were zipped with the array's dimensions (a z, y, x array under c, z, y, x axes read
    its planes as bands), short scales cut the axes short, and malformed multiscales were
    internal KeyErrors and IndexErrors."""
    url = _edited_ome(tmp_path, edit)
    with pytest.raises(CorruptInputError, match=said):
        geoseg.open_raster(url)


def test_an_ome_zarr_scale_given_by_path_is_named(tmp_path):
    def by_path(m: list) -> None:
        transform = _image(m)["datasets"][0]["coordinateTransformations"][0]
        transform.pop("scale")
        transform["path"] = "scale.bin"

    with pytest.raises(UnsupportedFormatError, match=r"level 0's scale is given by path "
                                                     r"\('scale.bin'\); geoseg reads scales"):
        geoseg.open_raster(_edited_ome(tmp_path, by_path))


def test_an_ome_zarr_level_whose_array_disagrees_with_its_scale_is_refused(tmp_path):
    """A level declaring twice level 0's spacing over an array of another extent was read (and
    labels exported into it) placed by the scale: class boundaries landed voxels away."""
    url = write_ome_volume(tmp_path / "img.zarr", np.zeros((8, 12, 14), np.uint8))
    group = zarr.open_group(url, mode="r+")
    group.create_array("1", shape=(1, 4, 6, 3), dtype="uint8")  # 2x scale: (4, 6, 7) expected
    multiscales = group.attrs["multiscales"]
    level0 = multiscales[0]["datasets"][0]
    level1 = {"path": "1", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, *(2 * np.asarray(OME_SCALE)).tolist()]},
        level0["coordinateTransformations"][1]]}
    multiscales[0]["datasets"].append(level1)
    group.attrs["multiscales"] = multiscales
    assert geoseg.open_raster(url).shape == (1, 8, 12, 14)  # level 0 reads
    with pytest.raises(CorruptInputError, match=r"level 1 holds \(1, 4, 6, 3\) voxels, but its "
                                                r"scale makes level 0's .* about \(1.0, 4.0, "
                                                r"6.0, 7.0\) of them"):
        geoseg.open_raster(url, level=1)


def test_a_window_of_a_large_nifti_plane_reads_rows_of_it_not_the_whole_plane(tmp_path,
                                                                              monkeypatch):
    """Each plane was one chunk: a 30000 x 30000 float32 plane (3.4 GiB) was read whole for a
    4 x 4 window, and segment() of a small window read it too."""
    from geoseg.io.readers import _nifti
    from geoseg.methods import Threshold

    monkeypatch.setattr(_nifti, "CHUNK_BYTES", 64 * 100 * 4)  # 64 rows of these planes
    data = np.random.default_rng(0).random((100, 300, 2), dtype=np.float32)  # (i, j, k)
    path = write_nifti(tmp_path / "wide.nii", data, np.eye(4))
    read = []
    original = _nifti.NiftiSource.read
    monkeypatch.setattr(_nifti.NiftiSource, "read",
                        lambda self, window: read.append(window) or original(self, window))
    raster = geoseg.open_raster(str(path))
    assert raster.data.chunks[2] == (64, 64, 64, 64, 44)  # rows of planes of 300 rows
    window = raster[:, :1, :16, :16]
    np.testing.assert_array_equal(window.values, zyx(data)[:, :1, :16, :16])
    geoseg.segment(window, Threshold((0.5,))).compute()
    assert read and all(w[1].stop - w[1].start <= 64 for w in read), read
