"""The region executor on the segmenter's device: what crosses back, padding and masks in torch,
one region at a time per GPU, and the region a task computes."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import threading
import time
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import geoseg
from geoseg.core.segmenter import pad_end, valid_mask
from geoseg.models.tensors import class_ids, pad_end_tensor, valid_mask_tensor
from geoseg.parallel.lazy import region_work
from geoseg.parallel.region import RegionOutput, device_turn, segment_region, to_device
from geoseg.parallel.tasks import ArrayReader
from geoseg.tiling import Tiling, region_tiles, regions
from geoseg.tiling.plan import inference_cost, n_regions, task_region
from tests.conftest import random_unet, textured_image


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 25), st.integers(0, 25))
def test_reflect_padding_on_the_device_equals_numpy_even_past_the_axis_length(h, w, dh, dw):
    x = np.arange(2 * h * w, dtype=np.float32).reshape(2, h, w)
    expected = pad_end(x, (h + dh, w + dw))
    np.testing.assert_array_equal(pad_end_tensor(torch.from_numpy(x), (h + dh, w + dw)).numpy(), expected)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["uint8", "uint16", "int16", "float32", "float64"]),
       st.sampled_from([None, 0.0, 7.0, float("nan")]), st.integers(0, 2**32 - 1))
def test_validity_on_the_device_equals_numpy(dtype, nodata, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 9, size=(3, 6, 5)).astype(dtype)
    raw[:, rng.random((6, 5)) < 0.3] = 7
    if raw.dtype.kind == "f":
        raw[rng.integers(0, 3), rng.random((6, 5)) < 0.2] = np.nan
        raw[rng.integers(0, 3), rng.random((6, 5)) < 0.1] = np.inf
        raw[rng.integers(0, 3), rng.random((6, 5)) < 0.1] = -np.inf
    np.testing.assert_array_equal(valid_mask_tensor(torch.from_numpy(raw), nodata).numpy(),
                                  valid_mask(raw, nodata))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([torch.float32, torch.float16, torch.float64, torch.bfloat16]),
       st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data())
def test_class_ids_on_the_cpu_equal_torchs_argmax_ties_and_nan_included(dtype, shape, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    scores = torch.from_numpy(rng.integers(0, 3, size=shape).astype(np.float64)).to(dtype)  # ties
    if rng.random() < 0.5:
        scores.view(-1)[torch.from_numpy(rng.integers(0, scores.numel(), 2))] = float("nan")
    ids = class_ids(scores, dim=dim)
    assert ids.dtype == torch.int64
    assert torch.equal(ids, scores.argmax(dim=dim))


def test_a_big_endian_window_reaches_the_device_in_native_order():
    raw = np.arange(12, dtype=">u2").reshape(1, 3, 4)
    tensor = to_device(raw, torch.device("cpu"))
    assert tensor.dtype == torch.uint16
    np.testing.assert_array_equal(tensor.numpy(), raw.astype("<u2"))


def test_only_class_ids_come_back_unless_probabilities_are_asked_for():
    model = random_unet(depth=2, width=4)
    image = textured_image(96, 80, seed=3)
    spec = Tiling.create(image.shape[1:], tile=32, halo=16, stride=4)
    region = (slice(0, 96), slice(0, 80))
    read = ArrayReader(image, (0, 0))
    ids = segment_region(model, read, spec, region, output=RegionOutput(255, "uint8"))
    assert ids.probabilities is None and ids.classes.dtype == np.uint8
    both = segment_region(model, read, spec, region, output=RegionOutput(255, "uint8", "float16"))
    assert both.probabilities.dtype == np.float16
    np.testing.assert_array_equal(ids.classes, both.classes)
    whole = model.predict_image(image)
    np.testing.assert_array_equal(ids.classes, whole.argmax(0))
    np.testing.assert_allclose(both.probabilities, whole, atol=1e-3)


def test_one_region_at_a_time_holds_a_gpu_and_none_the_cpu():
    """Threads of a GPU worker take turns on the device (the others read meanwhile)."""
    inside, overlap = [0], [False]

    def work(device: torch.device) -> None:
        with device_turn(device):
            inside[0] += 1
            overlap[0] |= inside[0] > 1
            time.sleep(0.05)
            inside[0] -= 1

    for device, overlapped in ((torch.device("cuda:0"), False), (torch.device("cpu"), True)):
        inside[0], overlap[0] = 0, False
        threads = [threading.Thread(target=work, args=(device,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert overlap[0] is overlapped, device


@st.composite
def tilings(draw: st.DrawFn) -> tuple[Tiling, tuple[int, int]]:
    stride = draw(st.sampled_from([1, 2, 4, 8]))
    shape = (draw(st.integers(1, 400)), draw(st.integers(1, 400)))
    blend = draw(st.sampled_from(["crop", "gaussian"]))
    tile = draw(st.integers(2, 12)) * stride
    halo = draw(st.integers(0, 4)) * stride
    spec = Tiling.create(shape, tile=tile, halo=halo, stride=stride, blend=blend,
                             overlap=draw(st.sampled_from([0.0, 0.25, 0.5])))
    return spec, (draw(st.integers(1, 150)), draw(st.integers(1, 150)))


def _brute_cost(spec: Tiling, region: tuple[int, ...]) -> float:
    def volume(chunks: tuple[int, ...]) -> int:  # math.prod: np.prod costs ~10 us a tile
        return sum(math.prod(s.stop - s.start for s in t.window)
                   for r in regions(spec.shape, chunks) for t in region_tiles(spec, r))
    return volume(region) / volume(spec.shape)


@settings(max_examples=60, deadline=None)
@given(tilings())
def test_inference_cost_counts_every_window_every_task_runs(plan):
    spec, chunks = plan
    assert inference_cost(spec, chunks) == pytest.approx(_brute_cost(spec, chunks))


@settings(max_examples=80, deadline=None)
@given(tilings(), st.sampled_from([None, 4000, 40000]))
def test_task_regions_are_whole_chunks_grown_until_cheap_or_bounded(plan, max_pixels):
    spec, unit = plan
    region = task_region(spec, unit, max_pixels=max_pixels)
    assert all(r % u == 0 and u <= r <= max(u, -(-n // u) * u) for r, u, n in zip(region, unit, spec.shape))
    if inference_cost(spec, region) > 1.25:  # then no axis that costs could grow further
        for axis in range(2):
            grown = list(region)
            grown[axis] += unit[axis]
            spans = region[axis] >= spec.shape[axis]
            too_big = max_pixels is not None and np.prod(grown) > max_pixels
            assert spans or too_big or _axis_is_free(spec, region, axis)


@settings(max_examples=80, deadline=None)
@given(tilings(), st.sampled_from([None, 4000, 40000]), st.sampled_from([1, 500, 5000, 2**16]))
def test_task_regions_hold_at_least_min_pixels_where_the_image_and_bound_allow(plan, max_pixels,
                                                                               min_pixels):
    spec, unit = plan
    region = task_region(spec, unit, max_pixels=max_pixels, min_pixels=min_pixels)
    alone = task_region(spec, unit, max_pixels=max_pixels)
    assert all(a <= r for a, r in zip(alone, region))  # never cheaper in halos than without
    assert all(r % u == 0 and r <= max(u, -(-n // u) * u) for r, u, n in zip(region, unit, spec.shape))
    if math.prod(region) < min_pixels:  # then no axis could grow by one more unit
        for axis in range(2):
            grown = list(region)
            grown[axis] += unit[axis]
            spans = region[axis] >= spec.shape[axis]
            too_big = max_pixels is not None and math.prod(grown) > max_pixels
            assert spans or too_big, (region, unit, spec.shape)


def test_segment_groups_small_chunks_into_fewer_tasks_with_the_same_classes():
    """8-pixel chunks of a 600 x 600 raster: 5,625 chunks, computed by tasks of at least
    256 x 256 pixels, then split; the classes equal the threshold's. One task per chunk made
    45,000 tasks (8 a chunk), most of the time spent planning and scheduling them."""
    image = textured_image(600, 600, bands=1)
    raster = xr.DataArray(da.from_array(image, chunks=(1, 64, 64)), dims=("band", "y", "x"))
    out = geoseg.segment(raster, geoseg.methods.Threshold((128.0,)), chunks=8)
    assert out.data.chunksize == (8, 8) and out.data.numblocks == (75, 75)
    assert len(out.data.__dask_graph__()) < 3 * 75 * 75
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(out.values, (image[0] > 128).astype(np.uint8))


def _axis_is_free(spec: Tiling, region: tuple[int, ...], axis: int) -> bool:
    """The axis costs nothing extra (its own factor is at most 1)."""
    alone = tuple(r if a == axis else n for a, (r, n) in enumerate(zip(region, spec.shape)))
    return inference_cost(spec, alone) <= 1.0 + 1e-9


def test_small_output_chunks_no_longer_shrink_tiles_or_multiply_tasks(tmp_path):
    model = random_unet(depth=3, width=4)
    image = textured_image(300, 260, seed=5)
    work = region_work(model, image.shape[1:], regions=(32, 32), tile=64)
    assert work.region[0] % 32 == 0 and work.region[0] >= 64
    assert inference_cost(work.tiling, work.region) <= 1.25
    raster = geoseg.open_raster(_zarr(tmp_path, image))
    with dask.config.set(scheduler="sync"):
        mask = geoseg.segment(raster, model, chunks=32, tile=64)
        assert mask.data.chunksize == (32, 32)
        np.testing.assert_array_equal(mask.values, model.predict_image(image).argmax(0))
    tasks = n_regions(image.shape[1:], work.region)
    assert tasks <= n_regions(image.shape[1:], (32, 32)) / 3


def test_chunking_that_forces_recomputation_warns_with_the_factor():
    model = random_unet(depth=2, width=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        region_work(model, (4096, 4096), regions=(100, 100), tile=256, blend="gaussian", overlap=0.5)
    assert not caught, [str(w.message) for w in caught]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSEG_REGION_BYTES", str(100 * 100 * (4 * model.n_classes + 16)))
        with pytest.warns(UserWarning, match=r"infer \d+\.\d\dx the pixels"):
            region_work(model, (4096, 4096), regions=(100, 100), tile=256, blend="gaussian", overlap=0.5)


def _zarr(tmp_path, image):
    from tests.conftest import write_zarr

    return write_zarr(tmp_path / "in.zarr", image, chunks=(64, 64))


def test_inference_compile_compiles_the_workers_network_once():
    model = random_unet(depth=2, width=4)
    work = region_work(model, (64, 64), compile=True)
    segmenter = work.segmenter()
    assert segmenter is model and model.compiled
    forward = model._forward
    assert work.segmenter()._forward is forward  # once per worker, not per task
    assert not region_work(random_unet(depth=2, width=4), (64, 64)).segmenter().compiled


@pytest.mark.parametrize(("batch_size", "sizes"), [(4, [3, 3, 3]), (8, [5, 5]), (9, [9]), (16, [9])])
def test_a_compiled_job_cuts_a_region_into_batches_of_one_size(monkeypatch, batch_size, sizes):
    """9 tiles in batches of at most 4 ran as 4, 4 and 1: two shapes, two compilations. Even
    batches (the last padded with zero tiles) give one, and the kept scores are the eager
    network's, batch by batch as before."""
    compiled_for, seen = [], []

    def counting(graph, inputs):  # a torch.compile backend that runs the captured graph as is
        compiled_for.append(tuple(inputs[0].shape) if inputs else ())
        return graph.forward

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counting))
    image = textured_image(96, 80, seed=9)
    spec = Tiling.create(image.shape[1:], tile=32, halo=16, stride=4)
    region, read = (slice(0, 96), slice(0, 80)), ArrayReader(image, (0, 0))
    assert len(region_tiles(spec, region)) == 9
    out = RegionOutput(255, "uint8", "float32")

    eager = segment_region(random_unet(depth=2, width=4), read, spec, region, output=out,
                           batch_size=batch_size)
    model = random_unet(depth=2, width=4).compile()
    forward = model.predict_tensor_at
    monkeypatch.setattr(model, "predict_tensor_at", lambda x, *a: seen.append(len(x)) or forward(x, *a))
    once = segment_region(model, read, spec, region, output=out, batch_size=batch_size,
                          full_batches=True)

    assert seen == sizes and len(compiled_for) == 1, (seen, compiled_for)
    np.testing.assert_allclose(once.probabilities, eager.probabilities, atol=1e-6)
    np.testing.assert_array_equal(once.classes, eager.classes)


