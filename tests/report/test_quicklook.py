"""Quicklooks: strided reads per chunk, the stretch, the overlay, bounded memory, volumes."""

from __future__ import annotations

import io
import tracemalloc

import dask.array as da
import fsspec
import numpy as np
import pytest
import zarr
from PIL import Image

from geoseg.io.georef import GeoRef
from geoseg.io.output import OutputTarget, create_output
from geoseg.report.quicklook import (
    _classes_source,
    build,
    class_colors,
    coarse,
    overlay,
    render,
    sampled,
    step_for,
    stretch,
)
from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr
from tests.test_errors_cli import assert_clean

NAMES = ["water", "land", "building"]
COLORS = [[0, 0, 255], [0, 255, 0], [255, 0, 0]]


def _output(tmp_path, shape, chunks, *, image: bool = True) -> str:
    rng = np.random.default_rng(0)
    attrs = {"class_colors": COLORS}
    if image:
        group = zarr.open_group(str(tmp_path / "image.zarr"), mode="w")
        bands = group.create_array("image", shape=(3, *shape), dtype="uint8", chunks=(3, *chunks))
        bands[...] = rng.integers(0, 255, (3, *shape), dtype=np.uint8)
        attrs["provenance"] = {"job": {"input": {"url": str(tmp_path / "image.zarr"),
                                                 "variable": "image"}}}
    georef = GeoRef.from_crs("EPSG:32618", (10, 0, 5e5, 0, -10, 4.5e6)) if len(shape) == 2 \
        else GeoRef()
    target = create_output(str(tmp_path / "out.zarr"), shape=shape, chunks=chunks, georef=georef,
                           class_names=NAMES, class_dtype="uint8", nodata_class=255, attrs=attrs)
    target.open_group()["classes"][...] = rng.integers(0, 3, shape, dtype=np.uint8)
    return str(tmp_path / "out.zarr")


@pytest.mark.parametrize("chunks", [(7, 5), (13, 40), (1, 64)])
@pytest.mark.parametrize("step", [1, 3, 8])
def test_coarse_is_the_strided_array_for_any_chunking(chunks, step):
    array = np.arange(50 * 61).reshape(50, 61)
    np.testing.assert_array_equal(coarse(da.from_array(array, chunks=chunks), step),
                                  array[::step, ::step])


