"""A quicklook reads no more than it draws, whatever ``--size`` asks, and ``--size`` past what
it draws is refused; a picture of nothing but no-data says so, in its caption and on stderr."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output
from geoseg.report.quicklook import MAX_SIZE, build, display_size, render
from tests.cli import geoseg
from tests.conftest import write_geotiff
from tests.test_errors_cli import assert_clean

NAMES = ["water", "land"]


def long_output(tmp_path, width: int = 5000) -> str:
    """A real 16 x ``width`` output of classes 0 and 1, in chunks of 16 x 1024."""
    url = str(tmp_path / "out.zarr")
    target = create_output(url, shape=(16, width), chunks=(16, 1024), georef=GeoRef(),
                           class_names=NAMES, class_dtype="uint8", nodata_class=255)
    target.open_group()["classes"][...] = np.arange(16 * width).reshape(16, width) % 2
    return url


def test_a_size_past_the_picture_reads_no_more_than_the_picture_draws(tmp_path):
    """--size 100000 read the output with stride 1 (a 6000 x 6000 one whole: 5 GB) for a picture
    capped at 2048 a side: the stride now comes from the size drawn."""
    out = long_output(tmp_path)
    asked, most = build(out, size=100_000), build(out, size=MAX_SIZE)
    assert asked.step == most.step == 3  # 5000 / 2048, rounded up: every third pixel read
    classes = asked.views[0][2]
    assert classes.shape == (6, 1667) and max(classes.shape) <= MAX_SIZE
    assert display_size(classes.shape) == classes.shape  # every pixel read is drawn, unshrunk
    np.testing.assert_array_equal(classes, most.views[0][2])


def test_geoseg_quicklook_refuses_a_size_it_would_not_draw_and_says_its_maximum(tmp_path):
    out = long_output(tmp_path)
    png = tmp_path / "q.png"
    assert_clean(geoseg("quicklook", out, str(png), "--size", "100000"), 2,
                 f"received 100000; expected at most {MAX_SIZE} pixels",
                 f"Give --size {MAX_SIZE} or less")
    assert not png.exists()
    helped = geoseg("quicklook", "--help")
    assert f"8 to {MAX_SIZE}" in " ".join(helped.stdout.split()), helped.stdout
    drawn = geoseg("quicklook", out, str(png), "--size", str(MAX_SIZE))
    assert drawn.returncode == 0, drawn.stderr
    assert Image.open(png).width <= MAX_SIZE + 100  # the mask's 1667 pixels and the margins


def test_an_all_no_data_output_says_so_in_its_caption_and_on_stderr(tmp_path):
    """A real run over an input that is all nodata: every output pixel is the no-data class,
    and the quicklook was a black square without a word."""
    from geoseg.jobs import JobSpec, run

    image = write_geotiff(tmp_path / "in.tif", np.zeros((1, 128, 128), np.float32), nodata=0)
    out = str(tmp_path / "out.zarr")
    run(JobSpec.from_dict({"input": {"url": image},
                           "model": {"method": "threshold", "params": {"thresholds": [0.5]}},
                           "output": {"url": out}, "cluster": {"kind": "threads"},
                           "runs_dir": str(tmp_path / "runs")}))
    look = build(out)
    assert (look.views[0][2] == 255).all() and look.nodata == 255
    assert look.note == ("no data: every sampled pixel is the no-data class 255, so no class is "
                         "drawn; check the input's nodata value and its coverage")
    captioned = Image.open(io.BytesIO(render(look)))
    silent = Image.open(io.BytesIO(render(dataclasses.replace(look, note=""))))
    assert captioned.height == silent.height + 24  # the caption's line under the title

    said = geoseg("quicklook", out, str(tmp_path / "q.png"))
    assert said.returncode == 0, said.stderr
    assert "warning: no data: every sampled pixel is the no-data class 255" in \
        " ".join(said.stderr.split())


def test_nearly_no_data_is_said_with_its_share_and_a_little_is_not(tmp_path):
    def output(name: str, classified: int) -> str:
        url = str(tmp_path / name)
        target = create_output(url, shape=(100, 100), chunks=(50, 50), georef=GeoRef(),
                               class_names=NAMES, class_dtype="uint8", nodata_class=255)
        classes = np.full(100 * 100, 255, np.uint8)
        classes[:classified] = 1
        target.open_group()["classes"][...] = classes.reshape(100, 100)
        return url

    assert build(output("few.zarr", 5), size=100).note.split("; ")[0] == (
        "nearly no data: 99.9% of the sampled pixels are the no-data class 255, so almost no "
        "class is drawn")
    assert "no data" not in build(output("some.zarr", 200), size=100).note  # 98%: a picture
