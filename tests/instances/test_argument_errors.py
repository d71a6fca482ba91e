"""The instance functions refuse arguments of the wrong kind with an InstanceError saying what was
received and what is expected, never a raw TypeError, ValueError or AttributeError."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from geoseg.errors import InstanceError
from geoseg.instances import (
    distance_watershed,
    instance_polygons,
    instances_from_classes,
    label,
    object_table,
)


@pytest.fixture(scope="module")
def classes() -> da.Array:
    """Class ids 0, 1 (interiors) and 2 (their outlines) in 20 x 20 chunks."""
    ids = np.zeros((40, 40), np.uint8)
    ids[5:15, 5:15], ids[22:35, 20:38] = 2, 2
    ids[7:13, 7:13], ids[24:33, 22:36] = 1, 1
    return da.from_array(ids, chunks=20)


@pytest.fixture(scope="module")
def labels(classes) -> da.Array:
    return label(classes > 0)[0]


def test_label_takes_one_class_id_as_a_list_of_one(classes):
    one, count = label(classes, classes=1)
    listed, listed_count = label(classes, classes=[1])
    assert count == listed_count == 2
    np.testing.assert_array_equal(one.compute(), listed.compute())


@pytest.mark.parametrize("ids", ["a", [1.5], [True], object()])
def test_label_refuses_classes_that_are_no_ids(classes, ids):
    with pytest.raises(InstanceError, match=r"classes: received .*; expected the object classes, "
                                            r"a list of class ids"):
        label(classes, classes=ids)


def test_instances_from_classes_takes_one_boundary_id(classes):
    one, count = instances_from_classes(classes, interior=1, boundary=2, halo=8)
    listed, listed_count = instances_from_classes(classes, interior=1, boundary=[2], halo=8)
    assert count == listed_count == 2
    np.testing.assert_array_equal(one.compute(), listed.compute())


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"interior": "building"}, r"interior: received 'building' \(str\); expected the class of"),
    ({"interior": [1]}, r"interior: received \[1\] \(list\)"),
    ({"boundary": ["edge"]}, r"boundary: received \['edge'\]; expected the classes the interiors"),
    ({"halo": 1.5}, r"halo: received 1.5 \(float\); expected a whole number of pixels >= 0"),
    ({"halo": -1}, r"halo: received -1 \(int\); expected a whole number of pixels >= 0"),
])
def test_instances_from_classes_refuses_arguments_of_the_wrong_kind(classes, kwargs, fragment):
    arguments = {"interior": 1, "boundary": [2], "halo": 8, **kwargs}
    with pytest.raises(InstanceError, match=fragment):
        instances_from_classes(classes, **arguments)


@pytest.mark.parametrize("halo", [10.5, "10", True, 0, None])
def test_distance_watershed_refuses_a_halo_that_is_no_whole_number(classes, halo):
    with pytest.raises(InstanceError, match=rf"halo: received {halo!r} \(\w+\); expected a whole "
                                            r"number of pixels >= 1 for a distance watershed"):
        distance_watershed(classes > 0, halo=halo)


@pytest.mark.parametrize("georef", ["EPSG:32618", {"crs": "EPSG:32618"}])
def test_instance_polygons_and_object_table_refuse_a_georef_that_is_no_georef(labels, georef):
    fragment = (rf"georef: received {type(georef).__name__} .*; expected a GeoRef "
                r"\(geoseg.io.georef.GeoRef.from_crs\(crs, transform\)")
    with pytest.raises(InstanceError, match=fragment):
        instance_polygons(labels, georef)
    with pytest.raises(InstanceError, match=fragment):
        object_table(labels, georef=georef)


@pytest.mark.parametrize(("boundary", "fix"), [
    ([2, 1], r"Leave 1 out: boundary=\[2\]"),
    (1, r"Leave 1 out and name the boundary classes"),
    ((np.uint8(1),), r"Leave 1 out and name the boundary classes"),
])
def test_instances_from_classes_refuses_an_interior_that_is_also_a_boundary(classes, boundary, fix):
    with pytest.raises(InstanceError, match=r"boundary: received .*, which names the interior class 1; expected "
                                            rf"the classes the interiors grow into, other than .*{fix}"):
        instances_from_classes(classes, interior=1, boundary=boundary, halo=8)