def test_step_brings_the_longest_side_under_the_size():
    assert step_for((20000, 15000), 1024) == 20
    assert -(-20000 // step_for((20000, 15000), 1024)) <= 1024
    assert step_for((100, 80), 1024) == 1


def test_stretch_maps_the_2_and_98_percentiles_to_black_and_white():
    band = np.arange(10000, dtype=np.float64).reshape(1, 100, 100)
    out = stretch(np.concatenate([band, band * 2, band + 5]))
    assert out.shape == (100, 100, 3)
    lo, hi = np.percentile(band, [2, 98])
    assert out[..., 0][band[0] <= lo].max() == 0 and out[..., 0][band[0] >= hi].min() == 1
    grey = stretch(band)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_overlay_paints_classes_and_leaves_nodata_clear():
    rgb = np.full((2, 2, 3), 0.2)
    classes = np.array([[0, 2], [255, 1]])
    colors = class_colors(COLORS, 3)
    out = overlay(rgb, classes, colors, 255, alpha=0.5)
    np.testing.assert_allclose(out[0, 0], 0.5 * 0.2 + 0.5 * np.array([0, 0, 1.0]))
    np.testing.assert_allclose(out[0, 1], 0.5 * 0.2 + 0.5 * np.array([1.0, 0, 0]))
    np.testing.assert_allclose(out[1, 0], rgb[1, 0])  # nodata: the picture alone
    assert class_colors(None, 12).shape == (12, 3)


def test_a_quicklook_png_with_the_model_colours(tmp_path):
    look = build(_output(tmp_path, (300, 200), (64, 64)), size=100)
    assert look.step == 3 and look.names == tuple(NAMES) and look.note == ""
    _, rgb, classes = look.views[0]
    assert rgb.shape == (3, 100, 67) and classes.shape == (100, 67)
    picture = Image.open(io.BytesIO(render(look)))
    assert picture.format == "PNG" and picture.width > 200
    pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # the image, not a blank page


@pytest.mark.parametrize("size, step", [(100, 3), (300, 1)])
def test_the_picture_shows_the_sampled_mask_pixel_for_pixel_at_the_size_asked(tmp_path, size, step):
    """``size`` sets the picture: its views are drawn one picture pixel per sampled pixel."""
    look = build(_output(tmp_path, (300, 200), (64, 64)), size=size)
    _, rgb, classes = look.views[0]
    picture = np.asarray(Image.open(io.BytesIO(render(look))).convert("RGB")).astype(int)
    expected = 255 * overlay(stretch(rgb, valid=classes != 255), classes, look.colors, 255)
    h, w = classes.shape

    def shown_at(y: int, x: int) -> bool:
        part = picture[y : y + h, x : x + w]
        return part.shape == expected.shape and np.abs(part - expected).max() <= 1

    corner = np.abs(picture - expected[0, 0]).max(axis=-1) <= 1
    found = [(y, x) for y, x in zip(*np.nonzero(corner)) if shown_at(y, x)]
    assert look.step == step and len(found) == 1, found  # the whole mask, unscaled, in one place
    assert picture.shape[0] < classes.shape[0] + 100  # title and legend only on top of it


def test_an_unreadable_input_leaves_the_mask_alone_and_says_so(tmp_path):
    out = _output(tmp_path, (64, 64), (32, 32))
    import shutil

    shutil.rmtree(tmp_path / "image.zarr")
    look = build(out, size=32)
    assert look.views[0][1] is None and "not readable" in look.note


def test_an_input_in_its_own_bucket_is_read_with_its_own_options(tmp_path, s3_server):
    """A job's input and output often live in different places with different credentials:
    ``geoseg run``'s report passes the input's, not the output's, to draw the input."""
    import fsspec

    from geoseg.report.html import _quicklook

    _output(tmp_path / "local", (60, 40), (32, 32))  # the image, then copied to the bucket
    url = "s3://geoseg/quicklook/image.zarr"
    fsspec.filesystem("s3", **s3_server).put(str(tmp_path / "local" / "image.zarr"), url,
                                              recursive=True)
    out = str(tmp_path / "out.zarr")
    target = create_output(out, shape=(60, 40), chunks=(32, 32), georef=GeoRef(),
                           class_names=NAMES, class_dtype="uint8", nodata_class=255,
                           attrs={"provenance": {"job": {"input": {"url": url,
                                                                   "variable": "image"}}}})
    target.open_group()["classes"][...] = 1  # not all no-data, which the caption would say
    assert "not readable" in build(out, storage_options={}).note  # the output's options: none
    drawn = build(out, storage_options={}, image_options=s3_server)
    assert drawn.note == "" and drawn.views[0][1] is not None
    picture, why = _quicklook({"output": {"url": out}}, {}, s3_server)  # as the run's report
    assert picture is not None and why == ""


def test_options_beside_a_local_output_are_called_the_output_s_when_ignored(tmp_path, caplog):
    """The quicklook reads the output back: its warning named it the input."""
    out = _output(tmp_path, (64, 64), (32, 32), image=False)
    with caplog.at_level("WARNING", logger="geoseg.io"):
        build(out, size=32, storage_options={"anon": True})
    assert f"output {out} is a local path, so its storage_options are ignored" in caplog.text
    assert "input" not in caplog.text


def test_a_volume_gets_three_orthogonal_slices(tmp_path):
    look = build(_output(tmp_path, (20, 30, 40), (8, 16, 16), image=False), size=16)
    assert [v[0].split()[0] for v in look.views] == ["axial", "coronal", "sagittal"]
    # step 3 (40 / 16 rounded up): z 20 -> 7, y 30 -> 10, x 40 -> 14
    assert [v[2].shape for v in look.views] == [(10, 14), (7, 14), (7, 10)]
    render(look)


@pytest.mark.timeout(60)
def test_memory_stays_far_below_the_raster(tmp_path):
    out = _output(tmp_path, (2048, 2048), (256, 256))  # 4 MiB of classes, 12 MiB of bands
    build(out, size=8)  # imports and caches first: they are no part of the picture's cost
    tracemalloc.start()
    try:
        look = build(out, size=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert look.views[0][2].shape == (128, 128)
    # about 5 MiB (a few chunks in flight); reading the raster whole peaks at 28 MiB
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB: the raster was read whole"


@pytest.mark.timeout(60)
def test_geoseg_quicklook_writes_the_png_with_chosen_bands(tmp_path):
    from typer.testing import CliRunner

    from geoseg.cli import app

    out = _output(tmp_path, (90, 120), (32, 32))
    done = CliRunner().invoke(app, ["quicklook", out, str(tmp_path / "q.png"), "--bands", "3,1",
                                    "--size", "60"])
    assert done.exit_code == 0, done.output
    assert Image.open(tmp_path / "q.png").format == "PNG"
    look = build(out, bands=[3, 1], size=60)
    assert look.views[0][1].shape == (2, 45, 60)  # two bands, shown grey


def test_geoseg_quicklook_of_an_input_or_of_nothing_says_it_takes_an_output(tmp_path):
    zarr.create_array(str(tmp_path / "input.zarr"), data=np.zeros((3, 8, 8), np.uint8))
    png = str(tmp_path / "q.png")
    assert_clean(geoseg("quicklook", str(tmp_path / "input.zarr"), png), 2,
                 f"{tmp_path / 'input.zarr'} is not a geoseg output",
                 "give an output a geoseg run wrote")
    assert_clean(geoseg("quicklook", str(tmp_path / "nope.zarr"), png), 2,
                 f"No geoseg output at {tmp_path / 'nope.zarr'}")
    assert not (tmp_path / "q.png").exists()


def test_geoseg_quicklook_makes_missing_folders_and_replaces_a_file_only_when_asked(tmp_path):
    out = _output(tmp_path, (16, 16), (8, 8), image=False)
    made = geoseg("quicklook", out, str(tmp_path / "new" / "folder" / "q.png"))
    assert made.returncode == 0, made.stderr
    assert Image.open(tmp_path / "new" / "folder" / "q.png").format == "PNG"
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    assert_clean(geoseg("quicklook", out, str(notes)), 2, f"{notes} already exists",
                 "--overwrite")
    assert notes.read_text() == "keep"
    assert geoseg("quicklook", out, str(notes), "--overwrite").returncode == 0
    assert Image.open(notes).format == "PNG"


def test_geoseg_quicklook_writes_a_png_url_with_fsspec_not_as_a_local_folder(tmp_path):
    """PNG was a Path: s3://bucket/q.png became ./s3:/bucket/q.png, a local folder."""
    out = _output(tmp_path, (16, 16), (8, 8), image=False)
    here = tmp_path / "cwd"
    here.mkdir()
    memory = fsspec.filesystem("memory")
    try:
        made = geoseg("quicklook", out, "memory://geoseg-quicklook/q.png", cwd=here)
        assert made.returncode == 0, made.stderr
        assert "wrote memory://geoseg-quicklook/q.png" in made.stderr
        assert Image.open(io.BytesIO(memory.cat_file("/geoseg-quicklook/q.png"))).format == "PNG"
        assert list(here.iterdir()) == []  # no ./memory: folder
    finally:
        if memory.exists("/geoseg-quicklook"):
            memory.rm("/geoseg-quicklook", recursive=True)


def test_geoseg_quicklook_refuses_a_png_url_outside_the_allowed_places(tmp_path):
    out = _output(tmp_path, (16, 16), (8, 8), image=False)
    here = tmp_path / "cwd"
    here.mkdir()
    assert_clean(geoseg("quicklook", out, "ftp://host/q.png", cwd=here), 2,
                 "Output ftp://host/q.png: received scheme ftp://", "GEOSEG_OUTPUT_SCHEMES")
    secret = geoseg("quicklook", out, "s3://AKIA:SuperSecret123@bucket/q.png", cwd=here)
    assert_clean(secret, 2, "Output s3://bucket/q.png: received a URL with credentials")
    assert "SuperSecret123" not in secret.stdout + secret.stderr
    assert list(here.iterdir()) == []  # no ./ftp: or ./s3: folder, none named with the secret


def test_geoseg_quicklook_refuses_a_png_inside_the_output_it_draws(tmp_path):
    """A file written into the output store is an object its run never wrote."""
    out = _output(tmp_path, (16, 16), (8, 8))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    metadata = (tmp_path / "out.zarr" / "zarr.json").read_bytes()
    assert_clean(geoseg("quicklook", out, f"{out}/q.png"), 2,
                 f"PNG {out}/q.png: received a path inside the output store {out}",
                 f"such as {tmp_path / 'out.png'}", "Nothing was written")
    assert_clean(geoseg("quicklook", out, f"{out}/zarr.json", "--overwrite"), 2,
                 "inside the output store")
    image = str(tmp_path / "image.zarr")
    assert_clean(geoseg("quicklook", out, f"{image}/q.png", "--image", image), 2,
                 f"inside the image {image}")
    assert_clean(geoseg("quicklook", out, f"{image}/q.png"), 2,  # the run's input, drawn by default
                 f"inside the run's input {image}")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "out.zarr" / "zarr.json").read_bytes() == metadata


def test_bands_or_an_image_named_that_cannot_be_read_are_an_error_not_a_caption(tmp_path):
    """The run's input may have moved (the mask is drawn alone); what the user names is read
    or refused."""
    out = _output(tmp_path, (40, 40), (32, 32))
    png = tmp_path / "q.png"
    assert_clean(geoseg("quicklook", out, str(png), "--bands", "9,9,9"), 2, "band", "9")
    assert_clean(geoseg("quicklook", out, str(png), "--image", str(tmp_path / "nope.zarr")), 2,
                 str(tmp_path / "nope.zarr"))
    assert not png.exists()


def test_an_image_on_another_grid_is_never_drawn_under_the_mask(tmp_path):
    """Another size, or the same size elsewhere on the map: named by --image, an error naming
    the difference; the run's input grown since, the mask alone with a caption saying why."""
    import rasterio
    from rasterio.transform import from_origin

    from tests.conftest import write_geotiff  # on the grid _output gives the mask

    out = _output(tmp_path, (40, 40), (32, 32))
    png = tmp_path / "q.png"
    image = textured_image(40, 40)
    elsewhere = str(tmp_path / "far.tif")
    with rasterio.open(elsewhere, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(1e5, 4.5e6, 10, 10)) as dst:
        dst.write(image)
    bigger = write_geotiff(tmp_path / "big.tif", textured_image(50, 40))
    assert_clean(geoseg("quicklook", out, str(png), "--image", elsewhere), 2,
                 "is not on the output's grid (transform", "Give the raster the job read")
    assert_clean(geoseg("quicklook", out, str(png), "--image", bigger), 2,
                 "is not on the output's grid (shape (50, 40) against (40, 40)")
    assert not png.exists()
    same = write_geotiff(tmp_path / "same.tif", image)
    assert build(out, image_url=same, size=40).views[0][1] is not None

    zarr.open_group(str(tmp_path / "image.zarr"), mode="w").create_array(
        "image", shape=(3, 50, 40), dtype="uint8", chunks=(3, 32, 32))
    look = build(out, size=40)
    assert look.views[0][1] is None and "is on another grid now (shape (50, 40)" in look.note


def test_an_output_without_class_colours_is_drawn_in_the_colours_its_cog_gets(tmp_path):
    """A mask geoseg adopted names no colours: the quicklook, the report and the exported colour
    map must still agree on which colour is which class."""
    import rasterio

    from geoseg.io.exports import export_cog

    target = create_output(str(tmp_path / "out.zarr"), shape=(40, 40), chunks=(40, 40),
                           georef=GeoRef.from_crs("EPSG:32618", (10, 0, 5e5, 0, -10, 4.5e6)),
                           class_names=NAMES, class_dtype="uint8", nodata_class=255,
                           attrs={"status": "running"})
    target.open_group()["classes"][...] = np.arange(40 * 40).reshape(40, 40) % 3
    target.finalize({"status": "complete"})
    look = build(target.url, size=40)
    export_cog(target.url, str(tmp_path / "m.tif"))
    with rasterio.open(tmp_path / "m.tif") as cog:
        exported = [cog.colormap(1)[i][:3] for i in range(3)]
    assert [tuple(c) for c in look.colors.tolist()] == exported
    assert len(set(exported)) == 3


def test_the_caption_and_the_command_warn_of_an_unfinished_or_damaged_output(tmp_path,
                                                                            cluster_address):
    """Regions an output lacks are drawn as no-data: the picture must not pass for the run's."""
    from geoseg.io.output import OutputTarget
    from geoseg.jobs import JobSpec, run

    write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1, seed=2), chunks=(32, 32))
    out = tmp_path / "out.zarr"
    run(JobSpec.from_dict({"input": {"url": str(tmp_path / "in.zarr")},
                           "model": {"method": "threshold", "params": {"thresholds": [128]}},
                           "output": {"url": str(out), "chunks": [32, 32]}}),
        scheduler=cluster_address)
    assert build(str(out), size=32).note == ""  # complete and whole

    (out / "classes" / "c" / "1" / "0").unlink()
    png = tmp_path / "q.png"
    said = geoseg("quicklook", str(out), str(png))
    assert said.returncode == 0 and png.exists(), said.stderr
    assert ("warning: damaged: 1 task region(s) lost stored chunks since their run recorded them "
            "(1.0); drawn as no-data (geoseg verify names them)") in " ".join(said.stderr.split())

    OutputTarget(str(out)).finalize({"status": "interrupted"})
    (out / "manifest_done" / "c" / "1" / "1").unlink()
    assert build(str(out), size=32).note == ("not finished (status interrupted): 3 of 4 task "
                                             "regions written, the rest drawn as no-data")


