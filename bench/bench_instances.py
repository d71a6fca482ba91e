"""Connected components at scale: geoseg's chunked ``label`` against dask-image's, on one cluster.

    python bench/bench_instances.py [--size 20000] [--chunk 1000] [--objects 150000]
        [--connectivity 1] [--workers 2] [--memory-limit 4GiB] [--peer-chunk 4000]
        [--timeout 3600] [--client-memory-limit 10GiB] [--out DIR]

Target (issue 13): dask-image time / geoseg time >= 1.5 on a 20000 x 20000 mask of at least
100k objects in at least 400 chunks, worker memory bounded by a few chunks.

The mask (uint8, 0 background, 1 object; Zarr v3, zstd, chunks ``--chunk``) is drawn chunk by
chunk: about ``--objects`` small ellipses (semi-axes 2 to 12 pixels) whose centres come from a
random generator seeded per 256 x 256 cell, so a chunk needs only its own and its neighbouring
cells; a few large rings (radius ``size / 20`` to ``size / 8``, much larger than 1000-pixel
chunks) and three 5-pixel roads crossing the whole raster, which join many ellipses into objects
spanning every chunk row. Overlapping ellipses merge, so there are fewer objects than ellipses.
The raster does not depend on the chunking. With ``--out`` the mask is kept there and reused by a
later run with the same parameters.

A ``LocalCluster`` of ``--workers`` processes x 1 thread (``--memory-limit`` each) then labels
the stored mask, trimming the workers' heaps (``malloc_trim``) before each run:

``geoseg``: ``geoseg.instances.components.label`` (border pass on the cluster, one union-find on
  the client) then ``labels.to_zarr``; wall time of both, split into phases: border pass, client
  union-find (``_provisional`` and ``relabel_plan``), relabel and write.
``dask-image @4000``: ``dask_image.ndmeasure.label`` with the same structure on the mask read in
  ``--peer-chunk`` chunks, ``labels.to_zarr`` and its count computed together: the peer where its
  graph stays small (it grows with the square of the chunks: 1.44 million tasks for 400).
``dask-image``: the same on the stored chunks. Last, because a run that fails is left running.

Each worker samples its own resident memory every 20 ms (a worker plugin); the peak per run is
reported, with the client's (which holds the scheduler). Worker seconds per task kind come from
the task stream. geoseg's labels are then compared with each peer's that finished, window by
window: labels are nonzero exactly on the mask, and the unique (geoseg id, peer id) pairs gathered
over all windows map one to one. If a run fails (a worker killed for memory, ``--timeout``
seconds passed, the client process grew past ``--client-memory-limit``) its error is reported
instead, with a lower bound on the ratio. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import logging
import math
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cloudpickle
import dask
import dask.array as da
import numpy as np
import psutil
import zarr
from dask.utils import key_split, parse_bytes
from distributed import Client, LocalCluster, get_task_stream
from distributed.diagnostics.plugin import WorkerPlugin
from scipy import ndimage as ndi
from zarr.codecs import ZstdCodec

from geoseg.instances import components

TARGET = 1.5
CELL = 256  # side of the cells that seed the small ellipses
SEMI_AXES = (2.0, 12.0)  # smallest and largest semi-axis of a small ellipse, pixels
ROAD_WIDTH = 5.0
MIB = 2**20

if __name__ != "__main__":  # imported (tests): ship this module's plugin to workers by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- the synthetic mask, chunk by chunk ------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """What the mask is drawn from: its side, a seed and the expected number of ellipses."""

    size: int
    objects: int
    seed: int = 0


def cell_ellipses(scene: Scene, cy: int, cx: int) -> np.ndarray:
    """Rows ``(y, x, a, b, theta)`` of the small ellipses centred in one cell, from its own seed."""
    y0, x0 = cy * CELL, cx * CELL
    h, w = min(CELL, scene.size - y0), min(CELL, scene.size - x0)
    rng = np.random.default_rng([scene.seed, cy, cx])
    n = rng.poisson(scene.objects * h * w / scene.size**2)
    axes = rng.uniform(*SEMI_AXES, (n, 2))
    return np.column_stack([y0 + rng.uniform(0, h, n), x0 + rng.uniform(0, w, n), axes,
                            rng.uniform(0, np.pi, n)])


def large_shapes(scene: Scene) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rings ``(y, x, outer radius, inner radius)`` and roads (polylines of ``(y, x)`` vertices)."""
    rng = np.random.default_rng([scene.seed, 2**31])
    s = scene.size
    outer = rng.uniform(s / 20, s / 8, 4)
    rings = np.column_stack([rng.uniform(0, s, 4), rng.uniform(0, s, 4), outer, 0.8 * outer])
    steps = np.linspace(0, s - 1, 7)
    roads = [np.column_stack([rng.uniform(0, s, 7), steps]),  # west to east
             np.column_stack([rng.uniform(0, s, 7), steps]),
             np.column_stack([steps, rng.uniform(0, s, 7)])]  # north to south
    return rings, roads


