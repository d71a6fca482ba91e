"""The general trainer behind ``geoseg train TRAIN.yaml``.

:func:`train` draws random chips from one or more (image, labels) raster pairs
read lazily through their sources (one windowed read per chip), flips and turns
them, and fits any registered 2D architecture with the shared loop
(:mod:`geoseg.training.loop`: AdamW under a warmup+cosine schedule, bf16 autocast
on CUDA), with optional class weights and an ignore index. After every epoch it
scores validation mIoU on held-out windows, writes a checkpoint (safetensors +
JSON) and the run record, and applies early stopping; with ``training.checkpoint_steps``
it also writes a checkpoint every that many steps inside an epoch.
Per-band mean/std are measured on sampled training windows and stored in the
model file, which :func:`geoseg.load_model` loads like any other.

With ``model.init`` a run fine-tunes a model file: the network (the file's architecture and
config) is built for the data's bands and classes, then every tensor of the file is loaded
into it but those that depend on the number of classes (when the file's classes are not
data.classes, in order) or of bands (when their number differs), which keep their seeded
initialisation; the file's mean/std are used when its first layer was loaded. A resume
takes the checkpoint's weights, and refuses an init file whose weights changed since.

Runs are deterministic on CPU: a seed fixes the weights' initialisation, every
chip and every augmentation; an interrupted run restarted from its checkpoint
(taken at an epoch's end or inside one) ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch
from torch import nn

from geoseg import config
from geoseg.core.classes import ClassInfo
from geoseg.core.records import finite_or_null, now, package_versions
from geoseg.core.redact import scrub
from geoseg.core.segmenter import pad_end
from geoseg.core.urls import public_url
from geoseg.errors import (
    CheckpointError,
    GeosegError,
    OutputExistsError,
    ParameterError,
    TrainingDataError,
    TrainSpecError,
)
from geoseg.io.files import check_creatable
from geoseg.metrics import confusion_matrix, iou_per_class, mean_iou
from geoseg.models import ModelInfo, SegmentationModel, build_network, save_model
from geoseg.models.modelfile import read_header
from geoseg.tiling.plan import round_up
from geoseg.training.checkpoint import (
    Checkpoint,
    EpochProgress,
    TrainState,
    load_checkpoint,
    remove_checkpoints,
    restore,
    save_checkpoint,
)
from geoseg.training.data import (
    SCORE_BATCH,
    ChipLoader,
    DataStats,
    Preprocess,
    RasterPair,
    ValidationSet,
    batch_plans,
    check_pairs,
    check_stats,
    check_validation,
    class_weights,
    measure_stats,
    open_pairs,
    read_validation,
    split_holdout,
)
from geoseg.training.finetune import (
    InitModel,
    Started,
    check_same_init,
    network_of,
    read_init,
    start_from,
)
from geoseg.training.loop import Loop, LossSum, adamw, autocast, autocast_dtype, warmup_cosine
from geoseg.training.record import FORMAT, SourceCatalog, read_json, write_json
from geoseg.training.spec import (
    TrainSpec,
    as_spec,
    changed_keys,
    check_batch,
    comparable,
    load_train_spec,
)

Log = Callable[[str], Any]


@dataclass(frozen=True)
class TrainResult:
    """What a call to :func:`train` did.

    ``status`` is ``"complete"`` (model written) or ``"interrupted"`` (stopped by
    ``max_epochs`` or ``max_steps``; call :func:`train` again to continue). ``resumed_from`` is the
    number of epochs already done when this call started (``None``: a fresh run).
    """

    name: str
    status: str
    model_url: str | None
    model_sha256: str
    run_dir: str
    record_url: str
    epochs_run: int
    best_epoch: int
    best_val_miou: float
    best_val_iou: dict[str, float | None]
    stopped_early: bool
    resumed_from: int | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Outputs:
    """Where a run writes: the model file, its run folder, record and checkpoints."""

    model_url: str
    run_dir: str
    storage_options: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, spec: TrainSpec) -> Outputs:
        return cls(spec.output.model, spec.output.run_url, dict(spec.output.storage_options))

    @property
    def record_url(self) -> str:
        return f"{self.run_dir}/run.json"

    @property
    def checkpoint_dir(self) -> str:
        return f"{self.run_dir}/checkpoint"

    def exists(self, url: str) -> bool:
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        return fs.exists(path)

    def remove(self, url: str) -> None:
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        if fs.exists(path):
            fs.rm(path)


@dataclass
class Setup:
    """Everything fixed for a run: data, preprocessing, network, device."""

    train_pairs: list[RasterPair]
    val_pairs: list[RasterPair]
    prep: Preprocess
    validation: ValidationSet
    weights: np.ndarray | None
    net: nn.Module
    net_config: dict[str, Any]
    device: torch.device
    amp: torch.dtype | None
    bands: tuple[str, ...]
    record: dict[str, Any]
    architecture: str = ""  # in effect: the spec's, or model.init's file's


@dataclass
class Session:
    """Everything that changes as a run trains (all of it goes into checkpoints).

    ``progress`` is the part of the next epoch done before a resume from a mid-epoch
    checkpoint, until that epoch starts again."""

    loop: Loop
    rng: np.random.Generator
    state: TrainState
    best: dict[str, torch.Tensor] | None = None
    progress: EpochProgress | None = None


class _StepLimit(Exception):
    """Raised after the step ``max_steps`` of :func:`train` asks to stop at."""


def as_train_spec(spec: TrainSpec | dict[str, Any] | str | Path) -> TrainSpec:
    """A :class:`TrainSpec` from itself, plain data, or the path of a YAML file."""
    return as_spec(spec, TrainSpec, load_train_spec)


def train(spec: TrainSpec | dict[str, Any] | str | Path, *, resume: bool = True,
          overwrite: bool | None = None, max_epochs: int | None = None, max_steps: int | None = None,
          on_epoch: Callable[[dict[str, Any]], Any] | None = None, log: Log = print) -> TrainResult:
    """Train a segmentation model as ``spec`` says; write the model file and the run record.

    Parameters
    ----------
    spec
        A :class:`TrainSpec`, its plain-data form, or the path of a YAML file.
    resume
        Continue from the run folder's last checkpoint when there is one (and
        return the recorded result when the run is already complete). With
        ``False``, an existing checkpoint is an error unless ``overwrite``.
    overwrite
        Start over, deleting earlier checkpoints, record and model; default
        ``spec.output.overwrite``.
    max_epochs
        Stop after this epoch (counting from 1) as if interrupted; the result's
        status is then ``"interrupted"`` and a later call resumes.
    max_steps
        Stop right after this optimizer step (counting from 1, over all epochs) as if killed
        there: nothing is saved but the run record, so a later call resumes from the last
        checkpoint, redoing the steps since.
    on_epoch
        Called with each epoch's metrics after its checkpoint is written.
    log
        Receives one line per epoch and a few about the setup.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainSpecError, TrainingDataError, CheckpointError, OutputExistsError, TrainingDivergedError
        Each says what was received, what was expected and how to fix it.
    ModelFileError
        When ``model.init`` names no readable geoseg model file (missing, a pickle, damaged).
    ParameterError
        When ``max_epochs`` or ``max_steps`` is below 1.
    """
    _check_limits(max_epochs=max_epochs, max_steps=max_steps)
    spec = as_train_spec(spec)
    train_device(spec)  # refused now, before any read, when this process has no such device
    init = read_init(spec)
    outputs = Outputs.of(spec)
    start = check_outputs(spec, outputs, resume=resume,
                          overwrite=spec.output.overwrite if overwrite is None else overwrite, log=log,
                          init=init)
    if isinstance(start, TrainResult):
        return start
    setup = prepare(spec, start, log, init)
    session = new_session(spec, setup, start, log)
    return run_epochs(spec, setup, session, outputs, max_epochs=max_epochs, max_steps=max_steps,
                      on_epoch=on_epoch, log=log)


def _check_limits(**limits: int | None) -> None:
    """Refuse a stop before the first epoch or step: it would stop after it, as if given 1."""
    for name, value in limits.items():
        if value is not None and value < 1:
            raise ParameterError(f"{name}: received {value}; expected None (no limit) or an "
                                 "integer of at least 1.")


# -- existing outputs -------------------------------------------------------------------------


def check_outputs(spec: TrainSpec, outputs: Outputs, *, resume: bool, overwrite: bool,
                  log: Log, init: InitModel | None = None) -> Checkpoint | TrainResult | None:
    """What to start from: a checkpoint, a finished run's result, or nothing (a fresh run).
    A run that started from ``init``'s file goes on only while that file holds the same weights."""
    so = outputs.storage_options
    check_creatable(outputs.model_url, "output.model")  # now, not after the training
    check_creatable(outputs.record_url, "output.run_dir")
    if overwrite:  # the model file stays until the new one replaces it whole
        remove_checkpoints(outputs.checkpoint_dir, so)
        outputs.remove(outputs.record_url)
        return None
    record = read_json(outputs.record_url, so)
    if record is not None:
        _check_same_spec(comparable(record.get("spec", {})), spec, outputs.run_dir)
        check_same_init(record.get("init"), init, outputs.run_dir)
        if record.get("status") == "complete" and outputs.exists(outputs.model_url) and resume:
            _check_model_is_ours(outputs, (record.get("model") or {}).get("sha256"))
            log(f"{spec.name}: already complete ({outputs.record_url}); returning its result")
            return result_from_record(record, outputs)
    checkpoint = load_checkpoint(outputs.checkpoint_dir, so)
    if checkpoint is not None:
        _check_same_spec(checkpoint.spec, spec, outputs.run_dir)
        check_same_init(checkpoint.state.data.get("init"), init, outputs.run_dir)
        if resume:
            if outputs.exists(outputs.model_url):  # killed as it finished, or another run's
                _check_model_is_ours(outputs, None)
            return checkpoint
        raise CheckpointError(
            f"{outputs.run_dir} holds a checkpoint after epoch {checkpoint.state.epoch}"
            f"{_steps_into(checkpoint.progress)}, and resume is off; resume it, or start over with "
            "overwrite (output.overwrite: true / --overwrite).")
    if outputs.exists(outputs.model_url):
        raise OutputExistsError(
            f"{outputs.model_url} already exists and {outputs.run_dir} has no checkpoint to resume; "
            "choose another output.model, or set output.overwrite: true (--overwrite) to replace it.")
    return None


