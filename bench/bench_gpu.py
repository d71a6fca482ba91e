"""GPU throughput of the network alone, a geoseg job and a plain Dask script, side by side.

    python bench/bench_gpu.py --gpu-threads 1,2,4 --check            # on a GPU (one H200)
    python bench/bench_gpu.py --device cpu --size 2048 --models unet  # CPU smoke run

Setting: a ``--size`` x ``--size`` x 3 uint8 Zarr v3 array, zstd, ``--chunk`` pixel chunks
(default 16384 and 2048), written chunk by chunk by dask (a smooth pattern plus noise). Networks
(``--models unet,deeplab``) have random weights, their batch norm calibrated on the image so that
the class ids vary, and are saved as geoseg model files:

* ``unet``: the registered ``unet``, depth 4, width 32 (local: geoseg crops tiles with a halo);
* ``deeplab``: ``deeplabv3plus``, backbone resnet50, output stride 16, with image pooling (global
  context: geoseg blends overlapping windows, gaussian, overlap 0.5, instead of cropping halos).

Each network, measured in one run, best of ``--repeats``, alternating the paths:

1. network alone: batches of ``GEOSEG_BATCH_SIZE`` (4) windows of exactly geoseg's tile geometry
   (tile core + 2 x halo; the blended window for global-context models), already on the device as
   normalised float32; bf16 autocast + channels_last on CUDA, float32 on CPU; inference mode,
   warm-up first, synchronised timing. It runs the windows one pass over the image takes
   (``region_tiles`` of the whole image: tiles when cropping; blended windows, which overlap, when
   blending), counted as the image's pixels, so comparable to the job's output pixels. On CUDA it is
   timed again with ``cudnn.benchmark`` on (geoseg leaves it off): would cuDNN's autotuning pay?
2. geoseg job: ``geoseg.jobs.run`` Zarr to Zarr (local cluster: one worker per GPU, with each
   of ``--gpu-threads`` threads per worker in turn, e.g. ``1,2,4``, to see how many reading
   threads keep the GPU busy; output chunks = input chunks, default batch size; ``--compile``
   adds ``inference.compile: true``): compute inside the job and wall clock with cluster start.
3. plain script: ``da.from_zarr`` -> ``map_overlap(depth=halo, boundary="reflect")`` running the
   same network on each block on the device (normalise, autocast, argmax there, uint8 back) ->
   ``to_zarr``, threaded scheduler with ``--script-threads`` threads.

Prints Mpx/s and Gpx/h per device, ratios job / network (target >= 0.8) and job / script (target
>= 1.2). ``--check`` compares the job's class ids with the script's on random windows of up to
512 x 512 at least a halo from the edges, and fails below 0.99 for a cropping model.
Data go to a temporary folder (inside ``--workdir`` if given), deleted at the end unless ``--keep``.
Results go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch
import torch.nn.functional as F
import zarr
from torch import nn

import geoseg
from geoseg.jobs import JobSpec, RunReport, run
from geoseg.models.header import ModelInfo
from geoseg.models.model import SegmentationModel
from geoseg.models.registry import build_network
from geoseg.parallel.lazy import region_work
from geoseg.tiling.plan import region_tiles, round_up

NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "unet": ("unet", {"depth": 4, "width": 32}),
    "deeplab": ("deeplabv3plus", {"backbone": "resnet50", "output_stride": 16}),
}
N_CLASSES = 6
MEAN, STD = (128.0, 128.0, 128.0), (40.0, 40.0, 35.0)
CHECK_WINDOW, CHECK_WINDOWS = 512, 8
MIN_AGREEMENT = 0.99  # a cropping model, away from the edges: both run the same network


@dataclass(frozen=True)
class Geometry:
    """Where geoseg puts a model's tiles (per axis), and the halo a script would use."""

    window: int  # network input side
    core: int  # output pixels per tile along an axis (the step between windows when blending)
    halo: int  # receptive radius rounded up to the stride: the script's map_overlap depth
    blend: str
    one_pass: int  # windows one pass over the whole image takes (region_tiles of the image)

    def describe(self) -> str:
        if self.blend == "crop" and self.window < self.core + 2 * self.halo:
            return (f"crop: tile {self.core} + 2 x halo {self.halo}, the window clipped to the "
                    f"image: {self.window}")
        if self.blend == "crop":
            return f"crop: tile {self.core} + 2 x halo {self.halo} = window {self.window}"
        return (f"{self.blend} blend: window {self.window}, step {self.core}; "
                f"script halo {self.halo}")