def draw_ellipses(out: np.ndarray, origin: tuple[int, int], shapes: np.ndarray) -> None:
    for y, x, a, b, theta in shapes:
        r = max(a, b)
        ys = slice(max(0, math.floor(y - r) - origin[0]), max(0, math.ceil(y + r) + 1 - origin[0]))
        xs = slice(max(0, math.floor(x - r) - origin[1]), max(0, math.ceil(x + r) + 1 - origin[1]))
        window = out[ys, xs]
        if window.size == 0:
            continue
        dy = np.arange(ys.start, ys.start + window.shape[0])[:, None] + origin[0] - y
        dx = np.arange(xs.start, xs.start + window.shape[1])[None, :] + origin[1] - x
        c, s = math.cos(theta), math.sin(theta)
        window |= ((dx * c + dy * s) / a) ** 2 + ((dy * c - dx * s) / b) ** 2 <= 1


def draw_rings(out: np.ndarray, origin: tuple[int, int], rings: np.ndarray) -> None:
    yy = np.arange(origin[0], origin[0] + out.shape[0])[:, None]
    xx = np.arange(origin[1], origin[1] + out.shape[1])[None, :]
    for y, x, outer, inner in rings:
        d2 = (yy - y) ** 2 + (xx - x) ** 2
        out |= (d2 <= outer**2) & (d2 >= inner**2)


def draw_road(out: np.ndarray, origin: tuple[int, int], road: np.ndarray) -> None:
    """Pixels within ``ROAD_WIDTH / 2`` of the polyline, one segment at a time in its bounding box."""
    half = ROAD_WIDTH / 2
    for p, q in itertools.pairwise(road):
        lo, hi = np.minimum(p, q) - half, np.maximum(p, q) + half
        ys = slice(max(0, math.floor(lo[0]) - origin[0]), max(0, math.ceil(hi[0]) + 1 - origin[0]))
        xs = slice(max(0, math.floor(lo[1]) - origin[1]), max(0, math.ceil(hi[1]) + 1 - origin[1]))
        window = out[ys, xs]
        if window.size == 0:
            continue
        py = np.arange(ys.start, ys.start + window.shape[0])[:, None] + origin[0] - p[0]
        px = np.arange(xs.start, xs.start + window.shape[1])[None, :] + origin[1] - p[1]
        d = q - p
        t = np.clip((py * d[0] + px * d[1]) / float(d @ d), 0, 1)
        window |= (py - t * d[0]) ** 2 + (px - t * d[1]) ** 2 <= half**2


