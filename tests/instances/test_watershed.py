"""Chunked seeded watershed against the same watershed on the whole image."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage import draw, morphology, segmentation

from geoseg.errors import InstanceError
from geoseg.instances.watershed import distance_watershed, flood_order, instances_from_classes
from tests.instances.test_components import assert_contiguous, assert_same_partition


def touching_discs(seed: int, shape: tuple[int, int] = (160, 200), cell: int = 40) -> np.ndarray:
    """Clusters of 1-3 overlapping discs (radius 5-9), each cluster inside its own grid cell.

    Every connected component fits in ``cell`` pixels, the extent a halo must cover.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    for top in range(0, shape[0] - cell + 1, cell):
        for left in range(0, shape[1] - cell + 1, cell):
            for _ in range(int(rng.integers(1, 4))):
                r = int(rng.integers(5, 10))
                centre = rng.integers(r + 1, cell - r - 1, 2) + (top, left)
                rr, cc = draw.disk(tuple(centre), r, shape=shape)
                mask[rr, cc] = True
    return mask


def whole_distance_watershed(mask: np.ndarray, h: float) -> np.ndarray:
    distance = ndi.distance_transform_edt(mask)
    peaks = morphology.h_maxima(distance, h).astype(bool) & mask
    seeds, _ = ndi.label(peaks, np.ones((3,) * mask.ndim))
    return segmentation.watershed(flood_order(-distance), seeds, mask=mask)


@given(st.integers(0, 10_000), st.sampled_from([(40, 40), (33, 71), (160, 17)]))
@settings(max_examples=12, deadline=None)
def test_distance_watershed_equals_whole_image(seed: int, chunks: tuple[int, int]) -> None:
    mask = touching_discs(seed)
    ref = whole_distance_watershed(mask, 2.0)
    labels, count = distance_watershed(da.from_array(mask, chunks=chunks), h=2.0, halo=40)
    got = labels.compute()
    assert count == ref.max()
    assert_same_partition(got, ref)
    assert_contiguous(got, count)
    assert count >= ndi.label(mask)[1]  # it splits, never merges


def test_distance_watershed_splits_touching_discs() -> None:
    mask = touching_discs(5)
    _, count = distance_watershed(da.from_array(mask, chunks=(40, 40)), h=2.0, halo=40)
    assert count > ndi.label(mask)[1]


def test_distance_watershed_in_3d() -> None:
    mask = np.zeros((30, 40, 40), bool)
    zz, yy, xx = np.mgrid[:30, :40, :40]
    for c in ((15, 12, 12), (15, 12, 26), (15, 28, 20)):
        mask |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 64
    labels, count = distance_watershed(da.from_array(mask, chunks=(10, 13, 17)), h=1.0, halo=24)
    ref = whole_distance_watershed(mask, 1.0)
    assert count == ref.max() == 3
    assert_same_partition(labels.compute(), ref)


def test_a_numpy_mask_is_taken_as_label_takes_it_and_a_float_one_refused() -> None:
    mask = np.zeros((40, 60), bool)
    yy, xx = np.mgrid[:40, :60]
    mask |= ((yy - 20) ** 2 + (xx - 18) ** 2 < 144) | ((yy - 20) ** 2 + (xx - 40) ** 2 < 144)
    labels, count = distance_watershed(mask, h=1.0)
    ref = whole_distance_watershed(mask, 1.0)
    assert count == ref.max() == 2
    assert_same_partition(labels.compute(), ref)
    with pytest.raises(InstanceError, match="integer or boolean mask; got dtype float64"):
        distance_watershed(mask.astype(float))