def _check_model_is_ours(outputs: Outputs, sha256: str | None) -> None:
    """Refuse a model file at ``output.model`` this run did not write: one holding other weights
    than its record's ``sha256``, or naming another run's record. Two runs given one
    output.model replaced each other's file as each finished, and the first then called itself
    complete over the second's weights."""
    try:
        info = read_header(outputs.model_url, storage_options=outputs.storage_options).info
    except GeosegError:
        info = None
    owner = ((info.extra.get("training") or {}) if info else {}).get("run_record")
    ours = info is not None and (info.sha256 == sha256 if sha256 else
                                 owner == public_url(outputs.record_url))
    if not ours:
        said = f"another run's (its record: {owner})" if owner else "not one this run wrote"
        raise OutputExistsError(
            f"{public_url(outputs.model_url)} (output.model) is {said}; this run "
            f"({public_url(outputs.record_url)}) never replaces it. Give each run its own "
            "output.model, or retrain this one over it with output.overwrite: true (--overwrite).")


def _steps_into(progress: EpochProgress | None) -> str:
    return "" if progress is None else f" and {progress.step} step(s) into the next"


def _check_same_spec(recorded: dict[str, Any], spec: TrainSpec, run_dir: str) -> None:
    changed = changed_keys(recorded, comparable(spec))
    if changed:
        raise CheckpointError(
            f"{run_dir} belongs to a run with a different spec (changed: {', '.join(changed[:8])}); "
            "resuming would mix two runs. Use a new output.run_dir (or output.model), or start over "
            "with output.overwrite: true (--overwrite).")