def test_a_classes_chunk_that_does_not_decode_is_drawn_as_no_data_and_named(tmp_path):
    """The README's quicklook warns of lost regions: a chunk whose bytes no longer decode is
    one, named by its storage key and window, as ``geoseg export`` names it; the rest is drawn."""
    from tests.conftest import output_with_a_bad_chunk

    out, whole = output_with_a_bad_chunk(tmp_path)

    look = build(str(out), size=64)
    drawn = look.views[0][2]
    assert (drawn[:32, 32:] == 255).all()  # the nodata class: drawn clear
    np.testing.assert_array_equal(drawn[:, :32], whole[:, :32])
    np.testing.assert_array_equal(drawn[32:], whole[32:])
    assert look.note.startswith("undecodable: 1 stored chunk(s) of classes do not decode "
                                "(classes/c/0/1 at y 0:32, x 32:64); drawn as no-data")

    png = tmp_path / "q.png"
    said = geoseg("quicklook", str(out), str(png))
    assert said.returncode == 0 and Image.open(png).format == "PNG", said.stderr
    assert "Traceback" not in said.stderr and "internal error" not in said.stderr
    assert "warning: undecodable: 1 stored chunk(s) of classes do not decode (classes/c/0/1 " \
           "at y 0:32, x 32:64)" in " ".join(said.stderr.split())