def test_only_a_compiled_job_pads_its_batches(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    image, region = textured_image(96, 80, seed=9), (slice(0, 96), slice(0, 80))
    for compile, sizes in ((False, [8, 1]), (True, [5, 5])):
        seen, model = [], random_unet(depth=2, width=4)
        forward = model.predict_tensor_at
        monkeypatch.setattr(model, "predict_tensor_at", lambda x, *a, f=forward, s=seen:
                            s.append(len(x)) or f(x, *a))
        work = region_work(model, (96, 80), tile=32, batch_size=8, compile=compile)
        work.run(ArrayReader(image, (0, 0)), region)
        assert seen == sizes and model.compiled == compile


@pytest.mark.slow
def test_a_compiled_network_segments_like_the_eager_one():
    image = textured_image(96, 80, seed=9)
    eager = random_unet(depth=2, width=4)
    compiled = random_unet(depth=2, width=4).compile()
    spec = Tiling.create(image.shape[1:], tile=32, halo=16, stride=4)
    region, read = (slice(0, 96), slice(0, 80)), ArrayReader(image, (0, 0))
    out = RegionOutput(255, "uint8", "float32")
    a = segment_region(eager, read, spec, region, output=out)
    b = segment_region(compiled, read, spec, region, output=out)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    assert (a.classes == b.classes).mean() > 0.999


def _region_id(region: tuple[slice, ...]) -> int:
    return region[0].start


def test_neighbouring_regions_prefer_one_worker_in_stripes():
    from distributed import Client, LocalCluster

    from geoseg.parallel.executor import submit_in_stripes

    todo = list(regions((8, 3), (1, 1)))  # 24 regions in raster order
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        futures = submit_in_stripes(client, _region_id, todo)
        assert client.gather(futures) == [r[0].start for r in todo]
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        keys = [f.key for f in futures]
        placed = client.run_on_scheduler(lambda dask_scheduler: [
            (sorted(dask_scheduler.tasks[k].worker_restrictions), dask_scheduler.tasks[k].loose_restrictions)
            for k in keys])
    assert placed == [([workers[0]], True)] * 12 + [([workers[1]], True)] * 12


def test_only_windows_that_reach_past_their_regions_use_the_read_cache():
    from geoseg.methods import Threshold

    assert region_work(random_unet(depth=2, width=4), (300, 300)).windows_reach_past_regions
    assert not region_work(Threshold(thresholds=(100,)), (300, 300)).windows_reach_past_regions


OUT_OF_MEMORY = """
import resource, sys
import dask, numpy as np, torch, xarray as xr
import geoseg
from geoseg.errors import DeviceMemoryError
from geoseg.synth import make_scene

torch.set_num_threads(1)
model = geoseg.load_model("builtin:demo-unet")
raster = xr.DataArray(make_scene(1024, 1024, seed=1).image, dims=("band", "y", "x"))
used = int(open("/proc/self/statm").read().split()[0]) * 4096
room = used + 150 * 2**20  # a little room: one batch's activations take several times more
resource.setrlimit(resource.RLIMIT_AS, (room, room))
with dask.config.set(scheduler="sync"):
    try:
        geoseg.segment(raster, model, tile=1024, batch_size=8).values
    except DeviceMemoryError as exc:
        print("said:", exc)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_inference_out_of_memory_says_what_did_not_fit_and_what_to_lower():
    """torch's allocator failure reached the user as a RuntimeError from inside a task; here a
    real one, the process's address space limited."""
    result = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True,
                            check=False,
                            timeout=300)
    said = result.stdout + result.stderr
    assert "said: Inference ran out of memory on cpu ([enforce fail" in said, said
    assert "can't allocate memory" in said
    assert "segmenting a region of 1 window(s) of 1024 x 1024 pixels, in batches of 1" in said
    assert "One window at a time already does not fit: lower the tile (tile= in segment()" in said
    assert "Traceback" not in said


