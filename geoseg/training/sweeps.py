"""Hyperparameter sweeps behind ``geoseg sweep SWEEP.yaml``: one training run per Dask task.

A sweep spec names a base training spec and the hyperparameters to vary, by
dotted key (``training.lr``, ``model.config.width``, ``model.architecture``)::

    name: demo-sweep
    base: train-demo.yaml             # or the training spec inline, as a mapping
    method: grid                      # every combination; or random (give trials)
    parameters:
      training.lr: [0.001, 0.003]
      model.config.width: [8, 16]
    output: {dir: ../runs/demo-sweep}

Relative local paths (``base``, ``output.dir``, an inline base's rasters) are relative to the
sweep spec's folder; those of a base spec file to that file's folder, as when it is trained
alone.

:func:`sweep` validates every trial's spec first (errors name the trial and
key), then submits each trial as one task to the cluster: on workers that
declare a ``GPU`` resource each trial claims ``{"GPU": 1}``. Every trial writes
its own model, checkpoints and run record under ``output.dir/trial-NNN``; a
rerun resumes unfinished trials and reuses finished ones. The result ranks the
trials by validation mIoU in a plain-text table, also written to
``output.dir/table.txt`` next to ``sweep.json``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import fsspec
import numpy as np
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin
from pydantic import Field, ValidationInfo, field_validator

from geoseg.core import jsontext
from geoseg.core.interrupts import children_spared_ctrl_c
from geoseg.core.records import now
from geoseg.core.redact import HIDE, hide_named_secrets, public_urls, scrub, secrets_in
from geoseg.core.spec import Document, Name, Section, relative_to_spec
from geoseg.core.urls import public_url
from geoseg.errors import GeosegError, TrainSpecError
from geoseg.io.files import write_whole
from geoseg.parallel.cluster import closed_if_interrupted, connect, scheduler_address
from geoseg.parallel.cluster_spec import ClusterSpec, Count
from geoseg.report.tables import cell
from geoseg.training.record import write_json
from geoseg.training.spec import (
    TRAIN_PATH_KEYS,
    Seed,
    TrainSpec,
    as_spec,
    changed_keys,
    comparable,
    read_yaml,
    redact,
)

Log = Callable[[str], Any]
logger = logging.getLogger("geoseg.training")
MANAGED = ("output", "name")  # set per trial by the sweep


class RangeSpec(Section):
    """A numeric range for random search: uniform, or log-uniform with ``log: true``; finite
    bounds, ``low`` below ``high``."""

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = False
    integer: bool = False

    @field_validator("high")
    @classmethod
    def _above_low(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if low is None:
            return value
        if not value > low:
            raise ValueError(f"a number above low ({low}); a single value is a list: [{low}]")
        if not math.isfinite(value - low):
            raise ValueError(f"a number less than 1.8e308 above low ({low}): a random draw "
                             "spans high - low")
        return value

    @field_validator("log")
    @classmethod
    def _positive(cls, value: bool, info: ValidationInfo) -> bool:
        if value and (info.data.get("low") or 0) <= 0:
            raise ValueError("log: false, or low > 0 (a log-uniform range needs positive bounds)")
        return value


_THREADS = ClusterSpec.model_fields["threads_per_worker"].metadata  # a job's bounds: 1 to 1024


class SweepOutputSpec(Section):
    dir: str = Field(description="Folder of the trials (trial-NNN/), sweep.json and table.txt.")
    overwrite: bool = Field(False, description="Start every trial over instead of resuming it.")
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)


class SweepClusterSpec(Section):
    """Where the trials run: a job's ``cluster`` section (:class:`ClusterSpec`) without its
    kinds, with its bounds."""

    scheduler: str | None = Field(
        None, description="Address of a running scheduler; none starts a local cluster.")
    n_workers: Count | None = Field(None, ge=1)
    threads_per_worker: Annotated[int, *_THREADS] = 1

    @field_validator("n_workers")
    @classmethod
    def _local_workers_fit(cls, n_workers: int | None, info: ValidationInfo) -> int | None:
        """As a job's: a local cluster's workers (one per GPU, or per core) fit this machine."""
        return ClusterSpec._local_workers_fit(n_workers, info)


class SweepSpec(Document):
    """A grid or random search over training hyperparameters."""

    document: ClassVar[str] = "sweep spec"
    sections: ClassVar[str] = "keys (name, base, method, parameters, output, cluster)"
    error: ClassVar[type[GeosegError]] = TrainSpecError

    name: Name = "sweep"
    base: str | dict[str, Any] = Field(description="Training spec: a YAML path, or the spec inline.")
    method: Literal["grid", "random"] = "grid"
    trials: int | None = Field(None, ge=1, validate_default=True,
                               description="Number of trials (random search only).")
    seed: Seed = Field(0, description="Seed of the random search (trials keep the base spec's seed).")
    parameters: dict[str, list[Any] | RangeSpec] = Field(min_length=1)
    output: SweepOutputSpec
    cluster: SweepClusterSpec = SweepClusterSpec()

    @field_validator("parameters", mode="before")
    @classmethod
    def _no_sections(cls, value: Any) -> Any:
        """A section of parameters (``training: {lr: [...]}``) is no range: say so, rather
        than that it lacks ``low`` and ``high``."""
        if not isinstance(value, dict):
            return value
        for key, choices in value.items():
            if isinstance(choices, dict) and choices and not set(choices) & set(RangeSpec.model_fields):
                raise ValueError(
                    f"a list of values or a range {{low, high}} under each key; {key!r} holds a "
                    f"mapping of {', '.join(map(str, choices))}. Name each parameter by its dotted "
                    f"key ({key}.{next(iter(choices))}: [...]), or give a range ({key}: "
                    "{low: 0.001, high: 0.1}) with method: random")
        return value

    @field_validator("parameters")
    @classmethod
    def _keys(cls, value: dict[str, list[Any] | RangeSpec]) -> dict[str, list[Any] | RangeSpec]:
        for key, choices in value.items():
            if key.split(".")[0] in MANAGED:
                raise ValueError(f"keys outside {', '.join(MANAGED)} (the sweep sets them per trial), "
                                 f"got {key!r}")
            if isinstance(choices, list) and not choices:
                raise ValueError(f"at least one value for {key!r}")
        overlap = _overlap(list(value))
        if overlap:
            raise ValueError(overlap)
        return value

    @field_validator("trials")
    @classmethod
    def _random_needs_trials(cls, value: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("method") == "random" and value is None:
            raise ValueError("a number of trials, required with method: random")
        return value

    def check(self, source: str) -> None:
        if self.method == "grid" and any(isinstance(v, RangeSpec) for v in self.parameters.values()):
            raise TrainSpecError(f"{source}: parameters: ranges ({{low, high}}) need method: random; "
                                 "give grid values as lists.")
        count = self.trials if self.method == "random" else math.prod(
            len(v) for v in self.parameters.values() if isinstance(v, list))
        if count and count > MAX_TRIALS:
            said = "trials" if self.method == "random" else "parameters: the grid's combinations"
            raise TrainSpecError(f"{source}: {said}: received {count:,} trials; expected at most "
                                 f"{MAX_TRIALS:,} (each trains a network, and every trial's spec "
                                 "is checked before the first runs). Sweep fewer values, or use "
                                 "method: random with fewer trials.")


def _overlap(keys: list[str]) -> str | None:
    """What is wrong with two keys of which one holds the other (``training`` and ``training.lr``):
    a trial would set that value twice, and one of the two would silently win; ``None`` if none."""
    paths = {key: tuple(key.split(".")) for key in keys}
    for outer, inner in itertools.permutations(keys, 2):
        if paths[inner][: len(paths[outer])] == paths[outer]:
            return (f"keys that each set their own part of the spec, got {outer!r} and {inner!r}: "
                    f"both set {'.'.join(paths[inner])}, and one trial's value would silently "
                    f"override the other's. Vary it under one key: drop {inner!r} and give its values "
                    f"inside those of {outer!r}, or name each parameter by its full dotted key only")
    return None


MAX_TRIALS = 10_000  # of one sweep: their specs are built and checked before any runs


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML sweep spec; its relative local paths join its folder."""
    path = Path(path)
    data = relative_to_spec(read_yaml(path, "sweep spec"), path.parent, SWEEP_PATH_KEYS)
    return SweepSpec.from_dict(data, str(path))


