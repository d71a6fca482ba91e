"""bench/bench_instances.py at a tiny size, so that the benchmark cannot rot."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from scipy import ndimage as ndi

from bench import bench_instances as bench

SCENE = bench.Scene(size=300, objects=150, seed=3)
SMALL = bench.Scene(size=180, objects=60, seed=3)  # 3 x 3 chunks of 64: dask-image's graph grows
# with the square of the chunks, and a distributed task costs about a millisecond here


def test_mask_is_the_same_whatever_the_chunking_with_objects_across_chunks(tmp_path: Path) -> None:
    bench.write_mask(str(tmp_path / "a.zarr"), SCENE, 64)
    bench.write_mask(str(tmp_path / "b.zarr"), SCENE, 100)
    a, b = (zarr.open_array(str(tmp_path / n), mode="r") for n in ("a.zarr", "b.zarr"))
    assert a.chunks == (64, 64) and a.dtype == np.uint8
    mask = a[:]
    np.testing.assert_array_equal(mask, b[:])
    labels, count = ndi.label(mask)
    assert 20 < count < SCENE.objects  # ellipses merge, roads join many
    extents = [max(s.stop - s.start for s in box) for box in ndi.find_objects(labels)]
    assert max(extents) > 2 * 64  # an object much larger than a chunk
    across = np.unique(np.concatenate([labels[63:65].ravel(), labels[:, 127:129].ravel()]))
    assert across.size > 5  # objects on chunk borders


@pytest.mark.slow  # a cluster of two processes and a peer library: the labelling itself is
# checked against scipy at any chunking in test_components.py; this keeps the script running
def test_benchmark_labels_every_way_and_they_agree(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    setup = bench.Setup(chunk=64, connectivity=2, workers=2, memory_limit="1GiB", peer_chunk=128,
                        timeout=120)
    result = bench.benchmark(tmp_path, SMALL, setup)
    runs = result["runs"]
    assert list(runs) == ["geoseg", "dask-image @128", "dask-image"]
    assert all(r["error"] is None for r in runs.values())
    count = runs["geoseg"]["count"]
    assert count > 10 and all(r["count"] == count for r in runs.values())
    for peer in ("dask-image @128", "dask-image"):
        assert result["agreement"][peer] == {"same_partition": True, "objects": count,
                                             "wrong_pixels": 0, "max_ids": (count, count)}
        assert result["ratios"][peer] > 0
    assert result["chunks"] == 9 and result["ratios_at_least"] == {}
    ours = runs["geoseg"]
    assert set(ours["phases"]) == {"border pass", "union-find (client)", "relabel + write"}
    assert ours["task_seconds"] and runs["dask-image"]["task_seconds"]
    assert len(ours["peak_rss"]) == 2 and all(peak > 0 for peak in ours["peak_rss"].values())
    bench.report(result)
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ratios"] == result["ratios"]


def test_agreement_sees_a_merge_and_pixels_off_the_mask(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[1:3, 1:3] = mask[5:7, 5:7] = 1
    ref, _ = ndi.label(mask)
    merged = (ref > 0).astype(np.uint32)
    spilled = ref.astype(np.uint32)
    spilled[0, 0] = 1
    urls = {}
    for name, data in {"mask": mask, "ref": ref, "merged": merged, "spilled": spilled}.items():
        urls[name] = str(tmp_path / f"{name}.zarr")
        zarr.create_array(urls[name], shape=data.shape, chunks=(4, 4), dtype=data.dtype)[:] = data
    assert bench.agree(urls["mask"], urls["ref"], urls["ref"]).same_partition
    merge = bench.agree(urls["mask"], urls["merged"], urls["ref"])
    assert not merge.same_partition and merge.wrong_pixels == 0
    spill = bench.agree(urls["mask"], urls["spilled"], urls["ref"])
    assert not spill.same_partition and spill.wrong_pixels == 1


def test_a_failing_or_slow_method_is_reported_not_raised(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="did not finish within"):
        bench.call_with_timeout(lambda: time.sleep(2) or 0, 0.05)
    with pytest.raises(MemoryError, match="too big"):
        bench.call_with_timeout(lambda: time.sleep(3) or 0, 10, lambda: "too big")
    assert bench.call_with_timeout(lambda: 7, 10) == 7

    def out_of_memory(*args: object) -> int:
        raise MemoryError("no room")

    url = str(tmp_path / "mask.zarr")
    bench.write_mask(url, SCENE, 100)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.register_plugin(bench.WorkerPeakRss())
        run = bench.measure(client, bench.Method("failing", out_of_memory), url,
                            str(tmp_path / "out.zarr"), bench.Setup(timeout=60))
    assert run.error == "MemoryError: no room" and run.count is None and run.seconds is None
    assert run.failed_after is not None
