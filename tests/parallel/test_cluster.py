"""A real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from distributed import Client

import geoseg
from tests.conftest import job_dict, textured_image, write_zarr
from tests.ports import free_port

BIN = Path(sys.executable).parent


@pytest.fixture()
def dask_cluster(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", port,
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [BIN / "dask", "worker", address, "--nthreads", "2", "--name", f"w{i}", "--no-dashboard",
             "--local-directory", str(tmp_path / f"w{i}")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_job_on_an_existing_cluster_loads_the_model_once_per_worker(tmp_path, model_path, dask_cluster):
    image = textured_image(128, 128, seed=11)  # 16 chunks: tasks for both workers' four threads
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(32, 32))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(src, model_path, str(tmp_path / "out.zarr"), chunks=[32, 32])))
    result = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(job), "--scheduler", dask_cluster],
                            check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    tasks = len(zarr.open_group(str(tmp_path / "out.zarr"))["manifest_done"][:].ravel())
    assert f"{tasks}/{tasks}" in result.stderr, result.stderr  # the progress bar reached every task
    expected = geoseg.load_model(model_path).predict_image(image).argmax(0)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"))["classes"][:], expected)
    with Client(dask_cluster) as client:
        counts = client.run(lambda: __import__("geoseg").models.load_counts())
    sha = geoseg.load_model(model_path).info.sha256
    assert len(counts) == 2, counts
    assert all(c == {sha: 1} for c in counts.values()), counts
    with Client(dask_cluster) as client:  # the job's worker plugin freed the model at its end
        held = client.run(lambda: __import__("geoseg").models.cache.loaded())
    assert list(held.values()) == [set(), set()], held


def test_two_jobs_sharing_a_model_on_one_cluster_never_free_it_under_each_other(model_path,
                                                                                 cluster_address):
    """A batch runs jobs of one model side by side: each job's plugin holds the model, the
    first to finish lets go of it, the last one frees it."""
    from geoseg.models.modelfile import read_header
    from geoseg.parallel.plugins import load_models, unload_models

    ref = read_header(model_path).ref()

    def holders(client: Client) -> dict[str, tuple[int, bool]]:  # per worker: holds, loaded
        return client.run(lambda sha: (__import__("geoseg").models.cache.holds().get(sha, 0),
                                       sha in __import__("geoseg").models.cache.loaded()), ref.sha256)

    with Client(cluster_address) as client:
        before = holders(client)  # this cluster is shared: earlier tests' jobs may hold it too
        first, second = load_models(client, ref), load_models(client, ref)
        assert first.name != second.name
        assert holders(client) == {w: (n + 2, True) for w, (n, _) in before.items()}
        unload_models(client, first)
        assert holders(client) == {w: (n + 1, True) for w, (n, _) in before.items()}
        unload_models(client, second)
        after = holders(client)
    assert {w: n for w, (n, _) in after.items()} == {w: n for w, (n, _) in before.items()}
    assert all(loaded == (n > 0) for n, loaded in after.values()), after


@pytest.mark.timeout(120)
def test_a_scheduler_without_workers_fails_the_job_in_bounded_time(tmp_path, model_path):
    port = free_port()
    scheduler = subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64), chunks=(32, 32))
        job = tmp_path / "job.yaml"
        job.write_text(yaml.safe_dump(job_dict(src, model_path, str(tmp_path / "out.zarr"))))
        result = subprocess.run(
            [sys.executable, "-m", "geoseg.cli", "run", str(job), "--cluster", f"tcp://127.0.0.1:{port}"],
            check=False, capture_output=True, text=True, timeout=100,
            env={**os.environ, "GEOSEG_WORKER_WAIT": "3", "COLUMNS": "1000"})
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"scheduler at tcp://127.0.0.1:{port} has no worker (waited 3 s" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.zarr").exists()


def mmapped_by_an_8_mib_array() -> int:
    """Bytes glibc maps afresh to hold a new 8 MiB array in this process (its ``hblkhd``)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                          "usmblks", "fsmblks", "uordblks", "fordblks",
                                                          "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd
    block = np.empty(8 << 20, np.uint8)
    grown = libc.mallinfo2().hblkhd - before
    del block
    return grown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize("path", ["job", "lazy"])
def test_workers_running_a_network_reuse_heap_memory_for_its_buffers(tmp_path, model_path, path):
    """Dask's worker processes start with MALLOC_TRIM_THRESHOLD_ set, which pins glibc's mmap
    threshold at 128 KiB: every activation tensor would be a fresh mapping. A task that runs a
    network raises it, so an 8 MiB buffer then comes from the heap: in a job as in a lazy
    ``segment`` computed on the cluster."""
    import logging

    from distributed import LocalCluster

    image = textured_image(128, 128, seed=3)
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(64, 64))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        assert list(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == ["65536"]
        before = list(client.run(mmapped_by_an_8_mib_array).values())
        if path == "job":
            spec = geoseg.jobs.JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "out.zarr")))
            geoseg.jobs.run(spec, client=client)
        else:
            geoseg.segment(geoseg.open_raster(src), model_path).compute()
        after = list(client.run(mmapped_by_an_8_mib_array).values())
    assert before[0] >= 8 << 20 and after == [0], (before, after)


@pytest.mark.timeout(180)
def test_a_killed_client_leaves_no_model_on_a_long_lived_cluster(model_path):
    """A client killed mid-job never unregisters its model plugin; the scheduler does it when the
    client's connection drops, so the workers free the model (and later workers never load it)."""
    from distributed import LocalCluster

    from geoseg.models.modelfile import read_header

    sha = read_header(model_path).ref().sha256
    code = ("import sys, time\nfrom distributed import Client\n"
            "from geoseg.models.modelfile import read_header\n"
            "from geoseg.parallel.plugins import load_models\n"
            "client = Client(sys.argv[1])\nload_models(client, read_header(sys.argv[2]).ref())\n"
            "print('held', flush=True)\ntime.sleep(120)\n")

    def held(client: Client) -> list[int]:
        return list(client.run(lambda: __import__("geoseg").models.cache.holds().get(sha, 0)).values())

    def plugins(client: Client) -> list[str]:  # geoseg's model plugins registered on the scheduler
        names = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
        return [n for n in names if n.startswith("geoseg-models-")]

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        owner = subprocess.Popen([sys.executable, "-c", code, cluster.scheduler_address, model_path],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert owner.stdout.readline().strip() == "held"
            assert held(client) == [1]
            assert len(plugins(client)) == 1
        finally:
            owner.kill()
            owner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (held(client) != [0] or plugins(client)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert held(client) == [0]
        assert plugins(client) == []
        cluster.scale(2)  # a worker that joins now loads nothing
        client.wait_for_workers(2, timeout=60)
        assert held(client) == [0, 0]
        assert all(not loaded for loaded in client.run(
            lambda: __import__("geoseg").models.cache.loaded()).values())


def test_releasing_a_plugin_the_scheduler_already_released_is_no_error(model_path, cluster_address):
    """A client that lost its connection for a while finds its plugin gone at the job's end."""
    from geoseg.models.modelfile import read_header
    from geoseg.parallel.plugins import load_models, unload_models

    with Client(cluster_address) as client:
        plugin = load_models(client, read_header(model_path).ref())
        client.unregister_worker_plugin(plugin.name)  # what the scheduler does on a disconnect
        with pytest.raises(ValueError, match="does not exist"):
            client.unregister_worker_plugin(plugin.name)
        unload_models(client, plugin)
