"""No data in the graph: tasks carry references and arithmetic, not pixels or weights."""

from __future__ import annotations

import cloudpickle
import pytest

import geoseg
from geoseg.io.output import OutputTarget
from geoseg.models import save_model
from geoseg.parallel.executor import segment_to_store
from geoseg.parallel.lazy import region_work
from tests.conftest import random_unet, textured_image, write_zarr

BOUND = 4096  # bytes per task


def graph_bytes_per_task(array) -> list[int]:
    graph = dict(array.__dask_graph__())
    return [len(cloudpickle.dumps(task)) for task in graph.values()]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graph-models")
    small, large = str(folder / "small.safetensors"), str(folder / "large.safetensors")
    save_model(random_unet(width=4), small)
    save_model(random_unet(width=64), large)
    return geoseg.load_model(small), geoseg.load_model(large)


def test_lazy_graph_is_small_and_independent_of_model_size(tmp_path, models):
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", textured_image(256, 256)))
    small, large = models
    weights = [sum(p.numel() * 4 for p in m.net.parameters()) for m in models]
    assert weights[1] > 100 * weights[0]
    per_task = {}
    for name, model in (("small", small), ("large", large)):
        sizes = graph_bytes_per_task(geoseg.segment(raster, model, chunks=(32, 32)).data)
        per_task[name] = sum(sizes) / len(sizes)
        print(f"{name} model ({weights[name == 'large'] / 1e6:.2f} MB of weights): "
              f"{len(sizes)} tasks, {per_task[name]:.0f} bytes per task, max {max(sizes)}")
        assert max(sizes) < BOUND
    assert abs(per_task["large"] - per_task["small"]) < 64  # only the file name differs


def test_store_task_payload_is_small(tmp_path, models):
    source = geoseg.io.open_source(write_zarr(tmp_path / "in.zarr", textured_image(256, 256)))
    work = region_work(models[1], source.shape[1:])
    payload = (segment_to_store, (slice(0, 32), slice(32, 64)), work, source,
               OutputTarget(str(tmp_path / "out.zarr")), 4, False)
    size = len(cloudpickle.dumps(payload))
    print(f"store task payload: {size} bytes")
    assert size < BOUND