def geometry(model: SegmentationModel, size: int, chunk: int) -> Geometry:
    """Tile geometry as the job plans it (``region_work`` with no tile, halo or blend given)."""
    spec = region_work(model, (size, size), regions=(chunk, chunk)).tiling
    halo = round_up(max(model.halo), max(model.stride))
    one_pass = len(region_tiles(spec, (slice(0, size), slice(0, size))))
    if spec.blend != "crop":
        return Geometry(spec.window_shape[0], spec.steps[0], halo, spec.blend, one_pass)
    return Geometry(spec.window_shape[0], spec.tile[0], spec.halo[0], spec.blend, one_pass)


# --- data and models ---------------------------------------------------------------------------


def _pattern_block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """One chunk of the scene: smooth waves per band plus noise seeded by the chunk's position."""
    info = block_info[None]
    (_, _), (y0, y1), (x0, x1) = info["array-location"]
    yy, xx = np.ogrid[y0:y1, x0:x1]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    waves = (np.sin(yy / 97.0) + np.cos(xx / 61.0), np.sin((xx + yy) / 143.0) * np.cos(yy / 37.0),
             np.cos(xx / 23.0) * np.sin(yy / 211.0))
    rng = np.random.default_rng([y0, x0])
    bands = [128 + 45 * w + rng.normal(0, 18, (y1 - y0, x1 - x0)).astype(np.float32) for w in waves]
    return np.clip(np.stack(bands), 0, 255).astype(np.uint8)


def write_image(url: str, *, size: int, chunk: int) -> float:
    """Write the scene as a Zarr v3 array (band, y, x), zstd; returns the seconds it took."""
    start = time.perf_counter()
    target = zarr.create_array(url, shape=(3, size, size), chunks=(3, chunk, chunk), dtype="uint8",
                               compressors=zarr.codecs.ZstdCodec(level=3),
                               dimension_names=["band", "y", "x"])
    chunks = ((3,), _splits(size, chunk), _splits(size, chunk))
    image = da.map_blocks(_pattern_block, dtype=np.uint8, chunks=chunks)
    da.store(image, target, lock=False)
    return time.perf_counter() - start


def _splits(n: int, chunk: int) -> tuple[int, ...]:
    return tuple(min(chunk, n - i) for i in range(0, n, chunk))


def make_model(name: str, url: str, sample: np.ndarray) -> str:
    """Build network ``name`` with random weights, calibrate its batch norm on ``sample``
    (raw uint8 windows ``(N, 3, h, w)``) and save it as a geoseg model file at ``url``."""
    arch, extra = NETWORKS[name]
    config = {"in_channels": 3, "num_classes": N_CLASSES, **extra}
    torch.manual_seed(0)
    net = build_network(arch, config)
    _calibrate_batchnorm(net, normalise(torch.from_numpy(sample), torch.device("cpu")))
    info = ModelInfo.from_dict({
        "name": f"bench-{name}", "architecture": arch, "config": config,
        "classes": [{"name": f"class{i}"} for i in range(N_CLASSES)],
        "bands": ["red", "green", "blue"], "normalization": {"mean": list(MEAN), "std": list(STD)}})
    geoseg.save_model(SegmentationModel(net, info, device="cpu"), url)
    return url


def _calibrate_batchnorm(net: nn.Module, x: torch.Tensor) -> None:
    """Running statistics from one pass over ``x``: with the initial ones (mean 0, variance 1) a
    random network answers one class almost everywhere, and agreement checks mean nothing."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batches
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()


def normalise(raw: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, 3, h, w)`` to the network's normalised float32, computed on ``device``."""
    mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, -1, 1, 1)
    return (raw.to(device).float() - mean) / std