def result_from_record(record: dict[str, Any], outputs: Outputs) -> TrainResult:
    """The :class:`TrainResult` that the complete run record of ``outputs`` describes."""
    final = record["final"]
    return TrainResult(name=record["name"], status=record["status"], model_url=outputs.model_url,
                       model_sha256=record["model"]["sha256"], run_dir=outputs.run_dir,
                       record_url=outputs.record_url, epochs_run=final["epochs_run"],
                       best_epoch=final["best_epoch"], best_val_miou=final["best_val_miou"],
                       best_val_iou=final["best_val_iou"], stopped_early=final["stopped_early"],
                       resumed_from=None, history=record["epochs"])


# -- setup ------------------------------------------------------------------------------------


def train_device(spec: TrainSpec) -> torch.device:
    """The device ``training.device`` names (``auto``: as GEOSEG_DEVICE says), refused with a
    :class:`TrainSpecError` when torch finds no such device in this process."""
    wanted = spec.training.device
    if wanted == "auto":
        return torch.device(config.device())
    missing = config.absent_device(wanted)
    if missing:
        raise TrainSpecError(f"training.device: received {wanted!r}; {missing}")
    return torch.device(wanted)


def prepare(spec: TrainSpec, checkpoint: Checkpoint | None, log: Log,
            init: InitModel | None = None) -> Setup:
    """Open the data, fix normalization and class weights, build the network (and load
    ``model.init``'s weights into it, read here unless given as ``init``), read validation."""
    if spec.training.torch_threads:
        torch.set_num_threads(spec.training.torch_threads)
    init = init or read_init(spec)
    architecture, arch_config = network_of(spec, init)
    train_pairs, val_pairs = _pairs(spec)
    _check_same_bands(spec, checkpoint, train_pairs[0])
    _warn_label_nodata(spec, [*train_pairs, *val_pairs], log)
    n_bands, classes = train_pairs[0].bands, spec.data.classes
    check_batch(spec.training, n_bands, known=True)  # the spec's check knew no band count
    net_config = {**arch_config, "in_channels": n_bands, "num_classes": len(classes)}
    torch.manual_seed(spec.seed)
    net = build_network(architecture, net_config)
    _check_chip(spec, net, architecture, arch_config)
    check_validation(val_pairs, spec.validation, n_bands, int(net.stride))  # before any read
    started = start_from(spec, init, net, architecture, net_config, checkpoint, log,
                         train_pairs[0].image.band_names)
    stats = _data_stats(spec, train_pairs, checkpoint, log, started)
    prep = Preprocess(np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32),
                      len(classes), spec.data.ignore_index)
    validation = read_validation(val_pairs, prep, spec.validation.tile, spec.validation.max_windows)
    device = train_device(spec)
    amp = autocast_dtype(spec.training.mixed_precision, device)
    catalog = SourceCatalog()
    record = _static_record(spec, train_pairs, val_pairs, catalog, stats, net_config, device, amp,
                            validation, architecture)
    if started is not None:
        record["init"] = started.record
    log(f"{spec.name}: {architecture} {net_config} on {device}"
        f"{' (bf16 autocast)' if amp else ''}; {len(train_pairs)} training pair(s), "
        f"{len(validation.inputs)} validation window(s)")
    weights = np.asarray(stats["class_weights"], np.float32) if stats["class_weights"] is not None else None
    return Setup(train_pairs, val_pairs, prep, validation, weights, net.to(device), net_config, device, amp,
                 train_pairs[0].image.band_names, record, architecture)


