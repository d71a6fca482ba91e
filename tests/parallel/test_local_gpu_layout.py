"""A local cluster's worker processes: one per GPU, pinned by ``CUDA_VISIBLE_DEVICES``, with
threads that feed it; processes x threads on a machine without GPUs. The layout is checked as
arithmetic, then real clusters start with ``GEOSEG_GPUS`` forced (no GPU needed: the workers only
have to see their ids)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from distributed import Client
from hypothesis import given
from hypothesis import strategies as st

from geoseg import config
from geoseg.errors import ClusterConfigError, SettingError
from geoseg.parallel.cluster import PinnedLocalCluster, WorkerLayout, connect, local_layout
from geoseg.parallel.cluster_spec import ClusterSpec
from tests.deploy.commands import check_command

README = Path(__file__).parents[2] / "deploy" / "README.md"

GPU_IDS = st.lists(st.integers(0, 15).map(str), min_size=1, max_size=8, unique=True)
COUNT = st.none() | st.integers(1, 16)


def visible_gpu() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --- the layout, without a cluster ---------------------------------------------------------------


@given(cores=st.integers(1, 256), n_workers=COUNT, threads=COUNT)
def test_without_gpus_the_layout_is_processes_times_threads_as_before(cores, n_workers, threads):
    layouts = local_layout(cores, [], n_workers, threads)
    old_threads = threads or 1  # what the layout was when threads_per_worker defaulted to 1
    old_workers = n_workers or max(1, cores // old_threads)
    assert layouts == [WorkerLayout(old_threads, max(1, cores // (old_workers * old_threads)))] * old_workers
    assert all(layout.env == {} for layout in layouts)  # workers inherit this environment


@given(cores=st.integers(1, 256), gpu_ids=GPU_IDS, gpu_threads=st.integers(1, 16))
def test_one_worker_per_gpu_each_seeing_only_its_own(cores, gpu_ids, gpu_threads):
    layouts = local_layout(cores, gpu_ids, gpu_threads=gpu_threads)
    # each sees its own GPU as cuda:0, whatever GEOSEG_DEVICE=cuda:N said in the client's process
    assert [layout.env for layout in layouts] == [{"CUDA_VISIBLE_DEVICES": i, "GEOSEG_DEVICE": "cuda"}
                                                  for i in gpu_ids]
    assert {layout.nthreads for layout in layouts} == {gpu_threads}
    assert {layout.torch_threads for layout in layouts} == {1}  # the GPU computes, not torch's CPU threads


@given(gpu_ids=GPU_IDS, n_workers=st.integers(1, 16), threads=st.integers(1, 16))
def test_explicit_workers_and_threads_win_over_the_gpu_defaults(gpu_ids, n_workers, threads):
    layouts = local_layout(8, gpu_ids, n_workers, threads, gpu_threads=4)
    assert len(layouts) == n_workers and {layout.nthreads for layout in layouts} == {threads}
    seen = [layout.env["CUDA_VISIBLE_DEVICES"] for layout in layouts]
    assert seen == [gpu_ids[i % len(gpu_ids)] for i in range(n_workers)]  # the GPUs in turn


# --- which GPUs, from the environment ------------------------------------------------------------


@pytest.mark.parametrize(("value", "ids"), [
    ("0,1", ["0", "1"]), (" 2, 3 ", ["2", "3"]), ("none", []), ("NONE", []),
    ("GPU-8e1c2f4a-0b1d-4c2e-9f3a-5d6e7f809a1b", ["GPU-8e1c2f4a-0b1d-4c2e-9f3a-5d6e7f809a1b"]),
    ("MIG-GPU-8e1c2f4a/1/0", ["MIG-GPU-8e1c2f4a/1/0"])])
def test_geoseg_gpus_names_the_gpus(monkeypatch, value, ids):
    monkeypatch.setenv("GEOSEG_GPUS", value)
    monkeypatch.delenv("GEOSEG_DEVICE", raising=False)
    assert config.gpu_ids() == ids


def test_without_geoseg_gpus_the_gpus_are_those_torch_counts(monkeypatch):
    import torch

    monkeypatch.delenv("GEOSEG_GPUS", raising=False)
    monkeypatch.delenv("GEOSEG_DEVICE", raising=False)
    ids = config.gpu_ids()
    assert len(ids) == torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    expected = visible.split(",")[:len(ids)] if visible is not None else [str(i) for i in range(len(ids))]
    assert ids == [i.strip() for i in expected]


def test_device_cuda_n_means_the_n_th_gpu_alone(monkeypatch):
    """GEOSEG_DEVICE=cuda:1 made a worker per GPU, each told to run on a cuda:1 it cannot see."""
    monkeypatch.delenv("GEOSEG_GPUS", raising=False)
    monkeypatch.setenv("GEOSEG_DEVICE", "cuda:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    monkeypatch.setattr(config, "_visible_gpus", lambda: ["4", "5", "6"])  # torch counts 3 here
    assert config.gpu_ids() == ["5"]
    monkeypatch.setenv("GEOSEG_DEVICE", "cuda:7")
    assert config.gpu_ids() == []


def test_device_cpu_means_no_gpu_workers(monkeypatch):
    monkeypatch.setenv("GEOSEG_GPUS", "0,1")
    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    assert config.gpu_ids() == []


@pytest.mark.parametrize("value", ["0,,1", "gpu0", "0,0", "-1", ""])
def test_a_bad_geoseg_gpus_says_what_is_allowed(monkeypatch, value):
    monkeypatch.setenv("GEOSEG_GPUS", value)
    monkeypatch.delenv("GEOSEG_DEVICE", raising=False)
    with pytest.raises(ClusterConfigError) as err:
        config.gpu_ids()
    text = str(err.value)
    assert f"GEOSEG_GPUS: received {value!r}" in text and "e.g. GEOSEG_GPUS=0,1" in text
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("value", ["0", "four", "-2", ""])
def test_a_bad_geoseg_gpu_threads_says_what_is_allowed(monkeypatch, value):
    monkeypatch.setenv("GEOSEG_GPU_THREADS", value)
    with pytest.raises(SettingError) as err:
        config.gpu_threads()
    assert f"GEOSEG_GPU_THREADS: received {value!r}; expected a whole number >= 1" in str(err.value)


def test_threads_per_worker_defaults_to_auto():
    assert ClusterSpec().threads_per_worker is None
    assert ClusterSpec(threads_per_worker=3).threads_per_worker == 3


# --- real local clusters -------------------------------------------------------------------------


def test_a_local_cluster_runs_one_pinned_worker_per_gpu(monkeypatch):
    monkeypatch.setenv("GEOSEG_GPUS", "0,1")
    monkeypatch.delenv("GEOSEG_GPU_THREADS", raising=False)
    monkeypatch.delenv("GEOSEG_DEVICE", raising=False)
    with connect(ClusterSpec(kind="local")) as client:
        seen = client.run(visible_gpu)
        assert sorted(seen.values()) == ["0", "1"], seen  # two workers, each its own GPU
        assert set(client.nthreads().values()) == {4}, client.nthreads()
        assert set(client.run(torch_threads).values()) == {1}


def _forked() -> bool:
    import sys

    return hasattr(sys, "_geoseg_forked_marker")  # set in the test's process: a fork copies it


def test_gpu_workers_are_spawned_even_where_dask_is_told_to_fork(monkeypatch):
    """A forked worker inherits its parent's CUDA state, which CUDA refuses to use."""
    import dask

    monkeypatch.setenv("GEOSEG_GPUS", "0")
    monkeypatch.delenv("GEOSEG_DEVICE", raising=False)
    monkeypatch.setattr(sys, "_geoseg_forked_marker", True, raising=False)
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        with connect(ClusterSpec(kind="local")) as client:
            assert set(client.run(_forked).values()) == {False}
        assert dask.config.get("distributed.worker.multiprocessing-method") == "fork"
    monkeypatch.setenv("GEOSEG_GPUS", "none")  # without GPUs the user's choice stands
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}), \
            connect(ClusterSpec(kind="local", n_workers=1)) as client:
        assert set(client.run(_forked).values()) == {True}


