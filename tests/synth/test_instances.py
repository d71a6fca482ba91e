"""Building instances of synthetic scenes, and touching neighbours (make_scene(touching=...))."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from geoseg.synth import Scene, make_scene

BUILDING = 4

# sha256 of image and labels of make_scene(256, 256, seed=3) and make_scene(200, 333, seed=11),
# computed with the generator before instances and `touching` existed (commit 37a0bd3). The
# default scene must not change: the bundled demo U-Net and its tests depend on it.
BEFORE_INSTANCES = {
    (256, 256, 3): (
        "f6769d868b4331e39296c8ad426188e6c5b3e1179166db56523ad3693fa8ca06",
        "ecdce5177ecd3d694080d571c2b500bdef507a4cd27cf0bbfc5f5178da7ebbb6",
    ),
    (200, 333, 11): (
        "5ee5e53a4548964fb48b085a0e5d150b6c5eecce835ed5adedc90ba20d5b4b3b",
        "9d9d34bce5d2ac6681b5137c2326ab5578eb19e411489d4ec6ddee6b7f51f00c",
    ),
}


@pytest.fixture(scope="module", params=[0.0, 0.6], ids=["apart", "touching"])
def scene(request: pytest.FixtureRequest) -> Scene:
    return make_scene(384, 384, seed=5, touching=request.param)


def _touching_pairs(ids: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct nonzero ids that are 4-adjacent somewhere."""
    a = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
    b = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
    keep = (a != b) & (a > 0) & (b > 0)
    return set(zip(np.minimum(a, b)[keep].tolist(), np.maximum(a, b)[keep].tolist()))


@pytest.mark.parametrize(("size", "expected"), list(BEFORE_INSTANCES.items()))
def test_default_scene_unchanged(size: tuple[int, int, int], expected: tuple[str, str]) -> None:
    height, width, seed = size
    got = make_scene(height, width, seed=seed)
    assert hashlib.sha256(got.image.tobytes()).hexdigest() == expected[0]
    assert hashlib.sha256(got.labels.tobytes()).hexdigest() == expected[1]


def test_touching_zero_is_the_default() -> None:
    a, b = make_scene(128, 128, seed=9), make_scene(128, 128, seed=9, touching=0.0)
    for field in ("image", "labels", "instances"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_instances_cover_buildings_exactly(scene: Scene) -> None:
    ids = scene.instances
    assert ids.dtype == np.uint32
    assert ids.shape == scene.labels.shape
    np.testing.assert_array_equal(ids > 0, scene.labels == BUILDING)


def test_ids_contiguous_from_one(scene: Scene) -> None:
    present = np.unique(scene.instances)
    assert present[0] == 0
    np.testing.assert_array_equal(present[1:], np.arange(1, len(present)))
    assert len(present) > 20


def test_each_instance_is_one_4_connected_region(scene: Scene) -> None:
    ids = scene.instances.astype(np.int64)
    for i, box in enumerate(ndimage.find_objects(ids), start=1):
        assert ndimage.label(ids[box] == i)[1] == 1, f"instance {i} is split"


def test_apart_buildings_never_touch() -> None:
    assert _touching_pairs(make_scene(384, 384, seed=5).instances) == set()


def test_touching_buildings_share_walls() -> None:
    scene = make_scene(384, 384, seed=5, touching=0.6)
    pairs = _touching_pairs(scene.instances)
    assert len(pairs) >= 5
    # the building mask cannot tell them apart: pairs and terraces (chains) merge into one region
    _, n_components = ndimage.label(scene.labels == BUILDING)
    assert n_components == scene.instances.max() - len(pairs)


def test_touching_deterministic() -> None:
    a, b = (make_scene(200, 200, seed=4, touching=0.5) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances, b.instances)


@pytest.mark.parametrize("touching", [-0.1, 1.5, float("nan")])
def test_touching_must_be_a_probability(touching: float) -> None:
    with pytest.raises(ValueError, match="touching"):
        make_scene(64, 64, touching=touching)
