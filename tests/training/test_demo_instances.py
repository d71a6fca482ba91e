"""The bundled instance model ``builtin:demo-instances``, its decoding and its trainer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import geoseg
from geoseg.instances.panoptic import panoptic_quality
from geoseg.models.modelfile import read_header
from geoseg.synth import make_scene
from geoseg.training.demo_instances import (
    COMMAND,
    InstanceTrainConfig,
    decode_instances_whole,
    instance_targets,
    train_instance_model,
)

FRESH_SEED = 4343  # training used seeds 100-103, validation 900-901


@pytest.fixture(scope="module")
def model():
    return geoseg.load_model("builtin:demo-instances", device="cpu")


@pytest.fixture(scope="module")
def fresh():
    """An unseen scene with touching pairs, and the model's class image of it."""
    return make_scene(512, 512, seed=FRESH_SEED, touching=0.5)


@pytest.fixture(scope="module")
def classes(model, fresh):
    return model.predict_image(fresh.image, nodata=0).argmax(0)


def _ids(model, name: str) -> int:
    return [c.name for c in model.classes].index(name)


def test_bundled_model_declares_its_decoding(model) -> None:
    assert [c.name for c in model.classes] == ["background", "building", "building_edge"]
    assert model.info.extra["instances"] == [
        {"class": "building", "interior": "building", "boundary": "building_edge"}]
    validation = model.info.extra["training"]["validation"]
    assert validation["network"]["pq"] >= 0.8
    assert validation["network"]["pq"] > validation["components"]["pq"]
    # the bundled file was made before its trainer moved from geoseg.models.train_instances
    assert model.info.extra["training"]["command"] in {"python -m geoseg.models.train_instances", COMMAND}


def test_header_alone_carries_the_decoding() -> None:
    header = read_header("builtin:demo-instances")
    assert header.info.extra["instances"][0]["boundary"] == "building_edge"
    assert header.stride == (8, 8)


def test_fresh_scene_has_touching_pairs(fresh) -> None:
    ids = fresh.instances
    pairs = (ids[:, 1:] != ids[:, :-1]) & (ids[:, 1:] > 0) & (ids[:, :-1] > 0)
    assert pairs.any()


def test_bundled_model_reaches_pq_080_on_a_fresh_scene(model, fresh, classes) -> None:
    pred = decode_instances_whole(classes, _ids(model, "building"), _ids(model, "building_edge"))
    score = panoptic_quality(fresh.instances, pred)[1]
    print(f"demo-instances on seed {FRESH_SEED} (512x512, touching 0.5): PQ {score.pq:.4f} "
          f"SQ {score.sq:.4f} RQ {score.rq:.4f} TP {score.tp} FP {score.fp} FN {score.fn}")
    assert score.pq >= 0.8


def test_chunked_job_decoder_reaches_pq_080_at_small_chunks(model, fresh, classes) -> None:
    """What jobs run: seeds labelled over the whole raster, grown in 96 x 80 chunks + halo,
    seedless edge pixels dropped."""
    import dask.array as da

    from geoseg.instances import instances_from_classes

    labels, _ = instances_from_classes(da.from_array(classes, chunks=(96, 80)),
                                       interior=_ids(model, "building"),
                                       boundary=[_ids(model, "building_edge")], halo=16)
    score = panoptic_quality(fresh.instances, labels.compute())[1]
    print(f"chunked decoder: PQ {score.pq:.4f} SQ {score.sq:.4f} RQ {score.rq:.4f}")
    assert score.pq >= 0.8


def test_edges_beat_connected_components(model, fresh, classes) -> None:
    network = decode_instances_whole(classes, _ids(model, "building"),
                                     _ids(model, "building_edge"))
    components, _ = ndimage.label(classes > 0)  # 4-connected regions of the building mask
    pq_network = panoptic_quality(fresh.instances, network)[1].pq
    pq_components = panoptic_quality(fresh.instances, components)[1].pq
    print(f"seed {FRESH_SEED}: PQ network {pq_network:.4f}, components {pq_components:.4f}")
    assert pq_network > pq_components + 0.03


# -- targets and the reference decoder ---------------------------------------------------


def test_targets_edges_include_shared_walls() -> None:
    ids = np.zeros((6, 10), np.uint32)
    ids[1:5, 1:5], ids[1:5, 5:9] = 1, 2
    targets = instance_targets(ids)
    expected = np.zeros((6, 10), np.uint8)
    expected[1:5, 1:9] = 2
    expected[2:4, 2:4] = expected[2:4, 6:8] = 1
    np.testing.assert_array_equal(targets, expected)


def test_targets_image_border_is_not_an_edge() -> None:
    ids = np.ones((4, 4), np.uint32)
    assert (instance_targets(ids) == 1).all()


def test_decoding_recovers_touching_buildings_from_perfect_classes() -> None:
    scene = make_scene(256, 256, seed=11, touching=0.8)
    decoded = decode_instances_whole(instance_targets(scene.instances), 1, 2)
    score = panoptic_quality(scene.instances, decoded)[1]
    assert score.pq > 0.97
    assert decoded.dtype == np.uint32
    present = np.unique(decoded)
    np.testing.assert_array_equal(present, np.arange(len(present)))


def test_decoding_shares_edges_out_by_distance_and_drops_seedless_edges() -> None:
    classes = np.full((5, 12), 2, np.uint8)  # one connected edge region...
    classes[1:4, 1:4] = 1  # ...around two interiors
    classes[1:4, 6:9] = 1
    classes[:, 11] = 0
    got = decode_instances_whole(classes, 1, 2)
    expected = np.zeros((5, 12), np.uint32)
    expected[:, :5], expected[:, 5:11] = 1, 2  # each edge pixel joins its nearest interior
    np.testing.assert_array_equal(got, expected)
    ring = np.zeros((5, 5), np.uint8)
    ring[1:4, 1:4] = 2  # edge without interior: no instance
    assert (decode_instances_whole(ring, 1, 2) == 0).all()


def test_refuses_to_overwrite(tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"")
    with pytest.raises(FileExistsError):
        train_instance_model(InstanceTrainConfig(steps=1), out)


@pytest.mark.slow
def test_retrain_a_few_steps(tmp_path) -> None:
    cfg = InstanceTrainConfig(steps=30, scenes=1, scene_size=512, val_scenes=1, val_size=256)
    out = tmp_path / "instances.safetensors"
    metrics = train_instance_model(cfg, out, log=lambda _: None)
    model = geoseg.load_model(str(out), device="cpu")
    assert model.info.extra["training"]["validation"] == metrics
    assert model.info.extra["instances"][0]["interior"] == "building"
    assert {"network", "components", "true_mask_components"} <= set(metrics)