def _pairs(spec: TrainSpec) -> tuple[list[RasterPair], list[RasterPair]]:
    train_pairs, held_out = split_holdout(open_pairs(spec.data.train, "data.train"),
                                          spec.data.holdout_fraction)
    val_pairs = held_out + open_pairs(spec.data.validation, "data.validation")
    check_pairs(train_pairs, val_pairs, spec.training.chip)
    return train_pairs, val_pairs


def _check_same_bands(spec: TrainSpec, checkpoint: Checkpoint | None, pair: RasterPair) -> None:
    """Refuse to resume a run whose images changed bands since its checkpoint: its network and
    normalization were made for the bands they had (their names, when recorded)."""
    data = checkpoint.state.data if checkpoint is not None else {}
    names, mean = data.get("bands"), data.get("mean")
    names = names if isinstance(names, list) else None
    if names is None and not isinstance(mean, list):
        return  # no checkpoint, or one that says nothing about bands
    count, current = len(names if names is not None else mean), list(pair.image.band_names)
    if count == len(current) and names in (None, current):
        return
    had = f"{count} band(s)" + (f" ({', '.join(map(str, names))})" if names is not None else "")
    raise CheckpointError(
        f"{spec.output.run_url} holds a checkpoint (after epoch {checkpoint.state.epoch}) of a run "
        f"on images of {had}; {pair.name}.image ({public_url(pair.image.url)}) now has "
        f"{len(current)} ({', '.join(current)}). Its network and normalization fit the bands it had: "
        "resume with those images, or train on these as a new run, with a new output.run_dir "
        "(or output.model), or over this one with output.overwrite: true (--overwrite).")


def _warn_label_nodata(spec: TrainSpec, pairs: list[RasterPair], log: Log) -> None:
    """Label nodata is never trained on: say so when it is also a class id."""
    seen = set()
    for pair in pairs:
        nodata = pair.labels.georef.nodata
        if pair.labels.url in seen or nodata is None or not 0 <= nodata < len(spec.data.classes):
            continue
        seen.add(pair.labels.url)
        log(f"{spec.name}: warning: {public_url(pair.labels.url)} has nodata {nodata:g}, which is also class "
            f"{spec.data.classes[int(nodata)].name!r}; those pixels are neither trained on nor scored")


def _check_chip(spec: TrainSpec, net: nn.Module, architecture: str,
                arch_config: dict[str, Any]) -> None:
    stride = int(net.stride)
    if spec.training.chip % stride:
        raise TrainSpecError(
            f"training.chip: received {spec.training.chip}; expected a multiple of the network's "
            f"stride {stride} ({architecture} {arch_config}), e.g. "
            f"{round_up(spec.training.chip, stride)}.")


def _data_stats(spec: TrainSpec, pairs: list[RasterPair], checkpoint: Checkpoint | None,
                log: Log, started: Started | None = None) -> dict[str, Any]:
    """Normalization and class weights: from the checkpoint, else the spec (or the model.init
    file whose first layer was loaded) and sampled windows."""
    if checkpoint is not None:
        return checkpoint.state.data
    norm, n_classes = spec.data.normalization, len(spec.data.classes)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(2)[0])
    window = norm.window or spec.training.chip
    check_stats(pairs, spec.data, spec.training.chip)  # before any read
    stats = measure_stats(rng, pairs, norm.samples, window, n_classes, spec.data.ignore_index)
    mean, std, source = _normalization(spec, stats, pairs[0].bands, started)
    weights = _weights(spec, stats)
    absent = [c.name for c, n in zip(spec.data.classes, stats.class_counts) if n == 0]
    if absent:
        log(f"{spec.name}: warning: no pixel of {', '.join(absent)} in the {stats.windows} sampled "
            "window(s); raise data.normalization.samples for better class weights, or check data.classes")
    origin = {"init": f"model.init {started.public_url if started else ''}", "spec": "the spec",
              "measured": f"{stats.windows} window(s) of {stats.window} px"}[source]
    log(f"{spec.name}: normalization from {origin}: mean "
        f"{np.round(mean, 2).tolist()}, std {np.round(std, 2).tolist()}")
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "measured_mean": stats.mean.tolist(), "measured_std": stats.std.tolist(),
            "source": source, "windows": stats.windows,
            "window": stats.window, "pixels": stats.pixels, "class_counts": stats.class_counts.tolist(),
            "class_weights": None if weights is None else weights.tolist()}