def test_without_gpus_a_local_cluster_keeps_processes_times_threads(monkeypatch):
    monkeypatch.setenv("GEOSEG_GPUS", "none")
    cores = os.cpu_count() or 1
    threads = max(1, cores // 2)  # two processes on a machine of two or more cores
    with connect(ClusterSpec(kind="local", threads_per_worker=threads)) as client:
        nthreads = client.nthreads()
        assert len(nthreads) == max(1, cores // threads) and set(nthreads.values()) == {threads}
        assert set(client.run(visible_gpu).values()) == {visible_gpu()}  # inherited, not pinned
        assert set(client.run(torch_threads).values()) == {max(1, cores // (len(nthreads) * threads))}


def test_a_pinned_cluster_refuses_more_workers_than_layouts():
    with PinnedLocalCluster([WorkerLayout(1, 1, {"CUDA_VISIBLE_DEVICES": "3"})],
                            dashboard_address=None) as cluster:
        with pytest.raises(ClusterConfigError) as err:
            cluster.scale(2)
        assert "received a request for worker 2; expected at most 1" in str(err.value)
        assert len(cluster.worker_spec) == 1


# --- the recipe in deploy/README.md --------------------------------------------------------------


def test_the_readme_gpu_worker_command_parses_with_dask():
    (line,) = [line for line in README.read_text().splitlines() if "CUDA_VISIBLE_DEVICES=$gpu" in line]
    words = shlex.split(line.split("&")[0])
    env, command = words[:words.index("dask")], words[words.index("dask"):]
    assert env == ["CUDA_VISIBLE_DEVICES=$gpu", "GEOSEG_DEVICE=cuda"]
    assert command[:2] == ["dask", "worker"] and command[command.index("--nthreads") + 1] == "4"
    check_command(command)


def _heartbeat_filtered() -> bool:
    import logging

    from geoseg.logs import DropLostHeartbeats

    return any(isinstance(f, DropLostHeartbeats) for f in logging.getLogger("distributed.worker").filters)


def test_local_workers_drop_lost_heartbeats_from_their_start():
    """Preloaded, so in place before the first heartbeat: a command interrupted while its
    cluster starts closes the scheduler under workers still starting, whose heartbeat failure
    printed a traceback of their own."""
    with PinnedLocalCluster([WorkerLayout(1, 1)], dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert set(client.run(_heartbeat_filtered).values()) == {True}


def test_the_lost_heartbeat_filter_keeps_every_other_worker_record():
    import logging

    from geoseg.logs import DropLostHeartbeats, quiet_lost_heartbeats

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, message, None, None)

    kept = DropLostHeartbeats()
    assert not kept.filter(record("Failed to communicate with scheduler during heartbeat."))
    assert kept.filter(record("Unexpected exception during heartbeat. Closing worker."))
    quiet_lost_heartbeats()
    quiet_lost_heartbeats()  # once, however often it is called
    assert sum(isinstance(f, DropLostHeartbeats)
               for f in logging.getLogger("distributed.worker").filters) == 1