def read_windows(url: str, *, side: int, step: int, count: int) -> np.ndarray:
    """``count`` windows ``(count, 3, side, side)`` from the image's top left, ``step`` apart
    (reflect-padded when the image is smaller than a window)."""
    array = zarr.open_array(url, mode="r")
    size = array.shape[-1]
    per_row = max(1, math.isqrt(count - 1) + 1)
    windows = []
    last = max(size - side, 0)
    for i in range(count):
        y, x = min((i // per_row) * step, last), min((i % per_row) * step, last)
        window = np.asarray(array[:, y : y + side, x : x + side])
        pad = [(0, 0), (0, side - window.shape[1]), (0, side - window.shape[2])]
        windows.append(np.pad(window, pad, mode="reflect") if any(p for _, p in pad) else window)
    return np.stack(windows)


# --- the three paths ---------------------------------------------------------------------------


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_network(net: nn.Module, batch: torch.Tensor, *, n_batches: int,
                 device: torch.device) -> float:
    """Seconds for ``n_batches`` forward passes plus argmax on ``batch``, after a warm-up."""
    warmup = [batch] * 3 if device.type == "cuda" else [batch[:1]]  # CPU: one tile is enough
    with torch.inference_mode(), autocast(device):
        for x in warmup:
            net(x).argmax(1)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(n_batches):
            net(batch).argmax(1).to(torch.uint8)
        synchronize(device)
    return time.perf_counter() - start


def run_job(src: str, out: str, model_url: str, *, chunk: int, runs_dir: str, threads: int,
            compile: bool) -> RunReport:
    """The geoseg job: local cluster (one worker per GPU with ``threads`` threads), default batch
    size, output chunks = input chunks."""
    spec = JobSpec.from_dict({
        "name": "bench-gpu", "input": {"url": src}, "model": {"path": model_url},
        "output": {"url": out, "chunks": [chunk, chunk]}, "cluster": {"kind": "local"},
        "inference": {"compile": compile}, "runs_dir": runs_dir})
    os.environ["GEOSEG_GPU_THREADS"] = str(threads)  # read when the local cluster starts
    return run(spec)


def segment_block(block: np.ndarray, *, net: nn.Module, stride: int,
                  device: torch.device) -> np.ndarray:
    """What a user's map_overlap function does: uint8 block (3, h, w) to class ids (h, w)."""
    x = normalise(torch.from_numpy(np.require(block, requirements=("C", "W")))[None], device)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % stride, 0, -h % stride), mode="reflect")
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device):
        logits = net(x)
    return logits[0, :, :h, :w].argmax(0).to(torch.uint8).cpu().numpy()


