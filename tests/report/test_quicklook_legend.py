"""The quicklook's legend: the classes the picture shows, a bounded number of them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from geoseg.errors import InstanceError
from geoseg.instances.adopt import adopt_mask
from geoseg.instances.stage import InstanceSettings, routes
from geoseg.io.georef import GeoRef
from geoseg.io.output import OutputTarget, create_output
from geoseg.report.quicklook import (
    LEGEND_MAX,
    Quicklook,
    _handles,
    _Layout,
    build,
    class_colors,
    legend,
    render,
)
from tests.conftest import write_geotiff


def _binary_mask() -> np.ndarray:
    """0/1 with a strip of nodata 255, as GIS tools write masks."""
    mask = np.zeros((48, 64), np.uint8)
    mask[8:30, 10:40] = 1
    mask[:, :6] = 255
    return mask


def _height(look: Quicklook) -> int:
    return Image.open(io.BytesIO(render(look))).height


def _output(path, classes: np.ndarray, names: list[str]) -> str:
    target = create_output(str(path), shape=classes.shape, chunks=(32, 32), georef=GeoRef(),
                           class_names=names, class_dtype="uint8", nodata_class=255)
    target.open_group()["classes"][...] = classes
    return str(path)


def test_an_adopted_0_1_geotiff_lists_its_two_classes_at_the_height_of_two_classes(tmp_path):
    mask = _binary_mask()
    src = write_geotiff(tmp_path / "mask.tif", mask[None], nodata=255)
    adopted = build(str(adopt_mask(src, str(tmp_path / "adopted.zarr")).url))
    assert adopted.names == ("0", "1") and adopted.nodata == 255  # the nodata is no class
    assert legend(adopted) == ((0, 1), 0)
    assert [h.get_label() for h in _handles(adopted)] == ["0", "1"]

    two = build(_output(tmp_path / "two.zarr", mask, ["0", "1"]))
    assert two.note == adopted.note  # both: the mask alone, so one caption's height
    assert _height(adopted) == _height(two)


def test_the_legend_names_the_most_frequent_classes_up_to_the_cap_and_counts_the_rest(tmp_path):
    rng = np.random.default_rng(5)
    ids = np.arange(40) * 3 + 1  # 40 classes present of 150 named, the rest absent
    weights = np.arange(1, 41, dtype=np.float64)
    classes = rng.choice(ids, size=(90, 120), p=weights / weights.sum()).astype(np.uint8)
    classes[:40] = 255  # nodata: the most frequent of all, never listed
    names = [f"class {i}" for i in range(150)]
    look = build(_output(tmp_path / "many.zarr", classes, names))
    assert look.step == 1  # the views hold every pixel: np.unique's counts are theirs

    values, counts = np.unique(classes[classes != 255], return_counts=True)
    ranked = sorted(zip(-counts, values))  # most frequent first, ties in id order
    assert len(values) == 40
    expected = tuple(int(v) for _, v in ranked[:LEGEND_MAX])
    assert legend(look) == (expected, 40 - LEGEND_MAX)

    handles = _handles(look)
    assert [h.get_label() for h in handles] == [names[i] for i in expected] + [
        f"+ {40 - LEGEND_MAX} more classes"]
    for i, handle in zip(expected, handles):
        np.testing.assert_allclose(handle.get_facecolor()[:3], look.colors[i] / 255)
    labels = [h.get_label() for h in handles]
    assert _height(look) == _Layout.of([classes.shape], labels, bool(look.note)).height


def test_only_named_classes_in_the_views_are_listed_in_id_order():
    """An id without a name (drawn clear) and the nodata class are never listed; a class
    named but absent from every view neither."""
    views = (("axial", None, np.array([[3, 3, 1], [255, 9, 3]], np.uint8)),
             ("coronal", None, np.array([[0, 3]], np.uint8)))
    look = Quicklook(views, ("a", "b", "c", "d", "e"), class_colors(None, 5), 255, 1)
    assert legend(look) == ((0, 1, 3), 0)
    assert legend(look, most=2) == ((3, 0), 1)  # 3 is the most frequent; 0 before 1 on a tie
    assert [h.get_label() for h in _handles(look)] == ["a", "b", "d"]


def test_an_adopted_mask_keeps_its_ids_and_its_declared_nodata_is_no_class(tmp_path):
    """A nodata above the classes made every id up to it a class: 256 names for a 0/1 mask
    (65,536 for a uint16 one declaring 65535)."""
    src = write_geotiff(tmp_path / "mask.tif", _binary_mask()[None], nodata=255)
    attrs = OutputTarget(str(adopt_mask(src, str(tmp_path / "a.zarr")).url)).attrs()
    names = attrs["class_names"]
    assert names == ["0", "1"] and attrs["nodata_class"] == 255
    picked = routes(InstanceSettings(classes=(1, "1")), names, 255)
    assert picked[0].classes == (1, 1)
    for asked in ("roads", 255, "nodata"):
        with pytest.raises(InstanceError) as refused:
            routes(InstanceSettings(classes=(asked,)), names, 255)
        assert str(refused.value).endswith("expected an id from 0 to 1: this mask has no class "
                                           "names, give class ids.")

    undeclared = write_geotiff(tmp_path / "plain.tif", np.ones((1, 16, 16), np.uint8), nodata=None)
    plain = OutputTarget(str(adopt_mask(undeclared, str(tmp_path / "p.zarr")).url)).attrs()
    assert plain["class_names"] == ["0", "1"]  # no nodata declared: no class named so


def test_the_titles_of_narrow_volume_slices_do_not_run_into_each_other():
    """Three slices 40 pixels wide under titles twice as long: each title's width is the view's
    slot, so neighbouring titles stay apart."""
    titles = ("axial z=20", "coronal y=25", "sagittal x=30")
    layout = _Layout.of([(50, 40), (40, 40), (40, 50)], ["a", "b"], False, titles)
    centres = [(left + width / 2) * layout.width for left, _, width, _ in layout.boxes()]
    half = [7 * len(t) / 2 for t in titles]  # what a title takes at ~7 px a character
    for i in range(2):
        assert centres[i + 1] - centres[i] >= half[i] + half[i + 1]
    assert all(0 <= left and left + width <= 1 for left, _, width, _ in layout.boxes())


@pytest.mark.parametrize("name", ["road $\\frac{x$", "US$ 5 and $x_2$", "$"])
def test_a_class_name_with_dollars_is_drawn_as_written_not_as_mathematics(tmp_path, name):
    """A name holding '$' was read as mathematical notation: drawn wrongly, or (unbalanced)
    failing the quicklook and the report's confusion figure."""
    from matplotlib import cbook

    from geoseg.report.html import confusion_figure
    from geoseg.report.quicklook import legend_handles, literal

    assert not cbook.is_math_text(literal(name))
    handles = legend_handles([0, 1], 0, ["water", name], np.zeros((2, 3)))
    assert handles[1].get_label() == literal(name)
    assert confusion_figure([[3, 1], [0, 2]], ["water", name])  # drawn, as a PNG


def test_a_quicklook_of_classes_named_with_dollars_is_drawn(tmp_path):
    from geoseg.report.quicklook import build, render

    url = str(tmp_path / "out.zarr")
    target = create_output(url, shape=(32, 32), chunks=(16, 16), georef=GeoRef(),
                           class_names=["road $\\frac{x$", "US$"], class_dtype="uint8",
                           nodata_class=255)
    target.open_group()["classes"][...] = np.eye(32, dtype=np.uint8)
    picture = Image.open(io.BytesIO(render(build(url, size=32))))
    assert picture.size[0] >= 32