def test_undecodable_chunks_of_a_volume_are_named_once_across_its_slices(tmp_path):
    out = _output(tmp_path, (20, 30, 40), (10, 16, 16), image=False)
    (tmp_path / "out.zarr" / "classes" / "c" / "1" / "0" / "1").write_bytes(b"garbage")
    look = build(out, size=40)  # the cuts z 10, y 15 and x 20 all cross that chunk
    assert look.note.count("classes/c/1/0/1") == 1
    assert "1 stored chunk(s)" in look.note and "z 10:20, y 0:16, x 16:32" in look.note
    axial, coronal, sagittal = (v[2] for v in look.views)
    assert (axial[:16, 16:32] == 255).all() and (axial[16:] != 255).all()
    assert (coronal[10:, 16:32] == 255).all() and (coronal[:10] != 255).all()
    assert (sagittal[10:, :16] == 255).all() and (sagittal[:10] != 255).all()


@pytest.mark.parametrize("step", [1, 3, 7])
def test_sampled_planes_are_the_strided_array(tmp_path, step):
    out = _output(tmp_path, (20, 30, 41), (6, 7, 16), image=False)
    whole = zarr.open_group(out, mode="r")["classes"][:]
    source = _classes_source(OutputTarget(out))
    for cut in [(4, slice(None), slice(None)), (slice(None), 13, slice(None)),
                (slice(None), slice(None), 40)]:
        plane, bad = sampled(source, cut, step, 255)
        expected = whole[cut][::step, ::step]
        assert bad == [] and plane.shape == expected.shape
        np.testing.assert_array_equal(plane, expected)


