"""A volume's quicklook is drawn in the proportions of its voxel spacing; a white class's
legend swatch shows on the white background."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from geoseg.io.georef import GeoRef
from geoseg.io.nifti import voxel_affine
from geoseg.io.output import create_output
from geoseg.report.quicklook import Quicklook, build, class_colors, legend_handles, render

RED, WHITE = [255, 0, 0], [255, 255, 255]


def volume_output(tmp_path, spacing_ijk: tuple[float, float, float]) -> str:
    """An output of (z, y, x) = (8, 24, 32) voxels, all of one red class, whose voxel affine has
    NIfTI spacing ``spacing_ijk`` (x, y, z)."""
    georef = GeoRef.from_voxel_affine(voxel_affine(np.diag([*spacing_ijk, 1.0])), units="mm")
    url = str(tmp_path / "out.zarr")
    target = create_output(url, shape=(8, 24, 32), chunks=(4, 16, 16), georef=georef,
                           class_names=["background", "bone"], class_dtype="uint8",
                           nodata_class=255, attrs={"class_colors": [WHITE, RED]})
    target.open_group()["classes"][...] = 1
    return url


def red_boxes(png: bytes) -> list[tuple[int, int]]:
    """``(height, width)`` of each red region of the picture, left to right."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    labels, _ = ndimage.label(red)
    boxes = sorted(ndimage.find_objects(labels), key=lambda box: box[1].start)
    return [(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes
            if b[0].stop < red.shape[0] - 30]  # not the legend's swatch, in the last row


def test_anisotropic_slices_are_drawn_in_physical_proportions(tmp_path):
    look = build(volume_output(tmp_path, (0.7, 0.7, 2.5)))
    np.testing.assert_allclose(look.aspects, (1.0, 2.5 / 0.7, 2.5 / 0.7))
    axial, coronal, sagittal = red_boxes(render(look))
    assert abs(axial[0] - 24) <= 1 and abs(axial[1] - 32) <= 1  # square voxels: as sampled
    assert abs(coronal[0] - 8 * 2.5 / 0.7) <= 1.5 and abs(coronal[1] - 32) <= 1
    assert abs(sagittal[0] - 8 * 2.5 / 0.7) <= 1.5 and abs(sagittal[1] - 24) <= 1


def test_isotropic_slices_stay_one_picture_pixel_per_sampled_pixel(tmp_path):
    boxes = red_boxes(render(build(volume_output(tmp_path, (1.0, 1.0, 1.0)))))
    assert [(abs(h - eh) <= 1 and abs(w - ew) <= 1) for (h, w), (eh, ew) in
            zip(boxes, [(24, 32), (8, 32), (8, 24)])] == [True] * 3


def test_a_white_class_swatch_is_outlined():
    colors = class_colors([WHITE], 1)
    (swatch,) = legend_handles([0], 0, ["bone"], colors / 255)
    assert tuple(swatch.get_facecolor()[:3]) == (1.0, 1.0, 1.0)
    edge = swatch.get_edgecolor()
    assert edge[3] > 0 and max(edge[:3]) < 0.5 and swatch.get_linewidth() > 0
    look = Quicklook((("", None, np.zeros((40, 60), np.uint8)),), ("bone",), colors, None, 1)
    rgb = np.asarray(Image.open(io.BytesIO(render(look))).convert("RGB")).astype(int)
    legend = rgb[-30:]  # the legend's row, under the view
    outline = (np.abs(legend - 0x55) <= 40).all(axis=-1) & (np.ptp(legend, axis=-1) == 0)
    assert outline.sum(axis=1).max() >= 15  # a swatch's top or bottom edge: a grey line