def draw_block(scene: Scene, window: tuple[slice, slice]) -> np.ndarray:
    """The mask over ``window`` (uint8), from the cells and large shapes that reach into it."""
    (y0, y1), (x0, x1) = ((s.start, s.stop) for s in window)
    out = np.zeros((y1 - y0, x1 - x0), bool)
    reach = math.ceil(SEMI_AXES[1])
    cells = -(-scene.size // CELL)
    for cy in range(max(0, (y0 - reach) // CELL), min(cells, (y1 + reach) // CELL + 1)):
        for cx in range(max(0, (x0 - reach) // CELL), min(cells, (x1 + reach) // CELL + 1)):
            draw_ellipses(out, (y0, x0), cell_ellipses(scene, cy, cx))
    rings, roads = large_shapes(scene)
    draw_rings(out, (y0, x0), rings)
    for road in roads:
        draw_road(out, (y0, x0), road)
    return out.view(np.uint8)


def _block(block: np.ndarray, scene: Scene, block_info: dict | None = None) -> np.ndarray:
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    return draw_block(scene, (slice(y0, y1), slice(x0, x1)))


def write_mask(url: str, scene: Scene, chunk: int) -> None:
    """The mask as a uint8 Zarr v3 array, one chunk per task on threads (nothing holds it all)."""
    target = zarr.create_array(url, shape=(scene.size, scene.size), chunks=(chunk, chunk),
                               dtype="uint8", compressors=[ZstdCodec(level=1)], fill_value=0,
                               dimension_names=["y", "x"], attributes={"scene": asdict(scene)},
                               overwrite=True)
    blocks = da.zeros(target.shape, dtype=np.uint8, chunks=chunk).map_blocks(
        _block, scene, dtype=np.uint8)
    with dask.config.set(scheduler="threads"):
        da.store(blocks, target, lock=False)


def stored_mask(folder: Path, scene: Scene, chunk: int) -> tuple[str, float | None]:
    """The mask's URL, written unless one with the same scene and chunks is there; seconds written."""
    url = str(folder / "mask.zarr")
    with contextlib.suppress(Exception):
        old = zarr.open_array(url, mode="r")
        if old.attrs.get("scene") == asdict(scene) and old.chunks == (chunk, chunk):
            return url, None
    t0 = time.perf_counter()
    write_mask(url, scene, chunk)
    return url, time.perf_counter() - t0


# -- memory: each worker samples its own RSS --------------------------------------------------


class PeakRss:
    """A daemon thread that keeps the peak resident memory of this process since ``reset``."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.process = interval, psutil.Process()
        self.stop, self.peak = threading.Event(), 0
        self.reset()
        threading.Thread(target=self._run, daemon=True, name="bench-peak-rss").start()

    def reset(self) -> int:
        self.peak = self.process.memory_info().rss
        return self.peak

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)


class WorkerPeakRss(WorkerPlugin):
    """Starts a :class:`PeakRss` in each worker process."""

    name = "bench-peak-rss"

    def setup(self, worker: object) -> None:
        self.sampler = PeakRss()

    def teardown(self, worker: object) -> None:
        self.sampler.stop.set()


def _trim_heap() -> int:
    return ctypes.CDLL("libc.so.6").malloc_trim(0)


def _worker_reset(dask_worker: object) -> int:
    return dask_worker.plugins[WorkerPeakRss.name].sampler.reset()


def _worker_peak(dask_worker: object) -> int:
    return dask_worker.plugins[WorkerPeakRss.name].sampler.peak


# -- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """How the mask is labelled: chunks, structure, cluster, the peer's coarser chunks, limits."""

    chunk: int = 1000
    connectivity: int = 1
    workers: int = 2
    memory_limit: str = "4GiB"  # per worker
    peer_chunk: int | None = 4000  # dask-image also reads the mask in chunks this large
    timeout: float = 3600  # seconds per run
    client_limit: float | None = None  # bytes: the client process holds the scheduler too


@dataclass
class Run:
    """One method's run: seconds, objects, memory and where the time went (or its error)."""

    method: str
    seconds: float | None = None
    count: int | None = None
    peak_rss: dict[str, int] = field(default_factory=dict)  # worker address -> bytes
    idle_rss: dict[str, int] = field(default_factory=dict)  # before the run, heap trimmed
    client_peak_rss: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds
    task_seconds: dict[str, float] = field(default_factory=dict)  # worker seconds per task kind
    error: str | None = None
    failed_after: float | None = None  # seconds


@contextlib.contextmanager
def timed(module: object, name: str, sink: dict[str, float], phase: str) -> Iterator[None]:
    """Adds the wall time of every call to ``module.name`` to ``sink[phase]`` while open."""
    original = getattr(module, name)

    def wrapper(*args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink[phase] = sink.get(phase, 0.0) + time.perf_counter() - t0

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def label_geoseg(mask: da.Array, out: str, connectivity: int, phases: dict[str, float]) -> int:
    """geoseg's label and write; phases: border pass, client union-find, relabel and write."""
    union = "union-find (client)"
    with timed(components, "_provisional", phases, union), \
            timed(components, "relabel_plan", phases, union):
        t0 = time.perf_counter()
        labels, count = components.label(mask, connectivity=connectivity)
        t1 = time.perf_counter()
    labels.to_zarr(out)
    phases["border pass"] = t1 - t0 - phases.get(union, 0.0)
    phases["relabel + write"] = time.perf_counter() - t1
    return count


def label_dask_image(mask: da.Array, out: str, connectivity: int, phases: dict[str, float]) -> int:
    """dask-image's label, written and counted in one compute."""
    from dask_image import ndmeasure

    t0 = time.perf_counter()
    labels, count = ndmeasure.label(mask, ndi.generate_binary_structure(2, connectivity))
    phases["graph"] = time.perf_counter() - t0
    _, count = dask.compute(labels.to_zarr(out, compute=False), count)
    phases["label + write"] = time.perf_counter() - t0 - phases["graph"]
    return int(count)


Labeller = Callable[[da.Array, str, int, dict[str, float]], int]


@dataclass(frozen=True)
class Method:
    """A labeller and the chunks it reads the mask in (None: the stored chunks)."""

    name: str
    labeller: Labeller
    chunk: int | None = None


def methods(setup: Setup) -> list[Method]:
    """geoseg, dask-image on coarser chunks, dask-image on the same chunks: last, because a run
    that times out keeps running (and dask-image's graph grows with the square of the chunks)."""
    coarse = [Method(f"dask-image @{setup.peer_chunk}", label_dask_image, setup.peer_chunk)]
    return [Method("geoseg", label_geoseg), *(coarse if setup.peer_chunk else []),
            Method("dask-image", label_dask_image)]


def task_seconds(stream: list[dict]) -> dict[str, float]:
    """Worker seconds of computing, per task kind (key prefix), largest first."""
    totals: dict[str, float] = defaultdict(float)
    for task in stream:
        for part in task.get("startstops", ()):
            if part["action"] == "compute":
                totals[key_split(task["key"])] += part["stop"] - part["start"]
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def call_with_timeout(fn: Callable[[], int], timeout: float,
                      check: Callable[[], str | None] = lambda: None) -> int:
    """``fn()`` in a daemon thread; TimeoutError if it has not returned after ``timeout`` s, or
    MemoryError as soon as ``check()`` returns a message (it is then left running: building
    dask-image's graph cannot be interrupted)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="bench-label")
    thread.start()
    deadline = time.perf_counter() + timeout
    while thread.is_alive() and time.perf_counter() < deadline:
        thread.join(min(1.0, max(0.0, deadline - time.perf_counter())))
        if thread.is_alive() and (message := check()):
            raise MemoryError(message)
    if thread.is_alive():
        raise TimeoutError(f"did not finish within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def measure(client: Client, method: Method, mask_url: str, out: str, setup: Setup) -> Run:
    """Label and write with ``method`` on the cluster, sampling memory."""
    run = Run(method.name)
    shutil.rmtree(out, ignore_errors=True)
    # same worker processes for every method (restarting them proved flaky here): hand the
    # previous run's freed heap back to the system, then sample from the current resident size
    client.run(_trim_heap)
    run.idle_rss = client.run(_worker_reset)
    client_rss = PeakRss()
    mask = da.from_zarr(mask_url, chunks=method.chunk)

    def too_big() -> str | None:
        if setup.client_limit is None or client_rss.peak <= setup.client_limit:
            return None
        return (f"the client process (with the scheduler) passed {setup.client_limit / MIB:.0f} "
                f"MiB after {time.perf_counter() - t0:.0f} s")

    stream, t0 = None, time.perf_counter()
    try:
        with get_task_stream(client) as stream:
            run.count = call_with_timeout(
                lambda: method.labeller(mask, out, setup.connectivity, run.phases),
                setup.timeout, too_big)
            run.seconds = time.perf_counter() - t0
    except Exception as error:  # noqa: BLE001 - a peer failing or running out of memory is a result
        run.error = f"{type(error).__name__}: {error}"[:2000]
        run.failed_after = time.perf_counter() - t0
        traceback.print_exc()
    finally:
        client_rss.stop.set()
    run.client_peak_rss = client_rss.peak
    with contextlib.suppress(Exception):
        run.peak_rss = client.run(_worker_peak)
        run.task_seconds = task_seconds(stream.data)
    return run


# -- do the two stores hold the same objects? ------------------------------------------------


def chunk_pairs(mask: zarr.Array, ours: zarr.Array, theirs: zarr.Array,
                window: tuple[slice, ...]) -> tuple[np.ndarray, int, int, int]:
    """Unique ``ours << 32 | theirs`` over the chunk's objects, pixels where either label
    disagrees with the mask about being an object, and both labels' largest ids."""
    fg = mask[window] != 0
    a, b = ours[window].astype(np.uint64), theirs[window].astype(np.uint64)
    wrong = int(np.count_nonzero((a > 0) != fg) + np.count_nonzero((b > 0) != fg))
    return np.unique((a[fg] << np.uint64(32)) | b[fg]), wrong, int(a.max()), int(b.max())


@dataclass
class Agreement:
    same_partition: bool
    objects: int  # distinct id pairs
    wrong_pixels: int
    max_ids: tuple[int, int]


def agree(mask_url: str, ours_url: str, theirs_url: str) -> Agreement:
    """Same objects up to renumbering, window by window (threads; a window is the largest chunk
    of the three stores, so memory is bounded by a few of those)."""
    arrays = [zarr.open_array(u, mode="r") for u in (mask_url, ours_url, theirs_url)]
    window = tuple(max(sides) for sides in zip(*(a.chunks for a in arrays)))
    chunks = da.core.normalize_chunks(window, arrays[0].shape)
    tasks = [dask.delayed(chunk_pairs)(*arrays, w) for w in da.core.slices_from_chunks(chunks)]
    parts = dask.compute(*tasks, scheduler="threads")
    pairs = np.unique(np.concatenate([p[0] for p in parts]))
    a, b = pairs >> np.uint64(32), pairs & np.uint64(2**32 - 1)
    one_to_one = np.unique(a).size == pairs.size == np.unique(b).size
    wrong = sum(p[1] for p in parts)
    return Agreement(bool(one_to_one and wrong == 0), int(pairs.size), wrong,
                     (max(p[2] for p in parts), max(p[3] for p in parts)))


# -- the benchmark ------------------------------------------------------------------------------


def benchmark(folder: Path, scene: Scene, setup: Setup) -> dict:
    """Write (or reuse) the mask, label it every way on one cluster, compare the results."""
    mask_url, written = stored_mask(folder, scene, setup.chunk)
    todo = methods(setup)
    outs = {m.name: str(folder / f"labels-{m.name.replace(' @', '-')}.zarr") for m in todo}
    with LocalCluster(n_workers=setup.workers, threads_per_worker=1, processes=True,
                      memory_limit=setup.memory_limit, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.register_plugin(WorkerPeakRss())
        runs = {m.name: measure(client, m, mask_url, outs[m.name], setup) for m in todo}
    ours = runs.pop("geoseg")
    done = [name for name, r in runs.items() if r.error is None and ours.error is None]
    return {"size": scene.size, "chunks": (-(-scene.size // setup.chunk)) ** 2,
            "ellipses": scene.objects, **asdict(setup), "mask_written_s": written,
            "runs": {"geoseg": asdict(ours), **{n: asdict(r) for n, r in runs.items()}},
            "ratios": {n: r.seconds / ours.seconds for n, r in runs.items() if n in done},
            "ratios_at_least": {n: r.failed_after / ours.seconds for n, r in runs.items()
                                if r.error and ours.error is None},
            "agreement": {n: asdict(agree(mask_url, outs["geoseg"], outs[n])) for n in done}}


def report(result: dict) -> None:
    print(f"\nmask {result['size']}^2, {result['chunks']} chunks of {result['chunk']}, "
          f"connectivity {result['connectivity']}, {result['workers']} workers x 1 thread, "
          f"memory limit {result['memory_limit']} each")
    print(f"{'method':<18} {'s':>8} {'objects':>9} {'peak worker RSS MiB':>20} "
          f"{'idle MiB':>10} {'client MiB':>11}")
    for name, r in result["runs"].items():
        peaks = "/".join(f"{v / MIB:.0f}" for v in r["peak_rss"].values()) or "-"
        idle = "/".join(f"{v / MIB:.0f}" for v in r["idle_rss"].values()) or "-"
        seconds = "failed" if r["seconds"] is None else f"{r['seconds']:.2f}"
        print(f"{name:<18} {seconds:>8} {r['count'] or '-':>9} {peaks:>20} {idle:>10} "
              f"{r['client_peak_rss'] / MIB:11.0f}")
        print("    phases (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))
        print("    worker s by task: " + ", ".join(
            f"{k[:40]} {v:.1f}" for k, v in list(r["task_seconds"].items())[:6]))
        if r["error"]:
            print(f"    FAILED after {r['failed_after']:.0f} s: {r['error'][:500]}")
    for name, ratio in result["ratios"].items():
        met = "met" if ratio >= TARGET else "missed"
        print(f"{name} / geoseg time: {ratio:.2f} (target >= {TARGET}: {met})")
    for name, ratio in result["ratios_at_least"].items():
        print(f"{name} / geoseg time: >= {ratio:.2f} ({name} failed)")
    for name, a in result["agreement"].items():
        print(f"geoseg and {name}, same objects up to renumbering: {a['same_partition']} "
              f"({a['objects']} id pairs, {a['wrong_pixels']} pixels off the mask, "
              f"largest ids {a['max_ids']})")
    print(json.dumps(result, allow_nan=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="pixels per side")
    parser.add_argument("--chunk", type=int, default=1000, help="chunk side, stored and labelled")
    parser.add_argument("--objects", type=int, default=150000,
                        help="small ellipses drawn (objects are fewer: some merge)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--connectivity", type=int, choices=(1, 2), default=1,
                        help="1: faces (4 neighbours), 2: faces and corners (8)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GiB", help="per worker")
    parser.add_argument("--peer-chunk", type=int, default=4000,
                        help="dask-image also runs on the mask read in chunks this large "
                             "(0: not)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds after which a method's run is reported as not finished")
    parser.add_argument("--client-memory-limit", default="10GiB",
                        help="a run whose client process (scheduler included) grows past this is "
                             "reported as failed")
    parser.add_argument("--out", default=None,
                        help="folder for the mask and labels, kept (default: temporary, deleted)")
    args = parser.parse_args()
    folder = Path(args.out or tempfile.mkdtemp(prefix="geoseg-bench-instances-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        setup = Setup(args.chunk, args.connectivity, args.workers, args.memory_limit,
                      args.peer_chunk or None, args.timeout, parse_bytes(args.client_memory_limit))
        result = benchmark(folder, Scene(args.size, args.objects, args.seed), setup)
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)
    report(result)


if __name__ == "__main__":
    main()