SWEEP_PATH_KEYS = TRAIN_PATH_KEYS | {"base", "dir"}


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: its index, the values it tries and its full spec."""

    index: int
    params: dict[str, Any]
    spec: TrainSpec

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class TrialResult:
    """How one trial ended; ``val_miou`` is its best validation mIoU (``None`` if it failed)."""

    index: int
    name: str
    params: dict[str, Any]
    status: str
    val_miou: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    model_url: str | None = None
    model_sha256: str | None = None
    run_dir: str | None = None
    record_url: str | None = None
    worker: str | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """The trials ranked by validation mIoU (failed ones last), the table, and the winner."""

    name: str
    trials: list[TrialResult]
    table: str
    best_model: str | None
    record_url: str
    gpu: bool = False

    @property
    def best(self) -> TrialResult | None:
        return self.trials[0] if self.trials and self.trials[0].val_miou is not None else None


# -- trials -----------------------------------------------------------------------------------


def make_trials(spec: SweepSpec, source: str = "sweep spec") -> list[Trial]:
    """Every trial's validated training spec; errors name the trial, its values and the key."""
    base = _base_dict(spec, source)
    trials = []
    for index, params in enumerate(_combinations(spec)):
        data = copy.deepcopy(base)
        for key, value in params.items():
            _set_path(data, key, value, source)
        data["name"] = f"{spec.name}-{index:03d}"
        folder = f"{_absolute(spec.output.dir)}/trial-{index:03d}"
        data["output"] = {"model": f"{folder}/model.safetensors", "run_dir": folder,
                          "overwrite": spec.output.overwrite,
                          "storage_options": spec.output.storage_options}
        trials.append(Trial(index, params,
                            TrainSpec.from_dict(data, f"{source}: trial {index} {public_params(params)}")))
    return trials


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's values as the sweep shows them (sweep.json, table.txt, its log, its messages):
    every URL public and credentials named as such hidden, as in a run record. The training
    spec's redaction goes by the last key (``init``, ``storage_options``), which a dotted
    parameter key (``model.init``) is not: a presigned URL's signature, a password in a URL
    and storage options reached the records as given."""
    return {key: HIDE if "storage_options" in key.split(".")
            else public_urls(hide_named_secrets(_options_hidden(value), key.rsplit(".", 1)[-1]))
            for key, value in params.items()}


def _options_hidden(value: Any) -> Any:
    """``value`` (a whole section swept as one parameter, ``model: [{init: ...,
    storage_options: {...}}]``) with every ``storage_options`` in it hidden, at any depth."""
    if isinstance(value, dict):
        return {k: HIDE if k == "storage_options" else _options_hidden(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_options_hidden(v) for v in value]
    return value


def _base_dict(spec: SweepSpec, source: str) -> dict[str, Any]:
    """The base training spec as plain data, its relative paths joined to its file's folder
    (an inline base's: to the working directory, when the sweep was not read from a file),
    so that workers started elsewhere find them."""
    folder = Path(spec.base).parent if isinstance(spec.base, str) else Path.cwd()
    data = read_yaml(spec.base, "training spec (base)") if isinstance(spec.base, str) else spec.base
    if not isinstance(data, dict):
        raise TrainSpecError(f"{source}: base: expected a training spec mapping, received "
                             f"{type(data).__name__}.")
    return relative_to_spec(data, folder, TRAIN_PATH_KEYS)


def _absolute(url: Any) -> Any:
    """Local relative paths made absolute, so workers started elsewhere find them."""
    if isinstance(url, str) and "://" not in url and not os.path.isabs(url):
        return os.path.abspath(url)
    return url


def _combinations(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    keys = list(spec.parameters)
    if spec.method == "grid":
        for values in itertools.product(*(spec.parameters[k] for k in keys)):
            yield {k: _number(v) for k, v in zip(keys, values)}
        return
    rng = np.random.default_rng(spec.seed)
    for _ in range(spec.trials or 0):
        yield {k: _draw(rng, spec.parameters[k]) for k in keys}


def _draw(rng: np.random.Generator, choices: list[Any] | RangeSpec) -> Any:
    if isinstance(choices, list):
        return _number(choices[int(rng.integers(len(choices)))])
    low, high = choices.low, choices.high
    if choices.log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = float(rng.uniform(low, high))
    return round(value) if choices.integer else float(f"{value:.6g}")


#: A number in exponent notation that YAML 1.1 (PyYAML) reads as a string: ``1e-3``, ``2.5e4``.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string (YAML 1.2 as a number): take it as a number. Every
    other string stays one (``"007"`` is a name, not 7.0)."""
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        return float(value)
    return value


def _set_path(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TrainSpecError(_not_a_section(source, key, ".".join(parts[: depth + 1]), child))
        node = child
    old = node.get(parts[-1])
    node[parts[-1]] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value


def _not_a_section(source: str, key: str, through: str, held: Any) -> str:
    """The message for a dotted ``key`` that goes through ``through``, which the base spec
    holds as ``held`` (a list, a value), not as a section of keys."""
    shown = repr(held) if len(repr(held)) <= 60 else repr(held)[:57] + "..."
    kind = "a list" if isinstance(held, list) else f"a {type(held).__name__}"
    return (f"{source}: parameters.{key}: received a key through {through}, which the base spec "
            f"holds as {kind} ({shown}), not a section of keys; expected a dotted key of "
            f"sections only. Vary {through} as a whole instead ({through}: [...], each value a "
            "complete one).")


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        both = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = _merge(out[key], value) if both else value
    return out


# -- running ----------------------------------------------------------------------------------


def run_trial(spec_data: dict[str, Any], resume: bool = True) -> dict[str, Any]:
    """Train one trial (a task on a worker); returns its :class:`~geoseg.training.TrainResult` as a dict."""
    import torch

    from geoseg.training.trainer import train

    start = time.perf_counter()
    spec = TrainSpec.from_dict(spec_data)
    worker = _current_worker()
    if worker is not None and not spec.training.torch_threads:
        torch.set_num_threads(max(1, int(worker.state.nthreads)))
    result = train(spec, resume=resume, log=logger.info).to_dict()
    result["worker"] = worker.address if worker is not None else None
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _current_worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:
        return None


@dataclass
class PinGPU(WorkerPlugin):
    """Give each local worker its own GPU (``CUDA_VISIBLE_DEVICES``) before anything touches CUDA."""

    gpus: int
    name: str = "geoseg-pin-gpu"

    def setup(self, worker: Any) -> None:
        try:
            index = int(worker.name) % self.gpus
        except (TypeError, ValueError):
            index = abs(hash(str(worker.name))) % self.gpus
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)


@contextmanager
def cluster_client(spec: SweepSpec, scheduler: str | None) -> Iterator[tuple[Client, bool]]:
    """A client, and whether trials claim ``{"GPU": 1}``; a local cluster when no address is given."""
    address = scheduler_address(scheduler or spec.cluster.scheduler)
    if address:
        with connect(address) as client:
            yield client, _workers_declare_gpus(client)
        return
    gpus = _local_gpus()
    if not gpus:
        with connect(None, n_workers=spec.cluster.n_workers,
                     threads_per_worker=spec.cluster.threads_per_worker) as client:
            yield client, False
        return
    # the terminal's Ctrl-C stops the sweep and closes its cluster, not each worker
    with closed_if_interrupted(), children_spared_ctrl_c():
        cluster = LocalCluster(n_workers=spec.cluster.n_workers or gpus, processes=True,
                               threads_per_worker=spec.cluster.threads_per_worker,
                               dashboard_address=None, resources={"GPU": 1})
    with cluster, Client(cluster) as client:
        client.register_plugin(PinGPU(gpus))
        yield client, True


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _workers_declare_gpus(client: Client) -> bool:
    """Whether any worker declares a ``GPU`` resource; warns when GPUs exist but none is declared."""
    workers = _scheduler_workers(client)
    declared = any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values())
    if not declared and any(n > 0 for n in client.run(_local_gpus).values()):
        logger.warning("workers have GPUs but declare no GPU resource; start them with --resources GPU=1 "
                       "so that each trial gets a GPU of its own")
    return declared


