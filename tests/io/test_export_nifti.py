"""NIfTI export of a real volume job, read back by nibabel against the input file."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import zarr

import geoseg
from geoseg.errors import ExportError, OutputExistsError
from geoseg.io.exports import export_nifti
from geoseg.io.readers import open_source
from geoseg.jobs import JobSpec, run
from tests.io.test_volume_inputs import oblique_affine, ome_world, write_nifti, write_ome_volume


@pytest.fixture(scope="module")
def volume_job(tmp_path_factory, cluster_address) -> tuple[str, str]:
    """An Otsu job on an oblique, anisotropic NIfTI volume (an ellipsoid in noise)."""
    folder = tmp_path_factory.mktemp("nifti-export")
    i, j, k = np.mgrid[0:37, 0:29, 0:11]
    inside = ((i - 18) / 14.0) ** 2 + ((j - 14) / 10.0) ** 2 + ((k - 5) / 4.0) ** 2 < 1
    data = (inside * 400 + np.random.default_rng(0).normal(100, 30, inside.shape)).astype(np.int16)
    scan = write_nifti(folder / "scan.nii", data, oblique_affine())
    out = str(folder / "mask.zarr")
    spec = {
        "input": {"url": str(scan)},
        "model": {"method": "otsu"},
        "output": {"url": out, "chunks": [4, 16, 16]},
    }
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    return str(scan), out


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_keeps_the_input_affine_zooms_and_voxels(volume_job, tmp_path, suffix):
    scan, out = volume_job
    dest = str(tmp_path / f"mask{suffix}")
    assert export_nifti(out, dest) == dest
    exported, original = nib.load(dest), nib.load(scan)
    np.testing.assert_allclose(exported.affine, original.affine, atol=1e-5)
    np.testing.assert_allclose(exported.header.get_qform(), original.affine, atol=1e-5)
    np.testing.assert_allclose(exported.header.get_zooms(), original.header.get_zooms(), rtol=1e-6)
    assert exported.header.get_xyzt_units()[0] == "mm"
    classes = zarr.open_group(out, mode="r")["classes"][...]  # (z, y, x) = (k, j, i)
    voxels = np.asarray(exported.dataobj)
    assert voxels.dtype == np.uint8 and voxels.shape == original.shape == (37, 29, 11)
    np.testing.assert_array_equal(voxels, np.transpose(classes, (2, 1, 0)))
    assert 0 < voxels.mean() < 1  # both classes present: the ellipsoid and the background
    assert exported.header.get_intent()[0] == "label"
    names = json.loads(exported.header.extensions[0].get_content())
    assert names["class_names"] == zarr.open_group(out, mode="r").attrs["geoseg"]["class_names"]


def test_ome_zarr_volume_exports_x_first_at_its_physical_positions(tmp_path, cluster_address):
    """An OME-Zarr's (z, y, x) volume becomes NIfTI's (i, j, k) = (x, y, z): RAS-oriented, each
    voxel where the image's scale and translation put it (the x axis is NIfTI's first)."""
    zz, yy, xx = np.mgrid[0:10, 0:24, 0:18]
    blob = ((zz - 4) / 3.0) ** 2 + ((yy - 14) / 6.0) ** 2 + ((xx - 6) / 4.0) ** 2 < 1
    image = write_ome_volume(tmp_path / "scan.ome.zarr", np.where(blob, 200, 20).astype(np.uint8))
    out = str(tmp_path / "mask.zarr")
    threshold = {"method": "threshold", "params": {"thresholds": [100]}}
    spec = {"input": {"url": image}, "model": threshold,
            "output": {"url": out, "chunks": [4, 16, 16]}}
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    exported = nib.load(export_nifti(out, str(tmp_path / "mask.nii")))
    assert nib.aff2axcodes(exported.affine) == ("R", "A", "S")
    np.testing.assert_allclose(exported.header.get_zooms(), [0.25, 0.5, 2.0])
    voxels = np.asarray(exported.dataobj)
    np.testing.assert_array_equal(voxels, np.transpose(blob, (2, 1, 0)))
    ijk = np.argwhere(voxels >= 0)  # every voxel
    np.testing.assert_allclose(nib.affines.apply_affine(exported.affine, ijk),
                               ome_world(image, ijk[:, ::-1]))


def test_existing_file_is_kept_unless_overwrite(volume_job, tmp_path):
    _, out = volume_job
    dest = tmp_path / "mask.nii.gz"
    dest.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists; nothing was written"):
        export_nifti(out, str(dest))
    assert dest.read_bytes() == b"keep me"
    export_nifti(out, str(dest), overwrite=True)
    assert nib.load(dest).shape == (37, 29, 11)


def test_images_and_other_suffixes_are_refused(volume_job, tmp_path):
    from tests.io.test_export_cog import finished_output

    image = finished_output(tmp_path / "image.zarr", np.zeros((20, 20), np.uint8), ["a"])
    with pytest.raises(ExportError, match=r"\(y, x\) classes.*--cog"):
        export_nifti(image, str(tmp_path / "mask.nii"))
    with pytest.raises(ExportError, match=r"ending in \.nii or \.nii\.gz"):
        export_nifti(volume_job[1], str(tmp_path / "mask.img"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.zarr"]


@pytest.mark.parametrize("codes", [(1, 1), (0, 1), (1, 0)])
def test_nifti_keeps_the_source_files_xform_codes(tmp_path, cluster_address, codes):
    """A scanner-space input (code 1) stays scanner-space: not relabelled 'aligned' (2)."""
    i = np.mgrid[0:12, 0:10, 0:6][0]
    data = ((i > 5) * 300 + np.random.default_rng(1).normal(100, 20, i.shape)).astype(np.int16)
    affine = oblique_affine()
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=codes[0])
    image.header.set_sform(affine, code=codes[1])
    scan = tmp_path / "scan.nii"
    nib.save(image, scan)
    out = str(tmp_path / "mask.zarr")
    spec = {"input": {"url": str(scan)}, "model": {"method": "otsu"},
            "output": {"url": out, "chunks": [4, 8, 8]}}
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    dest = str(tmp_path / "mask.nii.gz")
    export_nifti(out, dest)
    exported = nib.load(dest)
    assert (int(exported.header["qform_code"]), int(exported.header["sform_code"])) == codes
    np.testing.assert_allclose(exported.affine, nib.load(scan).affine, atol=1e-4)


def coded_nifti(path, klass=nib.Nifti1Image, codes=(1, 4), qform=None):
    """A small NIfTI volume (a slab brighter than the rest) written by nibabel, its qform and
    sform the same oblique affine (or the qform ``qform``) with these codes: (1, 4) says
    scanner and MNI space."""
    i = np.mgrid[0:12, 0:10, 0:6][0]
    data = ((i > 5) * 300 + np.random.default_rng(2).normal(100, 20, i.shape)).astype(np.int16)
    image = klass(data, None)  # the image's own affine is the header's: saved as set here
    image.set_qform(oblique_affine() if qform is None else qform, code=codes[0])
    image.set_sform(oblique_affine(), code=codes[1])
    nib.save(image, str(path))
    return path


def otsu_job(input_url, out, cluster_address) -> str:
    spec = {"input": {"url": str(input_url)}, "model": {"method": "otsu"},
            "output": {"url": str(out), "chunks": [4, 8, 8]}}
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    return str(out)


def header_codes(path) -> tuple[int, int]:
    header = nib.load(path).header
    return int(header["qform_code"]), int(header["sform_code"])


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("codes", [(1, 4), (0, 0)])
def test_the_nifti_reader_keeps_the_headers_xform_codes(tmp_path, klass, codes):
    """(0, 0) names no space: nothing to keep, and no attribute for it."""
    scan = coded_nifti(tmp_path / "scan.nii", klass, codes)
    assert header_codes(scan) == codes  # as nibabel reads them back
    kept = None if codes == (0, 0) else codes
    assert open_source(str(scan)).georef.nifti_codes == kept
    assert geoseg.open_raster(str(scan)).attrs.get("nifti_codes") == (kept and list(kept))


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_the_xform_codes_travel_with_the_output_when_the_input_is_gone(
        tmp_path, cluster_address, klass):
    """The export no longer needs the input file: the codes are in the output's attributes
    (they used to be re-read from the file, and fell back to 2, aligned, once it was gone)."""
    scan = coded_nifti(tmp_path / "scan.nii", klass, (1, 4))
    affine = nib.load(scan).affine
    out = otsu_job(scan, tmp_path / "mask.zarr", cluster_address)
    assert zarr.open_group(out, mode="r")["classes"].attrs["nifti_codes"] == [1, 4]
    scan.unlink()
    dest = export_nifti(out, str(tmp_path / "mask.nii.gz"))
    assert header_codes(dest) == (1, 4)
    np.testing.assert_allclose(nib.load(dest).affine, affine, atol=1e-4)
    np.testing.assert_allclose(nib.load(dest).header.get_qform(), affine, atol=1e-4)


def test_an_output_without_xform_codes_exports_as_before(tmp_path, cluster_address):
    """An output written before the codes travelled with it: the input file's codes while that
    file is there (and has the output's affine), then 2, aligned."""
    scan = coded_nifti(tmp_path / "scan.nii", codes=(1, 4))
    out = otsu_job(scan, tmp_path / "mask.zarr", cluster_address)
    del zarr.open_array(f"{out}/classes", mode="r+").attrs["nifti_codes"]
    zarr.consolidate_metadata(out)  # as such an output was finalized: without them
    assert "nifti_codes" not in geoseg.open_raster(out, variable="classes").attrs
    assert header_codes(export_nifti(out, str(tmp_path / "before.nii"))) == (1, 4)
    scan.unlink()
    assert header_codes(export_nifti(out, str(tmp_path / "after.nii"))) == (2, 2)


@pytest.mark.parametrize("via", ["job", "convert"])
def test_a_qform_of_another_matrix_travels_with_its_code(tmp_path, cluster_address, via):
    """Scanner qform and MNI sform of different matrices: both forms are written back, each
    with its own code and matrix, once the input file is gone, through a job's output and a
    converted store alike (the qform used to take the sform's matrix and code 0)."""
    scanner = np.diag([2.0, 2.0, 2.0, 1.0])
    scan = coded_nifti(tmp_path / "scan.nii", codes=(1, 4), qform=scanner)
    header = nib.load(scan).header
    assert not np.allclose(header.get_qform(), header.get_sform())  # nibabel: two matrices
    assert open_source(str(scan)).georef.nifti_codes == (1, 4)
    if via == "convert":
        from geoseg.io.convert import convert

        scan = convert(str(scan), str(tmp_path / "scan.zarr")).url
    out = otsu_job(scan, tmp_path / "mask.zarr", cluster_address)
    for path in (tmp_path / "scan.nii", tmp_path / "scan.zarr"):
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    dest = nib.load(export_nifti(out, str(tmp_path / "mask.nii")))
    assert header_codes(dest.get_filename()) == (1, 4)
    np.testing.assert_allclose(dest.header.get_sform(), header.get_sform(), atol=1e-5)
    np.testing.assert_allclose(dest.header.get_qform(), scanner, atol=1e-5)


def test_an_older_output_of_a_two_matrix_input_exports_no_space_for_its_qform(
        tmp_path, cluster_address):
    """An output without the carried codes and qform, its input still there: the input's qform
    is another matrix than the one the output holds, so its code is not written beside it."""
    scan = coded_nifti(tmp_path / "scan.nii", codes=(1, 4), qform=np.diag([2.0, 2.0, 2.0, 1.0]))
    out = otsu_job(scan, tmp_path / "mask.zarr", cluster_address)
    attrs = zarr.open_array(f"{out}/classes", mode="r+").attrs
    del attrs["nifti_codes"], attrs["nifti_qform"]
    zarr.consolidate_metadata(out)
    assert header_codes(export_nifti(out, str(tmp_path / "old.nii"))) == (0, 4)


def test_a_single_plane_with_no_step_across_it_exports_and_its_objects_have_an_area(tmp_path):
    """It opens (one plane's step places nothing), but nibabel could not make a qform of its
    zero step, so the export ended as an internal error; its objects' areas came out 0."""
    import pandas as pd

    data = np.zeros((6, 5, 1), np.int16)
    data[1:3, 1:4, 0] = 500  # one object of 6 voxels
    sform = np.diag([0.5, 0.25, 0.0, 1.0])
    image = nib.Nifti1Image(data, None)
    image.header.set_sform(sform, code=2)
    nib.save(image, str(tmp_path / "slice.nii"))
    spec = JobSpec.model_validate({
        "input": {"url": str(tmp_path / "slice.nii")},
        "model": {"method": "threshold", "params": {"thresholds": [100]}},
        "output": {"url": str(tmp_path / "out.zarr")},
        "instances": {"method": "components", "classes": [1]}, "cluster": {"kind": "threads"}})
    run(spec)
    export_nifti(str(tmp_path / "out.zarr"), str(tmp_path / "mask.nii"))
    written = nib.load(str(tmp_path / "mask.nii"))
    np.testing.assert_allclose(written.header.get_sform(), sform)  # the file's own, zero step kept
    np.testing.assert_array_equal(np.asarray(written.dataobj), (data > 100).astype(np.uint8))
    table = pd.read_parquet(tmp_path / "out.zarr" / "instances.parquet")
    assert list(table["area_px"]) == [6] and table["area"].tolist() == pytest.approx([6 * 0.5 * 0.25])


def test_a_volume_with_an_axis_past_32767_voxels_is_exported_as_nifti_2(tmp_path, cluster_address):
    """NIfTI-1 sizes are 16-bit: nibabel's HeaderDataError was an internal error."""
    data = (np.arange(40000 * 3 * 2) % 7).reshape(40000, 3, 2).astype(np.int16)  # (i, j, k)
    header = nib.Nifti2Header()
    nib.save(nib.Nifti2Image(data, np.diag([0.5, 1.0, 2.0, 1.0]), header), str(tmp_path / "n2.nii"))
    out = str(tmp_path / "mask.zarr")
    run(JobSpec.from_dict({"input": {"url": str(tmp_path / "n2.nii")},
                           "model": {"method": "threshold", "params": {"thresholds": [3]}},
                           "output": {"url": out}}), scheduler=cluster_address)
    dest = str(tmp_path / "mask.nii.gz")
    export_nifti(out, dest)
    exported = nib.load(dest)
    assert isinstance(exported, nib.Nifti2Image) and exported.shape == (40000, 3, 2)
    np.testing.assert_array_equal(np.asarray(exported.dataobj), (data > 3).astype(np.uint8))
    np.testing.assert_allclose(exported.affine, np.diag([0.5, 1.0, 2.0, 1.0]))