def test_distance_watershed_floods_ties_in_raster_order() -> None:
    """Two overlapping discs whose edt has ties where they meet: the result is the documented
    recipe, watershed of -edt ranked with ties in raster order (scipy's ordinal ranks)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(5)
    mask = np.zeros((16, 16), bool)
    for _ in range(2):
        r = int(rng.integers(3, 6))
        rr, cc = draw.disk(tuple(rng.integers(r, 16 - r, 2)), r, shape=mask.shape)
        mask[rr, cc] = True
    edt = ndi.distance_transform_edt(mask)
    seeds, n = ndi.label(morphology.h_maxima(edt, 1.0).astype(bool) & mask, np.ones((3, 3)))
    ranked = rankdata(-edt, method="ordinal").reshape(mask.shape)
    ref = segmentation.watershed(ranked, seeds, mask=mask)
    for chunks in (16, 5):
        labels, count = distance_watershed(da.from_array(mask, chunks=chunks), h=1.0, halo=15)
        assert count == n == 2
        assert_same_partition(labels.compute(), ref)


def interior_boundary(instances: np.ndarray) -> np.ndarray:
    """0 background, 1 interior, 2 boundary (pixels 4-adjacent to another id or background)."""
    padded = np.pad(instances, 1, mode="edge")
    core = padded[1:-1, 1:-1]
    edge = np.zeros(instances.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy:dy + instances.shape[0], dx:dx + instances.shape[1]] != core
    return np.where(instances == 0, 0, np.where(edge, 2, 1)).astype(np.uint8)


def whole_decode(classes: np.ndarray) -> np.ndarray:
    seeds, _ = ndi.label(classes == 1)
    return segmentation.watershed(flood_order(ndi.distance_transform_edt(classes != 1)), seeds,
                                  mask=classes > 0)


def test_interior_and_boundary_classes_separate_touching_buildings() -> None:
    """Rows of buildings sharing walls, across chunk borders; a 1-pixel speck of boundary class
    has no interior: it is dropped, not made an object."""
    truth = np.zeros((90, 120), np.int32)
    next_id = 1
    for top in (5, 40, 70):
        for left in range(3, 110, 13):
            truth[top:top + 14, left:left + 13] = next_id
            next_id += 1
    truth[88, 118] = next_id
    classes = interior_boundary(truth)
    labels, count = instances_from_classes(da.from_array(classes, chunks=(23, 31)), interior=1,
                                           boundary=[2], halo=8)
    got = labels.compute()
    assert count == next_id - 1 == got.max()
    assert got[88, 118] == 0 and classes[88, 118] == 2  # the speck: boundary class, no object
    truth[88, 118] = 0
    assert_same_partition(got, truth)
    assert_same_partition(got, whole_decode(classes))  # the same flood on the whole image


def test_distance_watershed_with_a_halo_past_every_side() -> None:
    """A volume of 10 slices, 30 x 34 each: the default halo (32) is longer than every side."""
    zz, yy, xx = np.mgrid[:10, :30, :34]
    mask = np.zeros(zz.shape, bool)
    for c in ((5, 9, 9), (5, 9, 17), (4, 21, 24)):
        mask |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 25
    labels, count = distance_watershed(da.from_array(mask, chunks=(4, 13, 17)), h=1.0)
    ref = whole_distance_watershed(mask, 1.0)
    assert count == ref.max() == 3
    assert_same_partition(labels.compute(), ref)


def test_decoding_a_strip_thinner_than_the_default_halo() -> None:
    """Touching buildings in a 12-row strip, chunked in 6 x 10: the default halo is 16."""
    truth = np.zeros((12, 60), np.int32)
    for k, left in enumerate(range(1, 56, 11)):
        truth[1:11, left:left + 11] = k + 1
    classes = interior_boundary(truth)
    labels, count = instances_from_classes(da.from_array(classes, chunks=(6, 10)), interior=1,
                                           boundary=[2])
    got = labels.compute()
    assert count == truth.max()
    assert_same_partition(got, truth)
    assert_same_partition(got, whole_decode(classes))


def test_watershed_stage_on_a_strip_thinner_than_the_default_halo() -> None:
    """The job's watershed route (default halo 32) on a 24 x 100 class raster."""
    from geoseg.instances.stage import InstanceSettings, instance_labels, routes

    mask = touching_discs(3, shape=(24, 100), cell=24)  # one pair of discs to split
    settings = InstanceSettings(method="watershed", classes=(1,))
    route_list = routes(settings, ["background", "object"], 0)
    labels, count = instance_labels(da.from_array(mask.astype(np.uint8), chunks=(12, 25)),
                                    route_list, settings)
    ref = whole_distance_watershed(mask, settings.h)
    assert count == ref.max() > ndi.label(mask)[1]
    assert_same_partition(labels.compute(), ref)


def test_grow_rejects_mismatched_shapes() -> None:
    from geoseg.instances.watershed import grow

    with pytest.raises(InstanceError, match="differ in shape"):
        grow(da.zeros((4, 4), dtype=np.uint32, chunks=2), da.zeros((4, 5), dtype=bool, chunks=2),
             halo=1)


def test_scene_buildings_are_the_same_partition_at_two_chunkings() -> None:
    """Interior/boundary classes of a synthetic scene's touching buildings, decoded at two very
    different chunkings: the same instances, and the scene's own."""
    from geoseg.synth import make_scene

    truth = make_scene(384, 384, seed=11, touching=0.6).instances
    classes = interior_boundary(truth.astype(np.int64))
    results = []
    for chunks in ((64, 64), (383, 29)):
        labels, count = instances_from_classes(da.from_array(classes, chunks=chunks), interior=1,
                                               boundary=[2], halo=16)
        results.append(labels.compute())
    assert_same_partition(results[0], results[1])
    touching = np.count_nonzero((truth[:, 1:] != truth[:, :-1]) & (truth[:, 1:] > 0)
                                & (truth[:, :-1] > 0))
    assert touching > 0 and count == truth.max()
    from geoseg.instances import panoptic_quality

    assert panoptic_quality(truth, results[0])[1].pq > 0.95  # a boundary pixel may change hands