def test_a_background_with_nan_and_infinities_is_stretched_by_its_finite_values():
    """np.percentile over inf warned "invalid value encountered in subtract" on stderr, and
    one inf made the whole band's stretch NaN."""
    import warnings

    from geoseg.report.quicklook import stretch

    band = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    odd = band.copy()
    odd[0, 0, :3] = [np.inf, -np.inf, np.nan]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shown = stretch(odd)
    finite = odd[np.isfinite(odd)]
    lo, hi = np.percentile(finite, [2, 98])
    expected = np.clip((odd[0] - lo) / (hi - lo), 0, 1)
    assert np.isfinite(shown).all() and shown.min() >= 0 and shown.max() <= 1
    np.testing.assert_allclose(shown[1:, :, 0], expected[1:], rtol=1e-6)  # as numpy's percentiles
    assert shown[0, 0, 0] == 1 and shown[0, 1, 0] == 0 and shown[0, 2, 0] == 0


def test_a_finely_chunked_input_is_read_for_the_picture_in_few_windows(tmp_path, monkeypatch):
    """4 x 4-pixel input chunks: one read per stored chunk (4,096 here) made a run's report take
    several times the job; whole stored chunks of 512 pixels or more are read at once."""
    from geoseg.io.sources import ZarrSource

    image = textured_image(256, 256)
    attrs = {"provenance": {"job": {"input": {"url": write_zarr(tmp_path / "in.zarr", image,
                                                                chunks=(4, 4))}}}}
    target = create_output(str(tmp_path / "out.zarr"), shape=(256, 256), chunks=(128, 128),
                           georef=GeoRef(), class_names=NAMES, class_dtype="uint8",
                           nodata_class=255, attrs=attrs)
    target.open_group()["classes"][...] = 1
    reads = []
    original = ZarrSource.read
    monkeypatch.setattr(ZarrSource, "read", lambda self, window: reads.append(self.url)
                        or original(self, window))
    look = build(str(tmp_path / "out.zarr"))
    assert reads.count(str(tmp_path / "in.zarr")) == 1, len(reads)
    np.testing.assert_array_equal(look.views[0][1], image[:, ::look.step, ::look.step])