def _normalization(spec: TrainSpec, stats: DataStats, n_bands: int,
                   started: Started | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean, std and where they come from: the spec, else the model.init file when its first
    layer was loaded (it expects the file's), else the sampled windows."""
    norm = spec.data.normalization
    if norm.mean is None and started is not None and started.bands_loaded:
        info = started.info
        return np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32), "init"
    if norm.mean is None:
        return stats.mean, stats.std, "measured"
    if len(norm.mean) != n_bands:
        raise TrainingDataError(f"data.normalization.mean: received {len(norm.mean)} value(s); expected "
                                f"{n_bands}, one per band of the images.")
    return np.asarray(norm.mean, np.float32), np.asarray(norm.std, np.float32), "spec"


def _weights(spec: TrainSpec, stats: DataStats) -> np.ndarray | None:
    given = spec.data.class_weights
    if given == "none":
        return None
    if given == "auto":
        return class_weights(stats.class_counts)
    return np.asarray(given, np.float32)


def _static_record(spec: TrainSpec, train_pairs: list[RasterPair], val_pairs: list[RasterPair],
                   catalog: SourceCatalog, stats: dict[str, Any], net_config: dict[str, Any],
                   device: torch.device, amp: torch.dtype | None,
                   validation: ValidationSet, architecture: str) -> dict[str, Any]:
    total = spec.training.epochs * spec.training.steps_per_epoch
    return {
        "format": FORMAT, "name": spec.name, "spec": spec.redacted(),
        "fingerprint": spec.fingerprint(),
        "resolved": {"architecture": architecture, "config": net_config, "device": str(device),
                     "autocast": str(amp).removeprefix("torch.") if amp else None, "total_steps": total,
                     "warmup_steps": _warmup_steps(spec), "torch_threads": torch.get_num_threads(),
                     "holdout": spec.data.holdout_fraction},
        "data": {"train": catalog.pairs(train_pairs), "validation": catalog.pairs(val_pairs),
                 "validation_windows": [{"pair": n, "window": w} for n, w in validation.windows]},
        "normalization": {k: stats[k] for k in ("mean", "std", "source", "windows", "window", "pixels")},
        "class_counts": dict(zip([c.name for c in spec.data.classes], stats["class_counts"])),
        "class_weights": stats["class_weights"], "packages": package_versions(),
    }


def _warmup_steps(spec: TrainSpec) -> int:
    """Steps of linear warm-up; counted exactly where the float product overflows (1e308 steps)."""
    t = spec.training
    try:
        return round(t.warmup * t.epochs * t.steps_per_epoch)
    except OverflowError:
        return round(Fraction(t.warmup) * t.epochs * t.steps_per_epoch)


def new_session(spec: TrainSpec, setup: Setup, checkpoint: Checkpoint | None,
                log: Log = print) -> Session:
    """Optimizer, schedule, sampling generator and loss; restored from ``checkpoint`` when given."""
    loop = _loop(spec, setup)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(2)[1])
    checksums = data_checksums(setup.record)
    if checkpoint is None:
        state = TrainState(data={**_stats_of(setup), "started": now(), "checksums": checksums,
                                 "init": setup.record.get("init"), "bands": list(setup.bands)})
        return Session(loop, rng, state)
    restore(checkpoint, model=setup.net, optimizer=loop.optimizer, scheduler=loop.scheduler, rng=rng)
    state = checkpoint.state
    loop.step = state.step
    changed = sorted(k for k, v in checksums.items() if state.data.get("checksums", {}).get(k) != v)
    if changed:
        log(f"{spec.name}: warning: data changed since epoch 1 ({', '.join(changed)}); resuming anyway")
    resume = {"after_epoch": state.epoch, "at": now(), "data_changed": changed}
    if checkpoint.progress is not None:  # at the next epoch's first step not done
        resume.update(epoch=state.epoch + 1, step=checkpoint.progress.step + 1)
    state.resumes.append(resume)
    best = {k: v.to(setup.device) for k, v in checkpoint.best.items()} or None
    return Session(loop, rng, state, best, checkpoint.progress)