def test_the_out_of_memory_advice_names_the_batch_size_where_it_came_from():
    from geoseg.parallel.region import _memory_advice
    from geoseg.tiling.plan import AxisTile, Tile

    tiles = [Tile((AxisTile(0, 512, 0, 512), AxisTile(i * 512, (i + 1) * 512, i * 512, (i + 1) * 512)))
             for i in range(6)]
    said = _memory_advice(torch.device("cuda:0"), tiles, 4, "CUDA out of memory.")
    assert "segmenting a region of 6 window(s) of 512 x 512 pixels, in batches of 4" in said
    assert ("Lower the batch size (now 4: batch_size= in segment(), inference.batch_size in a "
            "job, else GEOSEG_BATCH_SIZE) or the tile") in said


def test_a_failed_regions_tensors_are_let_go_with_the_out_of_memory_error():
    """The error's frames kept the region's tensors (on a GPU, its memory) as long as the error
    lived: in a worker's stored task error, or a notebook's last exception."""
    import gc
    import weakref

    from geoseg.errors import DeviceMemoryError
    from geoseg.parallel.region import _memory_said
    from geoseg.tiling.plan import AxisTile, Tile

    kept = []

    def region_that_runs_out():
        scores = torch.zeros(1000)
        kept.append(weakref.ref(scores))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    tile = Tile((AxisTile(0, 64, 0, 64), AxisTile(0, 64, 0, 64)))
    with pytest.raises(DeviceMemoryError) as err, _memory_said(torch.device("cpu"), [tile], 4):
        region_that_runs_out()
    gc.collect()
    assert err.value is not None and kept[0]() is None
