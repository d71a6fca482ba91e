"""Shared fixtures: models with random weights, rasters written to real stores."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
import torch
import zarr
from affine import Affine
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from geoseg.core.classes import ClassInfo
from geoseg.models import ModelInfo, SegmentationModel, UNet2D, save_model

# An idle two-worker LocalCluster burnt 7.9 CPU-seconds a minute (the workers' statistical
# profiler every 10 ms, the event loops' 20 ms tick, the system monitor), 2.1 without them:
# the suite's clusters idle between tests, and the CI machine has two cores. Set for this
# process and, through the environment, for the clusters and geoseg commands it starts.
QUIET_DASK = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
              "distributed.admin.system-monitor.interval": "2s"}
for _key, _value in QUIET_DASK.items():
    os.environ.setdefault("DASK_" + _key.upper().replace(".", "__").replace("-", "_"), str(_value))
dask.config.set(QUIET_DASK)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CRS = "EPSG:32618"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_run_records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Jobs run by the suite (and the geoseg commands it starts) write their run records to a
    temporary folder, not the user data folder, and log to no MLflow store the environment names."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GEOSEG_RUNS_DIR", str(tmp_path_factory.mktemp("geoseg-runs")))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module of small nets (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): the test processes share the machine's
    cores, and a thread pool in each only oversubscribes them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def random_unet(*, classes: int = 4, bands: int = 3, depth: int = 3, width: int = 8, seed: int = 0,
                name: str = "random-unet") -> SegmentationModel:
    """A U-Net with random weights whose arg-max varies across an image (not one class everywhere)."""
    torch.manual_seed(seed)
    net = UNet2D(bands, classes, depth=depth, width=width)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.3)
        net.head.bias.zero_()
    info = ModelInfo(name, "unet", {"in_channels": bands, "num_classes": classes, "depth": depth,
                                    "width": width},
                     tuple(ClassInfo(f"class_{i}") for i in range(classes)),
                     tuple(f"band_{i + 1}" for i in range(bands)), (128.0,) * bands, (64.0,) * bands)
    return SegmentationModel(net, info, device="cpu")


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "random-unet.safetensors"
    save_model(random_unet(), str(path))
    return str(path)


def edited_model(folder: Path, name: str, edit: Callable[[str], str]) -> str:
    """A saved random U-Net written again with the safetensors library, as any tool would,
    its weights kept and its metadata's model description replaced by ``edit(description)``."""
    source = folder / "source.safetensors"
    if not source.exists():
        save_model(random_unet(), str(source))
    with safe_open(str(source), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(source))
    save_file(tensors, str(folder / name), metadata={**metadata, "model": edit(metadata["model"])})
    return str(folder / name)


def textured_image(height: int, width: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 image with structure at several scales, so a random net's classes vary."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = [np.sin(yy / (7 + 5 * b)) * np.cos(xx / (11 + 3 * b)) for b in range(bands)]
    noise = rng.normal(0, 0.4, (bands, height, width))
    image = 128 + 90 * np.tanh(np.stack(base) + noise)
    return np.clip(image, 1, 255).astype(np.uint8)


def write_zarr(path: Path | str, image: np.ndarray, chunks: tuple[int, int] = (64, 64),
               **attrs: object) -> str:
    arr = zarr.create_array(str(path), shape=image.shape, chunks=(image.shape[0], *chunks),
                            dtype=image.dtype, dimension_names=["band", "y", "x"], attributes=attrs)
    arr[:] = image
    return str(path)


def write_geotiff(path: Path | str, image: np.ndarray, *, nodata: float | None = 0,
                  tiled: bool = True) -> str:
    profile = {"driver": "GTiff", "width": image.shape[2], "height": image.shape[1], "count": image.shape[0],
                   "dtype": image.dtype, "crs": CRS, "transform": TRANSFORM, "nodata": nodata}
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return str(path)


@pytest.fixture(scope="session")
def s3_server() -> dict:
    """A real S3 endpoint (moto's server) on 127.0.0.1; yields fsspec storage options."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"key": "geoseg-test-key", "secret": "SUPER-SECRET-VALUE-123",
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=options["key"],
                 aws_secret_access_key=options["secret"]).create_bucket(Bucket="geoseg")
    yield options
    server.stop()


@pytest.fixture(scope="session")
def cluster_address() -> str:
    """A real multi-process local Dask cluster shared by the job tests."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def alias_bomb(levels: int, width: int = 9) -> str:
    """A "billion laughs" job spec: each anchor a list of ``width`` aliases of the one before,
    so that a few hundred bytes expand into ``width ** levels`` values."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join([*lines, "input: {url: x.zarr}", "model: {path: builtin:demo-unet}",
                      "output: {url: o.zarr}\n"])


def job_dict(input_url: str, model: str, output_url: str, *, tile: int | None | str = "chunk",
             **output: object) -> dict:
    """A job spec. ``tile`` defaults to the output chunk, so that each task writes exactly one
    chunk, as tests of resuming, sharding and manifests need; ``tile=None`` leaves geoseg's
    default tile, with which tasks grow past small output chunks."""
    spec = {"input": {"url": input_url}, "model": {"path": model},
            "output": {"url": output_url, "chunks": [64, 64], **output}}
    if tile is not None:
        shards, chunks = output.get("shards"), spec["output"]["chunks"]
        spec["inference"] = {"tile": min(shards or chunks) if tile == "chunk" else tile}
    return spec


def output_with_a_bad_chunk(folder: Path) -> tuple[Path, np.ndarray]:
    """A finished 64 x 64 threshold job output in 32-pixel chunks whose chunk at y 0:32, x 32:64
    holds bytes that do not decode; (the output, its classes before the damage)."""
    from geoseg.jobs import JobSpec, run

    write_zarr(folder / "in.zarr", textured_image(64, 64, bands=1, seed=2), chunks=(32, 32))
    out = folder / "out.zarr"
    run(JobSpec.from_dict({"input": {"url": str(folder / "in.zarr")},
                           "model": {"method": "threshold", "params": {"thresholds": [128]}},
                           "output": {"url": str(out), "chunks": [32, 32]}}),
        scheduler="threads")
    whole = zarr.open_group(str(out), mode="r")["classes"][:]
    (out / "classes" / "c" / "0" / "1").write_bytes(b"garbage")
    return out, whole


@contextlib.contextmanager
def slurm_job_script_worker(jobqueue: dict, folder: Path) -> Iterator[object]:
    """A client of a SLURM cluster spec'd by ``jobqueue`` whose one job script runs here under
    bash (its #SBATCH lines are comments: the prologue, then the worker), its worker joined;
    the job is stopped on the way out."""
    from distributed import Client

    from geoseg.parallel.cluster import jobqueue_cluster
    from geoseg.parallel.cluster_spec import ClusterSpec

    with jobqueue_cluster(ClusterSpec(kind="slurm", jobqueue=jobqueue), "slurm") as slurm, \
            Client(slurm) as client:
        (folder / "job.sh").write_text(slurm.job_script())
        with open(folder / "job.log", "w") as log:
            job = subprocess.Popen(["bash", str(folder / "job.sh")], stdout=log, stderr=log,
                                   start_new_session=True)
        try:
            client.wait_for_workers(1, timeout=120)
            yield client
        finally:
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(timeout=60)