def _loop(spec: TrainSpec, setup: Setup) -> Loop:
    """AdamW, warm-up and cosine to ``training.final_lr``, cross-entropy (class weights, ignore index)."""
    t = spec.training
    optimizer = adamw(setup.net, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = warmup_cosine(optimizer, warmup=_warmup_steps(spec), total=t.epochs * t.steps_per_epoch,
                              floor=t.final_lr)
    weight = None if setup.weights is None else torch.from_numpy(setup.weights).to(setup.device)
    loss_fn = nn.CrossEntropyLoss(weight=weight, ignore_index=spec.data.ignore_index)
    return Loop(setup.net, optimizer, scheduler, loss_fn, setup.device, setup.amp, spec.data.ignore_index,
                f"lower training.lr (now {t.lr}) or raise training.warmup.")


def data_checksums(record: dict[str, Any]) -> dict[str, str]:
    """``"pair/role" -> sha256`` of every source in a run record (to tell whether data changed)."""
    return {f"{entry['pair']}/{role}": entry[role]["checksum"]["sha256"]
            for split in ("train", "validation") for entry in record["data"][split]
            for role in ("image", "labels")}


def _stats_of(setup: Setup) -> dict[str, Any]:
    norm = setup.record["normalization"]
    return {"mean": norm["mean"], "std": norm["std"], "source": norm["source"], "windows": norm["windows"],
            "window": norm["window"], "pixels": norm["pixels"],
            "class_counts": list(setup.record["class_counts"].values()),
            "class_weights": setup.record["class_weights"]}


# -- the loop ---------------------------------------------------------------------------------


def run_epochs(spec: TrainSpec, setup: Setup, session: Session, outputs: Outputs, *,
               max_epochs: int | None, on_epoch: Callable[[dict[str, Any]], Any] | None,
               log: Log, max_steps: int | None = None) -> TrainResult:
    """Train epoch after epoch until done, stopped early, ``max_epochs`` or ``max_steps``;
    record failures."""
    resumed_from = session.state.epoch if session.state.resumes else None
    if resumed_from is not None:
        log(_resume_line(spec, session))
    stopped_early = _early_stop(spec, session)  # a resumed run may have stopped already
    first = spec.training.epochs + 1 if stopped_early else session.state.epoch + 1
    after_step = _after_step(spec, setup, session, outputs, max_steps)
    try:
        for epoch in range(first, spec.training.epochs + 1):
            metrics = run_epoch(spec, setup, session, epoch, after_step)
            stopped_early = _early_stop(spec, session)
            save_progress(spec, setup, session, outputs, "running")
            log(_epoch_line(spec, metrics, session.state))
            if on_epoch is not None:
                on_epoch(metrics)
            if stopped_early:
                log(f"{spec.name}: no improvement for {session.state.bad_epochs} epoch(s); stopping early")
                break
            if max_epochs is not None and epoch >= max_epochs and epoch < spec.training.epochs:
                save_progress(spec, setup, session, outputs, "interrupted")
                return _result(spec, session, outputs, "interrupted", None, "", False, resumed_from)
        _check_trained(spec, setup, session)  # before its model is written
    except _StepLimit:
        save_progress(spec, setup, session, outputs, "interrupted")
        return _result(spec, session, outputs, "interrupted", None, "", False, resumed_from)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        save_progress(spec, setup, session, outputs, status, error=f"{type(exc).__name__}: {exc}")
        raise
    return finish(spec, setup, session, outputs, stopped_early, resumed_from, log)


def _resume_line(spec: TrainSpec, session: Session) -> str:
    t, done = spec.training, session.state.epoch
    if session.progress is None:
        return f"{spec.name}: resuming after epoch {done} of {t.epochs}"
    return (f"{spec.name}: resuming at epoch {done + 1} of {t.epochs}, step "
            f"{session.progress.step + 1} of {t.steps_per_epoch}")


def _after_step(spec: TrainSpec, setup: Setup, session: Session, outputs: Outputs,
                max_steps: int | None) -> Callable[[EpochProgress], None]:
    """What follows each step: a checkpoint every ``training.checkpoint_steps`` steps inside an
    epoch (its end has its own), and the stop at ``max_steps``."""
    every, steps = spec.training.checkpoint_steps, spec.training.steps_per_epoch

    def after_step(progress: EpochProgress) -> None:
        if every and progress.step % every == 0 and progress.step < steps:
            session.state.step = session.loop.step
            _save_checkpoint(spec, setup, session, outputs, progress)
        if max_steps is not None and session.loop.step >= max_steps:
            raise _StepLimit(f"stopped after step {session.loop.step} (max_steps)")

    return after_step


def run_epoch(spec: TrainSpec, setup: Setup, session: Session, epoch: int,
              after_step: Callable[[EpochProgress], Any] | None = None) -> dict[str, Any]:
    """One epoch of training, then validation; appends and returns the epoch's metrics.

    The epoch goes on from ``session.progress`` when a resume left one (its chips planned
    again, those of the steps done skipped unread). ``after_step`` is called after each step
    with the epoch's progress so far."""
    t, start = spec.training, time.perf_counter()
    done = session.progress or EpochProgress(0, 0.0, 0, session.rng.bit_generator.state)
    session.progress = None
    plans = batch_plans(session.rng, setup.train_pairs, t.steps_per_epoch, t.batch_size, t.chip,
                        t.augment.flips, t.augment.rot90)  # drawn as they are read
    loader = ChipLoader(setup.train_pairs, setup.prep, t.chip, threads=t.loader_threads)
    sums, first = LossSum(done.loss_sum, done.loss_count), session.loop.step - done.step

    def on_step(step: int, loss: float) -> None:
        if after_step is not None:
            after_step(EpochProgress(step + 1 - first, sums.total, sums.count, done.numpy_rng))

    batches = loader.batches(islice(plans, done.step, None))  # the steps done are skipped, unread
    with closing(batches):  # on an error, its threads stop at once
        loss = session.loop.mean_loss(batches, on_step=on_step, sums=sums)
    session.state.step = session.loop.step
    confusion = evaluate(setup.net, setup.validation, len(spec.data.classes), setup.device, setup.amp)
    miou = mean_iou(confusion)
    ious = {c.name: (None if np.isnan(v) else round(float(v), 6))
            for c, v in zip(spec.data.classes, iou_per_class(confusion))}
    metrics = {"epoch": epoch, "step": session.state.step, "train_loss": loss, "val_miou": miou,
               "val_iou": ious, "lr": session.loop.scheduler.get_last_lr()[0],
               "seconds": round(time.perf_counter() - start, 3)}
    _update_best(spec, setup, session, metrics)
    session.state.epoch = epoch
    session.state.history.append(metrics)
    return metrics


def _check_trained(spec: TrainSpec, setup: Setup, session: Session) -> None:
    """Refuse a run whose every epoch ended without one optimizer step: every chip held only
    ignored labels, and its untrained network would be written as a model. Sparse labels that
    some epochs miss and others reach train as before."""
    history = session.state.history
    if any(_finite(m.get("train_loss")) for m in history):
        return
    t, chips = spec.training, len(history) * spec.training.steps_per_epoch * spec.training.batch_size
    raise TrainingDataError(
        f"{spec.name}: {len(history)} epoch(s) ended without one optimizer step: every pixel of "
        f"their {chips} training chip(s) of {t.chip} x {t.chip} from "
        f"{', '.join(p.name + '.labels' for p in setup.train_pairs)} was ignored (data.ignore_index "
        f"{spec.data.ignore_index}, the labels' nodata, the image's no-data, or a class data.class_weights weighs 0); "
        "expected chips holding labelled pixels of data.classes. Check the labels' class ids and "
        "nodata, data.ignore_index and data.class_weights, and that data.train's windows and "
        "training.chip cover labelled ground; no model was written.")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def evaluate(net: nn.Module, validation: ValidationSet, n_classes: int, device: torch.device,
             amp: torch.dtype | None, batch_size: int = SCORE_BATCH) -> np.ndarray:
    """Confusion matrix of ``net`` (in eval mode) over the validation windows' labelled pixels."""
    net.eval()
    stride = int(net.stride)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(validation.inputs):
        by_shape.setdefault(x.shape, []).append(i)
    with torch.inference_mode(), autocast(device, amp):
        for shape, indices in by_shape.items():
            padded_shape = tuple(round_up(n, stride) for n in shape[1:])
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                x = np.empty((len(chunk), shape[0], *padded_shape), np.float32)
                for j, i in enumerate(chunk):  # one padded copy at a time (scratch_windows)
                    x[j] = pad_end(validation.inputs[i], padded_shape)
                pred = net(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy()
                del x
                for i, p in zip(chunk, pred):
                    truth = validation.targets[i]
                    keep = truth != validation.ignore_index
                    confusion += confusion_matrix(truth[keep], p[: shape[1], : shape[2]][keep], n_classes)
                del pred
    net.train()
    return confusion


def _update_best(spec: TrainSpec, setup: Setup, session: Session, metrics: dict[str, Any]) -> None:
    state, stopping = session.state, spec.training.early_stopping
    min_delta = stopping.min_delta if stopping else 0.0
    improved = not np.isnan(metrics["val_miou"]) and metrics["val_miou"] > state.best_miou + min_delta
    metrics["best"] = bool(improved)
    if improved:
        state.best_epoch, state.best_miou, state.bad_epochs = metrics["epoch"], metrics["val_miou"], 0
        if spec.training.keep == "best":
            session.best = {k: v.detach().clone() for k, v in setup.net.state_dict().items()}
    else:
        state.bad_epochs += 1


def _early_stop(spec: TrainSpec, session: Session) -> bool:
    stopping = spec.training.early_stopping
    return stopping is not None and session.state.bad_epochs >= stopping.patience


def _epoch_line(spec: TrainSpec, m: dict[str, Any], state: TrainState) -> str:
    return (f"{spec.name}: epoch {m['epoch']}/{spec.training.epochs} loss {m['train_loss']:.4f} "
            f"val mIoU {m['val_miou']:.4f} (best {state.best_miou:.4f} @ {state.best_epoch}) "
            f"lr {m['lr']:.2e} {m['seconds']:.1f} s")


# -- progress and results ---------------------------------------------------------------------


def save_progress(spec: TrainSpec, setup: Setup, session: Session, outputs: Outputs, status: str,
                  error: str | None = None) -> None:
    """Write the checkpoint (when an epoch finished since the last one) and the run record."""
    so = outputs.storage_options
    state = session.state
    if status == "running":
        _save_checkpoint(spec, setup, session, outputs)
    record = {**setup.record, "status": status, "started": state.data.get("started"), "updated": now(),
              "run_dir": public_url(outputs.run_dir), "record_url": public_url(outputs.record_url),
              "checkpoint": public_url(outputs.checkpoint_dir), "epochs": state.history,
              "resumes": state.resumes}
    if error:
        record["error"] = scrub(error)  # the sources show public URLs; this is the backstop
    write_json(outputs.record_url, finite_or_null(record), so)


def _save_checkpoint(spec: TrainSpec, setup: Setup, session: Session, outputs: Outputs,
                     progress: EpochProgress | None = None) -> None:
    """The checkpoint after ``session.state.epoch`` epochs, and ``progress`` into the next."""
    save_checkpoint(outputs.checkpoint_dir, state=session.state, model=setup.net, best=session.best,
                    optimizer=session.loop.optimizer, scheduler=session.loop.scheduler, rng=session.rng,
                    spec=comparable(spec), fingerprint=spec.fingerprint(),
                    storage_options=outputs.storage_options, progress=progress)


def finish(spec: TrainSpec, setup: Setup, session: Session, outputs: Outputs, stopped_early: bool,
           resumed_from: int | None, log: Log) -> TrainResult:
    """Save the kept weights as a geoseg model file and complete the run record."""
    state = session.state
    if spec.training.keep == "best" and session.best is not None:
        setup.net.load_state_dict(session.best)
    final = _final_metrics(spec, state, stopped_early)
    info = ModelInfo(spec.model_name, setup.architecture, setup.net_config,
                     tuple(ClassInfo(c.name, tuple(c.color)) for c in spec.data.classes), setup.bands,
                     tuple(state.data["mean"]), tuple(state.data["std"]),
                     extra={"training": _model_summary(spec, setup, outputs, final)})
    model = SegmentationModel(setup.net, info, device="cpu")
    ref = save_model(model, outputs.model_url, storage_options=outputs.storage_options, overwrite=True)
    record = read_json(outputs.record_url, outputs.storage_options) or {}
    record.update(status="complete", finished=now(), final=final,
                  model={"url": public_url(outputs.model_url), "sha256": ref.sha256})
    write_json(outputs.record_url, finite_or_null(record), outputs.storage_options)
    log(f"{spec.name}: wrote {outputs.model_url} (weights of epoch {final['kept_epoch']}, best "
        f"validation mIoU {final['best_val_miou']:.4f}); run record {outputs.record_url}")
    return _result(spec, session, outputs, "complete", outputs.model_url, ref.sha256, stopped_early,
                   resumed_from)


def _final_metrics(spec: TrainSpec, state: TrainState, stopped_early: bool) -> dict[str, Any]:
    best = next((m for m in state.history if m["epoch"] == state.best_epoch), {})
    kept = state.best_epoch if spec.training.keep == "best" and best else state.epoch
    return {"epochs_run": state.epoch, "best_epoch": state.best_epoch,
            "best_val_miou": best.get("val_miou", float("nan")), "best_val_iou": best.get("val_iou", {}),
            "kept_epoch": kept, "stopped_early": stopped_early, "steps": state.step}


def _model_summary(spec: TrainSpec, setup: Setup, outputs: Outputs,
                   final: dict[str, Any]) -> dict[str, Any]:
    data = setup.record["data"]
    return finite_or_null({
        "command": "geoseg train", "run": spec.name, "seed": spec.seed,
        "run_record": public_url(outputs.record_url),
        "hyperparameters": spec.training.model_dump(mode="json"), "validation": final,
        "normalization": {k: setup.record["normalization"][k]
                          for k in ("source", "windows", "window", "pixels")},
        "class_weights": setup.record["class_weights"], "ignore_index": spec.data.ignore_index,
        **({"init": setup.record["init"]} if setup.record.get("init") else {}),
        "data": {split: [{"pair": e["pair"], "image": e["image"]["url"], "labels": e["labels"]["url"],
                          "image_sha256": e["image"]["checksum"]["sha256"],
                          "labels_sha256": e["labels"]["checksum"]["sha256"]} for e in data[split]]
                 for split in ("train", "validation")},
    })


def _result(spec: TrainSpec, session: Session, outputs: Outputs, status: str, model_url: str | None,
            sha256: str, stopped_early: bool, resumed_from: int | None) -> TrainResult:
    final = _final_metrics(spec, session.state, stopped_early)
    return TrainResult(name=spec.name, status=status, model_url=model_url, model_sha256=sha256,
                       run_dir=outputs.run_dir, record_url=outputs.record_url,
                       epochs_run=final["epochs_run"],
                       best_epoch=final["best_epoch"], best_val_miou=final["best_val_miou"],
                       best_val_iou=final["best_val_iou"], stopped_early=stopped_early,
                       resumed_from=resumed_from, history=list(session.state.history))
