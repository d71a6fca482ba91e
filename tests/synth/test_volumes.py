"""Tests for the synthetic volume generator (geoseg.synth.volumes)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from geoseg.synth import volumes
from geoseg.synth.volumes import VOLUME_CLASSES, Volume, make_volume

BACKGROUND, ORGAN_A, ORGAN_B, LESION = range(4)
SHAPE = (48, 96, 96)


@pytest.fixture(scope="module")
def vol() -> Volume:
    return make_volume(*SHAPE, seed=0)


def _noise_sigma(vol: Volume) -> float:
    """Noise level from neighbouring-voxel differences deep inside organ_a."""
    inside = ndimage.binary_erosion(vol.labels == ORGAN_A, iterations=2)
    pairs = inside[:, :, 1:] & inside[:, :, :-1]
    diffs = np.diff(vol.image[0], axis=2)[pairs]
    return float(diffs.std() / np.sqrt(2.0))


def _shell(labels: np.ndarray, cls: int) -> np.ndarray:
    """Background voxels within 3 voxels of class `cls`."""
    return ndimage.binary_dilation(labels == cls, iterations=3) & (labels == BACKGROUND)


def _bias_trend(vol: Volume) -> float:
    """Intensity ratio across organ_a (5th to 95th percentile) of a log-linear fit."""
    inside = ndimage.binary_erosion(vol.labels == ORGAN_A, iterations=2)
    idx = np.nonzero(inside)
    coords = np.stack([i * s for i, s in zip(idx, vol.spacing)] + [np.ones(idx[0].size)], axis=1)
    coef, *_ = np.linalg.lstsq(coords, np.log(vol.image[0][inside]), rcond=None)
    trend = coords[:, :3] @ coef[:3]
    lo, hi = np.quantile(trend, [0.05, 0.95])
    return float(np.exp(hi - lo))


def _extent(mask: np.ndarray, axis: int) -> int:
    """Number of indices along `axis` where `mask` has a voxel."""
    other = tuple(i for i in range(3) if i != axis)
    return int(np.count_nonzero(mask.any(axis=other)))


def _centroid_world(vol: Volume, cls: int) -> np.ndarray:
    """RAS+ centroid (mm) of a class, through the affine (indices in x, y, z order)."""
    z, y, x = np.nonzero(vol.labels == cls)
    index = np.array([x.mean(), y.mean(), z.mean(), 1.0])
    return (vol.affine @ index)[:3]


def test_class_table() -> None:
    names = [c.name for c in VOLUME_CLASSES]
    assert names == ["background", "organ_a", "organ_b", "lesion"]
    assert len({c.color for c in VOLUME_CLASSES}) == 4


def test_shapes_and_dtypes(vol: Volume) -> None:
    assert vol.image.shape == (1, *SHAPE)
    assert vol.image.dtype == np.float32
    assert vol.labels.shape == SHAPE
    assert vol.labels.dtype == np.uint8
    assert vol.shape == SHAPE
    assert vol.spacing == (2.5, 1.0, 1.0)
    assert vol.affine.shape == (4, 4) and vol.affine.dtype == np.float64
    assert vol.classes == VOLUME_CLASSES
    assert np.isfinite(vol.image).all()
    assert vol.image.min() >= 0.0  # magnitude (Rician) image
    assert set(np.unique(vol.labels)) <= {0, 1, 2, 3}


def test_deterministic_per_seed(vol: Volume) -> None:
    again = make_volume(*SHAPE, seed=0)
    np.testing.assert_array_equal(again.image, vol.image)
    np.testing.assert_array_equal(again.labels, vol.labels)
    other = make_volume(*SHAPE, seed=1)
    changed = np.mean(other.labels != vol.labels)
    assert changed > 0.005
    assert not np.allclose(other.image, vol.image)


def test_every_class_present_with_plausible_fractions(vol: Volume) -> None:
    fractions = np.bincount(vol.labels.ravel(), minlength=4) / vol.labels.size
    assert 0.85 < fractions[BACKGROUND] < 0.98
    assert 0.02 < fractions[ORGAN_A] < 0.12
    assert 0.001 < fractions[ORGAN_B] < fractions[ORGAN_A]
    assert 0.0002 < fractions[LESION] < fractions[ORGAN_A]
    # organ_b is a pair: two separate components of similar size
    parts, count = ndimage.label(vol.labels == ORGAN_B)
    sizes = np.sort(np.bincount(parts.ravel())[1:])[::-1]
    assert count >= 2 and sizes[1] > 0.3 * sizes[0]


def test_lesions_lie_inside_organ_a(vol: Volume) -> None:
    lesion = vol.labels == LESION
    host = ndimage.binary_dilation(lesion) & ~lesion  # the voxels touching a lesion
    hosts = np.bincount(vol.labels[host], minlength=4)
    assert hosts[ORGAN_A] == hosts.sum()


def test_body_outline_and_dark_air(vol: Volume) -> None:
    image = vol.image[0]
    corners = image[:, :4, :4]
    body = image[vol.labels == ORGAN_A]
    assert corners.mean() < 0.1 * body.mean()
    # the middle slice has a body outline: most of the central row is tissue
    row = image[SHAPE[0] // 2, SHAPE[1] // 2]
    assert np.mean(row > 0.15) > 0.6
    assert row[:2].max() < 0.15 and row[-2:].max() < 0.15


def test_intensities_separate_classes(vol: Volume) -> None:
    image, labels = vol.image[0], vol.labels
    sigma = _noise_sigma(vol)
    assert 0.005 < sigma < 0.08
    means = {cls: float(image[labels == cls].mean()) for cls in (ORGAN_A, ORGAN_B, LESION)}
    near_a = float(image[_shell(labels, ORGAN_A)].mean())
    assert abs(means[ORGAN_B] - means[ORGAN_A]) > 4 * sigma
    assert abs(means[LESION] - means[ORGAN_A]) > 4 * sigma
    assert abs(means[ORGAN_A] - near_a) > 4 * sigma
    # organs vary within (texture), but less than the contrast between them
    std_a = float(image[ndimage.binary_erosion(labels == ORGAN_A, iterations=2)].std())
    assert sigma < std_a < abs(means[ORGAN_B] - means[ORGAN_A])


def test_bias_field_drifts_but_classes_stay_separable(vol: Volume) -> None:
    assert _bias_trend(vol) > 1.07  # organ_a brightens by > 7 % across itself
    image, labels = vol.image[0], vol.labels
    sigma = _noise_sigma(vol)
    inside = ndimage.binary_erosion(labels == ORGAN_A, iterations=2)
    shell = _shell(labels, ORGAN_A)
    center = [round(c) for c in ndimage.center_of_mass(inside)]
    checked = 0
    for octant in np.ndindex(2, 2, 2):
        box = tuple(slice(c, None) if o else slice(None, c) for c, o in zip(center, octant))
        organ, around = image[box][inside[box]], image[box][shell[box]]
        if organ.size < 100 or around.size < 100:
            continue
        assert organ.mean() - around.mean() > 4 * sigma
        checked += 1
    assert checked >= 4


def test_without_bias_field_no_drift(monkeypatch: pytest.MonkeyPatch, vol: Volume) -> None:
    """Control for the drift statistic: it is small when the bias field is flat."""
    real_bias = volumes._bias
    monkeypatch.setattr(volumes, "_bias", lambda rng, grid: np.ones_like(real_bias(rng, grid)))
    flat = make_volume(*SHAPE, seed=0)
    np.testing.assert_array_equal(flat.labels, vol.labels)
    assert _bias_trend(flat) < 1.04
    # the bias itself, from the two images: smooth, and > 15 % from end to end of the body
    biased, unbiased = (ndimage.uniform_filter(v.image[0], 9) for v in (vol, flat))
    ratio = biased / np.maximum(unbiased, 1e-3)
    body = ndimage.binary_erosion(flat.image[0] > 0.2, iterations=4)
    assert np.quantile(ratio[body], 0.95) / np.quantile(ratio[body], 0.05) > 1.15


def test_anisotropy_shapes_are_round_in_mm(vol: Volume) -> None:
    organ = vol.labels == ORGAN_A
    z_extent, x_extent = _extent(organ, 0), _extent(organ, 2)
    assert z_extent < x_extent
    # the same field of view at 1 mm slices: the same anatomy, 2.5x more slices
    fine = make_volume(120, 96, 96, seed=0, spacing=(1.0, 1.0, 1.0))
    fine_organ = fine.labels == ORGAN_A
    assert _extent(fine_organ, 0) == pytest.approx(2.5 * z_extent, rel=0.08)
    assert _extent(fine_organ, 2) == pytest.approx(x_extent, abs=2)
    # fine slice centres nearest to the coarse ones (1.25 mm -> index 1, 3.75 mm -> 3, ...)
    nearest = fine.labels[(np.arange(48) * 2.5 + 1.25).astype(int)]
    for cls in (ORGAN_A, ORGAN_B):
        a, b = nearest == cls, vol.labels == cls
        dice = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        assert dice > 0.9


def test_affine_matches_spacing_and_anatomy(vol: Volume) -> None:
    sz, sy, sx = vol.spacing
    np.testing.assert_allclose(np.diag(vol.affine), [-sx, -sy, sz, 1.0])
    np.testing.assert_allclose(np.abs(np.diag(vol.affine)[:3]), vol.spacing[::-1])
    np.testing.assert_allclose(vol.affine[3], [0, 0, 0, 1])
    center = np.array([(SHAPE[2] - 1) / 2, (SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2, 1.0])
    np.testing.assert_allclose(vol.affine @ center, [0, 0, 0, 1], atol=1e-9)
    liver, kidneys = _centroid_world(vol, ORGAN_A), _centroid_world(vol, ORGAN_B)
    assert liver[0] > 10.0  # organ_a on the patient's right (R+)
    assert kidneys[1] < liver[1]  # organ_b posterior to organ_a (A+)
    assert kidneys[2] < liver[2]  # and inferior (S+)


def test_custom_spacing_is_used() -> None:
    v = make_volume(16, 32, 24, seed=2, spacing=(3.0, 0.8, 0.7))
    assert v.spacing == (3.0, 0.8, 0.7)
    np.testing.assert_allclose(np.diag(v.affine)[:3], [-0.7, -0.8, 3.0])


@pytest.mark.parametrize("shape", [(8, 8, 8), (8, 40, 24), (30, 9, 17)])
def test_small_and_odd_sizes(shape: tuple[int, int, int]) -> None:
    v = make_volume(*shape, seed=5)
    assert v.image.shape == (1, *shape) and v.labels.shape == shape
    assert np.isfinite(v.image).all()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((7, 32, 32), {}),
        ((16, 32, 5), {}),
        ((16.5, 32, 32), {}),
        ((16, 32, 32), {"seed": -1}),
        ((16, 32, 32), {"spacing": (0.0, 1.0, 1.0)}),
        ((16, 32, 32), {"spacing": (1.0, float("nan"), 1.0)}),
        ((16, 32, 32), {"spacing": (1.0, 1.0)}),
    ],
)
def test_invalid_arguments(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_volume(*args, **kwargs)
