"""Tests for the synthetic scene generator (geoseg.synth)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from geoseg.synth import SCENE_CLASSES, Scene, make_scene

WATER, VEGETATION, BARE_SOIL, ROAD, BUILDING = range(5)


@pytest.fixture(scope="module")
def small() -> Scene:
    return make_scene(256, 300, seed=3)


@pytest.fixture(scope="module")
def medium() -> Scene:
    return make_scene(512, 512, seed=0)


def _rgb(scene: Scene, cls: int) -> np.ndarray:
    """``(3, N)`` int pixel values of one class."""
    return scene.image[:, scene.labels == cls].astype(int)


def test_class_table() -> None:
    names = [c.name for c in SCENE_CLASSES]
    assert names == ["water", "vegetation", "bare_soil", "road", "building"]
    colors = [c.color for c in SCENE_CLASSES]
    assert len(set(colors)) == 5
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors)


def test_shapes_and_dtypes(small: Scene) -> None:
    assert small.image.shape == (3, 256, 300)
    assert small.image.dtype == np.uint8
    assert small.labels.shape == (256, 300)
    assert small.labels.dtype == np.uint8
    assert small.labels.max() <= 4
    assert small.crs == "EPSG:32618"
    assert small.bands == ("red", "green", "blue")
    assert small.classes == SCENE_CLASSES
    assert (small.height, small.width) == (256, 300)


@pytest.mark.parametrize("shape", [(16, 16), (17, 41), (40, 16), (33, 129)])
def test_odd_and_tiny_sizes(shape: tuple[int, int]) -> None:
    scene = make_scene(*shape, seed=5)
    assert scene.image.shape == (3, *shape)
    assert scene.labels.shape == shape
    assert scene.image.min() >= 1


@pytest.mark.parametrize("args", [(15, 100), (100, 8), (0, 0)])
def test_too_small_rejected(args: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        make_scene(*args)


def test_negative_seed_rejected() -> None:
    with pytest.raises(ValueError):
        make_scene(32, 32, seed=-1)


def test_deterministic_for_a_seed(small: Scene) -> None:
    again = make_scene(256, 300, seed=3)
    np.testing.assert_array_equal(again.image, small.image)
    np.testing.assert_array_equal(again.labels, small.labels)
    assert again.transform == small.transform


def test_different_seeds_differ(small: Scene) -> None:
    other = make_scene(256, 300, seed=4)
    assert np.mean(other.labels != small.labels) > 0.2
    assert np.mean(np.abs(other.image.astype(int) - small.image.astype(int))) > 10
    assert other.transform != small.transform


def test_transform_is_north_up_10m(small: Scene) -> None:
    a, b, c, d, e, f = small.transform
    assert (a, b, d, e) == (10.0, 0.0, 0.0, -10.0)
    # A plausible UTM 18N origin: easting inside the zone, northern hemisphere.
    assert 166_000 < c < 834_000 and 0 < f < 9_400_000


def test_transform_usable_by_rasterio(small: Scene) -> None:
    rasterio = pytest.importorskip("rasterio")
    affine = rasterio.Affine(*small.transform)
    x0, y0 = affine @ (0, 0)
    x1, y1 = affine @ (small.width, small.height)
    assert x1 - x0 == pytest.approx(10.0 * small.width)
    assert y0 - y1 == pytest.approx(10.0 * small.height)


def test_every_class_present(medium: Scene) -> None:
    counts = np.bincount(medium.labels.ravel(), minlength=5)
    assert len(counts) == 5
    fractions = counts / medium.labels.size
    assert fractions.min() > 0.003, fractions
    assert 0.05 < fractions[WATER] < 0.35
    assert fractions[VEGETATION] > 0.3


def test_no_zero_pixels(medium: Scene, small: Scene) -> None:
    assert medium.image.min() >= 1
    assert small.image.min() >= 1


def _local_texture(scene: Scene, cls: int) -> float:
    """Median std of the (lightly denoised) green band in 15 x 15 windows inside `cls`."""
    green = ndimage.uniform_filter(scene.image[1].astype(np.float32), 3)
    mean = ndimage.uniform_filter(green, 15)
    var = ndimage.uniform_filter(green * green, 15) - mean * mean
    inside = ndimage.binary_erosion(scene.labels == cls, np.ones((15, 15), bool))
    return float(np.median(np.sqrt(np.maximum(var, 0.0))[inside]))


def test_classes_are_textured_not_flat(medium: Scene) -> None:
    # Sensor noise alone leaves about 1.7 DN after the 3 x 3 denoising.
    assert _local_texture(medium, VEGETATION) > 3.0
    assert _local_texture(medium, BARE_SOIL) > 3.0
    # And regions vary at larger scales too (parcels, forest vs grass).
    for cls in (VEGETATION, BARE_SOIL):
        assert _rgb(medium, cls).std(axis=1).min() > 8, SCENE_CLASSES[cls].name


def test_class_mean_colours_separate(medium: Scene) -> None:
    means = np.array([_rgb(medium, k).mean(axis=1) for k in range(5)])
    dist = np.linalg.norm(means[:, None] - means[None, :], axis=-1)
    ground = [WATER, VEGETATION, BARE_SOIL, ROAD]
    assert dist[np.ix_(ground, ground)][~np.eye(4, dtype=bool)].min() > 30
    # Buildings mix roof colours, so their mean is closer to the others.
    assert dist[BUILDING, ground].min() > 12


def test_colours_match_labels(medium: Scene) -> None:
    water, veg, soil, road = (_rgb(medium, k) for k in (WATER, VEGETATION, BARE_SOIL, ROAD))
    # Water is bluer than vegetation and dark.
    assert (water[2] - water[0]).mean() > (veg[2] - veg[0]).mean() + 30
    assert np.mean(water[2] > water[0]) > 0.95
    assert water.mean() < veg.mean()
    # Vegetation is green, soil brown (red > green > blue), roads neutral grey.
    assert np.mean(veg[1] > veg[0]) > 0.95
    assert np.mean((soil[0] > soil[1]) & (soil[1] > soil[2])) > 0.85
    assert np.mean(np.abs(road[0] - road[2]) < 15) > 0.85


def test_roofs_differ_from_soil(medium: Scene) -> None:
    soil, roofs = _rgb(medium, BARE_SOIL), _rgb(medium, BUILDING)
    soil_rg, roof_rg = soil[0] - soil[1], roofs[0] - roofs[1]
    # Soil is moderately reddish; roofs are either tiles (very red) or grey.
    assert np.mean((soil_rg > 12) & (soil_rg < 55)) > 0.85
    assert np.mean((roof_rg <= 12) | (roof_rg >= 55)) > 0.85


def test_labels_aligned_with_image(medium: Scene) -> None:
    """Nearest-mean-colour classification works on the labels, not on shifted ones."""
    pixels = medium.image.reshape(3, -1).T.astype(np.float32)

    def accuracy(labels: np.ndarray) -> float:
        means = np.array([pixels[labels.ravel() == k].mean(axis=0) for k in range(5)])
        dist = ((pixels[:, None, :] - means[None, :, :]) ** 2).sum(axis=-1)
        return float(np.mean(dist.argmin(axis=1) == labels.ravel()))

    aligned = accuracy(medium.labels)
    shifted = accuracy(np.roll(medium.labels, (37, 53), axis=(0, 1)))
    assert aligned > 0.65
    assert aligned > shifted + 0.15


def test_roads_are_thin_lines(medium: Scene) -> None:
    road = medium.labels == ROAD
    # Nothing survives a 9 x 9 erosion: roads are at most ~7 px wide ...
    assert ndimage.binary_erosion(road, np.ones((9, 9), bool)).sum() <= 0.01 * road.sum()
    # ... but most are wider than 2 px, and they are long, connected lines.
    assert ndimage.binary_erosion(road, np.ones((3, 3), bool)).sum() > 0.1 * road.sum()
    lab, count = ndimage.label(road)
    sizes = np.sort(ndimage.sum(road, lab, range(1, count + 1)))[::-1]
    assert sizes[0] > 1000


def test_buildings_are_small_rectangles_near_roads(medium: Scene) -> None:
    building = medium.labels == BUILDING
    lab, count = ndimage.label(building)
    assert count >= 10
    extents = [max(s.stop - s.start for s in box) for box in ndimage.find_objects(lab)]
    assert max(extents) <= 44  # 30 px sides, possibly rotated 45 degrees
    areas = ndimage.sum(building, lab, range(1, count + 1))
    assert areas.min() >= 12
    dist_to_road = ndimage.distance_transform_edt(medium.labels != ROAD)
    assert dist_to_road[building].mean() < 30