@pytest.mark.parametrize("connectivity", [1, 2])
def test_decoding_seeds_interiors_with_the_connectivity_asked(connectivity: int) -> None:
    """Interiors touching only at corners, on chunk corners: one seed each with
    connectivity 1, one seed for both with 2, as scipy labels the interior class; the job's
    decode route passes its connectivity on (it was always 1)."""
    from geoseg.instances.stage import InstanceSettings, Route, instance_labels

    classes = np.zeros((24, 24), np.uint8)
    classes[1:21, 1:21] = 2  # boundary around ...
    for corner in (3, 7, 11, 15):  # ... interiors meeting at corners, (7, 7) and (14, 14) chunks'
        classes[corner:corner + 4, corner:corner + 4] = 1
    structure = ndi.generate_binary_structure(2, connectivity)
    seeds, expected = ndi.label(classes == 1, structure)
    route = Route("decode", (1, 2), interior=1, boundary=(2,))
    labels, count = instance_labels(da.from_array(classes, chunks=7), [route],
                                    InstanceSettings(connectivity=connectivity))
    got = labels.compute()
    assert count == expected == len(np.unique(got[got > 0])) and expected == (4 if connectivity == 1 else 1)
    assert_same_partition(np.where(classes == 1, got, 0), seeds)


def two_kinds_sharing_an_outline(seed: int) -> np.ndarray:
    """0 background, 1 building and 2 tree interiors, 3 the outline both decodings grow over:
    a synthetic scene's touching objects, each object's interior of one kind at random."""
    from geoseg.synth import make_scene

    truth = make_scene(160, 160, seed=seed, touching=0.7).instances.astype(np.int64)
    kind = np.random.default_rng(seed).integers(1, 3, truth.max() + 1)
    parts = interior_boundary(truth)
    return np.where(parts == 1, kind[truth], np.where(parts == 2, 3, 0)).astype(np.uint8)


def whole_shared_decode(classes: np.ndarray) -> np.ndarray:
    """skimage's seeded watershed of all the decodings' seeds at once (buildings' components
    first, then trees'), by distance to the seeds, over every interior and the shared outline."""
    buildings, n = ndi.label(classes == 1)
    trees, _ = ndi.label(classes == 2)
    seeds = np.where(trees > 0, trees + n, buildings)
    return segmentation.watershed(flood_order(ndi.distance_transform_edt(seeds == 0)), seeds,
                                  mask=classes > 0)


@pytest.mark.parametrize("seed", [4, 9])
def test_decodings_sharing_a_boundary_class_split_it_as_one_watershed(tmp_path, seed) -> None:
    """Two decodings (building, tree) declared with one outline class: the later decoding's
    watershed took every outline pixel, the earlier objects' outlines too."""
    import pandas as pd
    import zarr

    from geoseg.instances.stage import InstanceSettings, label_output
    from geoseg.io.georef import GeoRef
    from geoseg.io.output import create_output

    classes = two_kinds_sharing_an_outline(seed)
    ref = whole_shared_decode(classes)
    target = create_output(str(tmp_path / "out.zarr"), shape=classes.shape, chunks=(48, 48),
                           georef=GeoRef.from_crs("EPSG:3857", (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)),
                           class_names=["background", "building", "tree", "outline"],
                           class_dtype="uint8", nodata_class=255,
                           attrs={"status": "running", "instances_decoding": [
                               {"class": "building", "interior": "building", "boundary": ["outline"]},
                               {"class": "tree", "interior": "tree", "boundary": ["outline"]}]})
    target.open_group()["classes"][...] = classes
    target.finalize({"status": "complete"})
    report = label_output(target, InstanceSettings(method="decode", halo=40, polygons=False))
    got = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["instances"][...]
    buildings = ndi.label(classes == 1)[1]
    assert report.count == ref.max() and 0 < buildings < ref.max()
    assert_same_partition(got, ref)
    assert got[classes == 1].max() == buildings < got[classes == 2].min()  # buildings' ids first
    table = pd.read_parquet(tmp_path / "out.zarr" / "instances.parquet").set_index("id")
    kinds = {i: 1 if i <= buildings else 2 for i in range(1, ref.max() + 1)}
    assert table["class"].to_dict() == kinds  # an object's outline counts for its own kind
    outlined = (classes == 3) & (got > 0)
    assert np.count_nonzero(outlined & (got <= buildings)) > 0  # buildings keep outlines