def run_script(src: str, out: str, net: nn.Module, *, halo: int, stride: int, device: torch.device,
               threads: int) -> float:
    """The plain Dask script, Zarr to Zarr; returns its wall-clock seconds."""
    start = time.perf_counter()
    image = da.from_zarr(src)
    fn = partial(segment_block, net=net, stride=stride, device=device)
    mask = da.map_overlap(fn, image, depth={0: 0, 1: halo, 2: halo}, boundary="reflect",
                          drop_axis=0, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    with dask.config.set(scheduler="threads", num_workers=threads):
        mask.to_zarr(out)
    return time.perf_counter() - start


def agreement(job_out: str, script_out: str, *, size: int, margin: int, seed: int = 0) -> float:
    """Fraction of equal class ids on random windows of the two outputs, each at least
    ``margin`` (the halo) from the image's edge: there the job shifts its windows inside the
    image and the network pads with zeros, where the script's ``map_overlap`` mirrors the edge."""
    job = zarr.open_group(job_out, mode="r")["classes"]
    script = zarr.open_array(script_out, mode="r")
    side = min(CHECK_WINDOW, size - 2 * margin)
    if side <= 0:
        raise SystemExit(f"--check: --size {size} leaves no pixel {margin} or more from the edge; "
                         f"use --size {4 * margin} or more.")
    rng, same = np.random.default_rng(seed), 0
    for _ in range(CHECK_WINDOWS):
        y, x = (int(v) for v in rng.integers(margin, size - margin - side + 1, 2))
        window = (slice(y, y + side), slice(x, x + side))
        same += int(np.count_nonzero(np.asarray(job[window]) == np.asarray(script[window])))
    return same / (CHECK_WINDOWS * side * side)


# --- one network, all paths --------------------------------------------------------------------


@dataclass
class Best:
    """Best seconds per path, and the pixels each path produced."""

    network_s: float = math.inf
    network_px: int = 0
    tuned_s: float = math.inf  # the network alone with cudnn.benchmark (geoseg leaves it off)
    jobs: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # threads: compute, wall, load
    job_px: int = 0
    script_s: float = math.inf
    script_px: int = 0
    agreement: float | None = None
    batch: int = 0  # windows per network call: GEOSEG_BATCH_SIZE, or all the image holds
    cluster: str = ""  # the job's cluster kind: "threads" for a small job run in this process


def bench_model(name: str, args: argparse.Namespace, folder: Path,
                src: str) -> tuple[Geometry, Best]:
    device, size, batch_size = torch.device(args.device), args.size, args.batch_size
    model_url = make_model(name, str(folder / f"{name}.safetensors"),
                           read_windows(src, side=min(512, size), step=512, count=2))
    model = geoseg.load_model(model_url, device=args.device)
    net, stride = model.net, max(model.stride)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    geo = geometry(model, size, args.chunk)
    if geo.halo >= size:
        raise SystemExit(f"--size {size} is no larger than {name}'s halo of {geo.halo} pixels, so the "
                         f"script's map_overlap cannot reflect it; use --size {2 * geo.halo} or more.")
    # as many windows as the job runs (no more in a batch than the image holds), so that the
    # network's pixels per second count pixels of the image, not of windows it does not have
    n_windows = geo.one_pass
    batch_size = min(batch_size, n_windows)
    raw = read_windows(src, side=geo.window, step=geo.core, count=batch_size)
    batch = normalise(torch.from_numpy(raw), device)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    n_batches = math.ceil(n_windows / batch_size)
    best, job_out, script_out = Best(), str(folder / "job.zarr"), str(folder / "script.zarr")

    def network() -> None:
        seconds = time_network(net, batch, n_batches=n_batches, device=device)
        best.network_s = min(best.network_s, seconds)
        # each window stands for its share of the image (a last, partial batch is run full)
        best.network_px = round(n_batches * batch_size * size * size / n_windows)
        best.batch = batch_size
        if device.type == "cuda":  # would letting cuDNN time its algorithms per shape pay?
            torch.backends.cudnn.benchmark = True
            try:
                best.tuned_s = min(best.tuned_s, time_network(net, batch, n_batches=n_batches,
                                                              device=device))
            finally:
                torch.backends.cudnn.benchmark = False

    def job(threads: int) -> None:
        shutil.rmtree(job_out, ignore_errors=True)
        if device.type == "cuda":  # the job's worker shares the GPU with this process's cache
            torch.cuda.empty_cache()
        report = run_job(src, job_out, model_url, chunk=args.chunk, runs_dir=str(folder / "runs"),
                         threads=threads, compile=args.compile)
        compute, wall, load = best.jobs.get(threads, (math.inf, math.inf, math.inf))
        timings = report.provenance["timings"]
        best.jobs[threads] = (min(compute, timings["compute_s"]), min(wall, report.seconds),
                              min(load, timings["model_load_s"]))
        best.job_px = report.pixels
        best.cluster = report.provenance.get("cluster", {}).get("kind", "")

    def script() -> None:
        shutil.rmtree(script_out, ignore_errors=True)
        seconds = run_script(src, script_out, net, halo=geo.halo, stride=stride, device=device,
                             threads=args.script_threads)
        best.script_s, best.script_px = min(best.script_s, seconds), size * size

    _alternate([network, *(partial(job, t) for t in args.gpu_threads), script], args.repeats)
    if args.check:
        best.agreement = agreement(job_out, script_out, size=size, margin=geo.halo)
    return geo, best


def _alternate(paths: list[Callable[[], None]], repeats: int) -> None:
    """Run every path once per repeat, in reverse order every other repeat."""
    for i in range(repeats):
        for path in paths if i % 2 == 0 else paths[::-1]:
            path()


# --- report ------------------------------------------------------------------------------------


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"device: {name} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"device: cpu, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def print_model(name: str, geo: Geometry, best: Best, args: argparse.Namespace) -> None:
    arch, extra = NETWORKS[name]
    print(f"{name}: {arch} {extra}; {geo.describe()}")
    precision = "bf16, channels_last" if args.device == "cuda" else "float32"
    rows = [(f"network alone ({precision}, batch {best.batch})", best.network_s, best.network_px),
            (f"plain script (map_overlap, {args.script_threads} threads)", best.script_s,
             best.script_px)]
    if best.tuned_s < math.inf:
        rows.insert(1, ("network alone, cudnn.benchmark on", best.tuned_s, best.network_px))
    # a small CPU job runs on threads in this process: no worker, no cluster, --gpu-threads unused
    in_process = best.cluster == "threads"
    for threads, (compute_s, wall_s, _) in sorted(best.jobs.items()):
        name = "in this process (small job)" if in_process else f"{threads} thread(s)/GPU worker"
        start = "no cluster started" if in_process else "cluster start"
        rows += [(f"job compute, {name}", compute_s, best.job_px),
                 (f"job end to end ({start})", wall_s, best.job_px)]
    for label, seconds, pixels in rows:
        rate = pixels / 1e6 / seconds
        print(f"  {label:<44}: {seconds:8.2f} s {rate:9.2f} Mpx/s {rate * 3.6:8.2f} Gpx/h")
    network = best.network_px / 1e6 / best.network_s
    script = best.script_px / 1e6 / best.script_s
    for threads, (compute_s, wall_s, load_s) in sorted(best.jobs.items()):
        compute, job = best.job_px / 1e6 / compute_s, best.job_px / 1e6 / wall_s
        who = "in process" if in_process else f"{threads} thread(s)"
        if not in_process:
            print(f"  {who}: model load on the worker (not in compute): {load_s:.2f} s")
        print(f"  {who}: job compute / network alone  : {compute / network:5.2f}  (>= 0.8); "
              f"end to end {job / network:5.2f}")
        print(f"  {who}: job compute / plain script   : {compute / script:5.2f}  (>= 1.2); "
              f"end to end {job / script:5.2f}")
    if best.agreement is not None:
        where = f"{CHECK_WINDOWS} windows of {min(CHECK_WINDOW, args.size - 2 * geo.halo)}^2"
        print(f"  {'agreement job vs script (' + where + ')':<44}: {best.agreement:.4f}"
              + ("" if geo.blend == "crop" else "  (global context: the job blends whole windows, "
                 "the script crops halos; not expected to agree)"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--size", type=int, default=16384, help="image side in pixels")
    parser.add_argument("--chunk", type=int, default=2048, help="Zarr chunk side, input and output")
    parser.add_argument("--models", default="unet,deeplab",
                        help=f"comma-separated: {', '.join(NETWORKS)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="best of this many runs per path (default 1 at size >= 16384, else 2)")
    parser.add_argument("--script-threads", type=int, default=4)
    parser.add_argument("--gpu-threads", default="4",
                        help="comma-separated threads per GPU worker to measure (reads overlap "
                             "compute: how many are needed to keep the GPU busy), e.g. 1,2,4")
    parser.add_argument("--compile", action="store_true", help="inference.compile: true in the job")
    parser.add_argument("--check", action="store_true", help="compare job and script class ids")
    parser.add_argument("--workdir", default=None,
                        help="folder for the temporary data (default: TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.gpu_threads = [int(t) for t in args.gpu_threads.split(",") if t.strip()]
    unknown = sorted(set(args.models) - set(NETWORKS))
    if unknown:
        parser.error(f"--models: received {', '.join(unknown)}; "
                     f"expected some of {', '.join(NETWORKS)}.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; "
                     "run on a GPU or pass --device cpu.")
    args.repeats = args.repeats or (1 if args.size >= 16384 else 2)
    args.batch_size = int(os.environ.get("GEOSEG_BATCH_SIZE", "4"))  # geoseg's default
    return args


def main() -> None:
    args = parse_args()
    os.environ["GEOSEG_DEVICE"] = args.device  # the job's workers inherit it
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="geoseg-bench-gpu-", dir=args.workdir))
    try:
        src = str(folder / "image.zarr")
        seconds = write_image(src, size=args.size, chunk=args.chunk)
        print(device_line(torch.device(args.device)))
        print(f"image {args.size} x {args.size} x 3 uint8 ({args.size**2 / 1e6:.1f} Mpx), "
              f"Zarr v3 zstd, chunks {args.chunk} (written in {seconds:.1f} s); "
              f"best of {args.repeats}")
        disagree = []
        for name in args.models:
            geo, best = bench_model(name, args, folder, src)
            print_model(name, geo, best, args)
            if geo.blend == "crop" and best.agreement is not None and best.agreement < MIN_AGREEMENT:
                disagree.append(f"{name} {best.agreement:.4f}")
        if disagree:
            raise SystemExit(f"--check: the job's class ids agree with the script's on less than "
                             f"{MIN_AGREEMENT} of the pixels checked: {', '.join(disagree)}")
    finally:
        if args.keep:
            print(f"data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