def _scheduler_workers(client: Client) -> dict[str, Any]:
    """Every worker's info (recent ``distributed`` lists only a few unless asked for all)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed: no n_workers argument, lists all
        return client.scheduler_info()["workers"]


def sweep(spec: SweepSpec | dict[str, Any] | str | Path, *, scheduler: str | None = None,
          resume: bool = True, overwrite: bool | None = None, log: Log = print) -> SweepResult:
    """Run every trial of ``spec`` as a task on a Dask cluster and rank them by validation mIoU.

    Parameters
    ----------
    spec
        A :class:`SweepSpec`, its plain-data form, or the path of a YAML file.
    scheduler
        Scheduler address; default ``spec.cluster.scheduler``, then
        ``DASK_SCHEDULER_ADDRESS``, else a local cluster of worker processes
        (one per GPU, each claiming it, when this machine has GPUs).
    resume
        Let each trial continue from its checkpoint, or reuse its finished result.
    overwrite
        Start every trial over (default ``spec.output.overwrite``).
    log
        Receives a line per finished trial.

    Returns
    -------
    SweepResult
        Ranked trials, the comparison table and the best model's URL. A failed
        trial is listed with its error instead of failing the sweep.
    """
    spec = as_sweep_spec(spec)
    if overwrite is not None:
        spec = spec.model_copy(update={"output": spec.output.model_copy(update={"overwrite": overwrite})})
    trials = make_trials(spec)
    if not spec.output.overwrite:
        check_trial_folders(spec, trials)
    started, clock = now(), time.perf_counter()
    log(f"{spec.name}: {len(trials)} trial(s), {spec.method} search over {', '.join(spec.parameters)}")
    with cluster_client(spec, scheduler) as (client, gpu):
        results = _gather(client, trials, resume, gpu, log)
    ranked = rank(results)
    table = format_table(ranked, list(spec.parameters))
    record_url = f"{_absolute(spec.output.dir)}/sweep.json"
    best = ranked[0].model_url if ranked and ranked[0].val_miou is not None else None
    _write_outputs(spec, ranked, table, best, record_url, started, time.perf_counter() - clock, gpu)
    return SweepResult(spec.name, ranked, table, best, record_url, gpu)


def check_trial_folders(spec: SweepSpec, trials: list[Trial]) -> None:
    """Refuse, before any trial runs, trial folders that hold runs of other values than the
    trials now numbered alike: trials are numbered by their place in the grid, so a value added,
    removed or moved in a list renumbers them, and each such trial would fail to resume."""
    clashes = []
    for trial in trials:
        record = _run_record(f"{trial.spec.output.run_dir}/run.json", spec.output.storage_options)
        changed = [] if record is None else changed_keys(comparable(record.get("spec", {})),
                                                         comparable(trial.spec))
        if changed:
            clashes.append(f"trial-{trial.index:03d} (its run differs in {', '.join(changed[:4])}; "
                           f"trial {trial.index} is now {public_params(trial.params)})")
    if clashes:
        raise TrainSpecError(
            f"output.dir {public_url(spec.output.dir)}: {len(clashes)} trial folder(s) hold runs of "
            f"other values than this spec's trials of the same number: {'; '.join(clashes[:3])}"
            f"{' ...' if len(clashes) > 3 else ''}. Trials are numbered by their place in the grid, "
            "so adding, removing or reordering values renumbers them. Give this grid a new "
            "output.dir, or start every trial over with --overwrite (output.overwrite: true); "
            "nothing was run.")


def _run_record(url: str, storage_options: dict[str, Any]) -> dict[str, Any] | None:
    """The run record at ``url``, or ``None`` where there is none (or it cannot be read: the
    trial's own resume then says why)."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        return jsontext.loads(fs.cat_file(path)) if fs.exists(path) else None
    except (OSError, ValueError):
        return None


def as_sweep_spec(spec: SweepSpec | dict[str, Any] | str | Path) -> SweepSpec:
    """A :class:`SweepSpec` from itself, plain data, or the path of a YAML file."""
    return as_spec(spec, SweepSpec, load_sweep_spec)


def _gather(client: Client, trials: list[Trial], resume: bool, gpu: bool, log: Log) -> list[TrialResult]:
    resources = {"GPU": 1} if gpu else None
    futures = {client.submit(run_trial, _sent(t.spec), resume, pure=False,
                             key=f"geoseg-trial-{t.name}-{uuid.uuid4().hex[:8]}", resources=resources): t
               for t in trials}
    results = []
    for future in as_completed(futures, loop=client.loop):
        trial = futures[future]
        try:
            results.append(_trial_result(trial, future.result()))
        except Exception as exc:  # noqa: BLE001 - one failed trial must not lose the others
            results.append(TrialResult(trial.index, trial.name, trial.params, "failed",
                                       error=_public_error(trial, exc)))
        done = results[-1]
        log(f"{done.name}: {done.status}" + (f", val mIoU {done.val_miou:.4f}" if done.val_miou is not None
                                             else f" ({done.error})" if done.error else ""))
    return results


def _public_error(trial: Trial, exc: BaseException) -> str:
    """A failed trial's error as the sweep logs and records it: without its spec's secrets
    (storage options, URLs' user info and query), which a library's message may quote."""
    return scrub(f"{type(exc).__name__}: {exc}", secrets_in(trial.spec.model_dump(mode="json")))


def _sent(spec: TrainSpec) -> dict[str, Any]:
    """A trial's spec as a worker rebuilds it: the keys it sets only, as ``geoseg train`` reads
    them. A full dump states every default, and a default stated is a choice made:
    ``model.config: {}`` then contradicted the config of the ``model.init`` it fine-tunes,
    failing every trial of a sweep whose base spec trains alone."""
    return spec.model_dump(mode="json", exclude_unset=True)


def _trial_result(trial: Trial, result: dict[str, Any]) -> TrialResult:
    miou = result.get("best_val_miou")
    return TrialResult(trial.index, trial.name, trial.params, result["status"],
                       val_miou=None if miou is None or math.isnan(miou) else float(miou),
                       best_epoch=result["best_epoch"], epochs_run=result["epochs_run"],
                       model_url=result["model_url"], model_sha256=result["model_sha256"],
                       run_dir=result["run_dir"], record_url=result["record_url"],
                       worker=result.get("worker"), seconds=result.get("seconds"))


def rank(results: list[TrialResult]) -> list[TrialResult]:
    """Best validation mIoU first; trials without one (failed) last, in trial order."""
    return sorted(results, key=lambda r: (r.val_miou is None, -(r.val_miou or 0.0), r.index))


def format_table(ranked: list[TrialResult], keys: list[str]) -> str:
    """A plain-text table: rank, trial, validation mIoU, best epoch, epochs, each parameter
    (its public form: :func:`public_params`), status."""
    header = ["rank", "trial", "val mIoU", "best epoch", "epochs", *keys, "status"]
    rows = [[str(i + 1), r.name, "-" if r.val_miou is None else f"{r.val_miou:.4f}",
             cell(r.best_epoch), cell(r.epochs_run),
             *(cell(public_params(r.params).get(k), ".6g") for k in keys),
             r.status if r.error is None else f"{r.status}: {r.error.splitlines()[0][:60]}"]
            for i, r in enumerate(ranked)]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if c in (1, len(header) - 1) else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _write_outputs(spec: SweepSpec, ranked: list[TrialResult], table: str, best: str | None,
                   record_url: str, started: str, seconds: float, gpu: bool) -> None:
    so = spec.output.storage_options
    dumped = spec.model_dump(mode="json")
    dumped["parameters"] = {key: [public_params({key: v})[key] for v in values]
                            if isinstance(values, list) else values  # a range: numbers
                            for key, values in dumped["parameters"].items()}
    record = {"format": "geoseg-sweep/1", "name": spec.name, "spec": redact(dumped),
              "started": started, "finished": now(), "seconds": round(seconds, 2), "gpu_per_trial": gpu,
              "best_model": public_url(best) if best else None, "table": table.splitlines(),
              "trials": [{**asdict(r), "params": public_params(r.params)} for r in ranked]}
    write_json(record_url, public_urls(hide_named_secrets(record)), so)  # an inline base's URLs too
    write_whole(record_url.rsplit("/", 1)[0] + "/table.txt", table + "\n", storage_options=so,
                what="Writing the sweep's table")
