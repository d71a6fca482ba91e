"""Resumable checkpoints: safetensors for tensors, JSON for everything else; never pickle.

After epoch ``E`` a run folder's ``checkpoint/`` holds

* ``state-E.safetensors``: model weights (``model.*``), the best weights so far
  (``best.*``), AdamW moments (``optim.<param>.<name>``) and torch RNG states
  (``rng.torch``, ``rng.cuda.<i>``);
* ``state-E.json``: the epoch, optimizer hyperparameters, scheduler state, numpy
  generator state, history, early-stopping counters, the normalization and class
  weights in use, the spec it belongs to, and the sha256 of the tensor file.

With ``training.checkpoint_steps``, a checkpoint is also taken every that many
steps inside an epoch: ``state-E-S.*`` after epoch ``E`` and ``S`` steps of the
next. Its JSON adds ``epoch_progress`` (:class:`EpochProgress`: those steps, the
sum and count of their losses, and the numpy generator state from before the
epoch's chips were planned, so that a resume plans the same chips and skips the
ones done); an epoch-end checkpoint has none, as before.

The JSON file is written last and names the tensor file's hash, so it marks a
complete checkpoint on any fsspec store (no renames needed): loading takes the
newest JSON whose tensors match. Older checkpoints are deleted after a new one
is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar

import fsspec
import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from geoseg.core import jsontext
from geoseg.core.records import finite_or_null
from geoseg.core.text import brief, clipped
from geoseg.core.urls import public_url
from geoseg.errors import CheckpointError
from geoseg.io.files import write_whole

FORMAT = "geoseg-train-checkpoint/1"
_NAME = re.compile(r"state-(\d+)(?:-(\d+))?\.json$")
_FILE = re.compile(r"state-(\d+)(?:-(\d+))?\.(json|safetensors)$")
_TENSORS = re.compile(r"state-\d+(-\d+)?\.safetensors")  # a JSON's "tensors": the file beside it


@dataclass
class TrainState:
    """Everything about a run's progress that is not a tensor."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_epoch: int = 0
    best_miou: float = float("-inf")
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # normalization, class weights, ...
    resumes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EpochProgress:
    """How far a run got into the epoch after ``TrainState.epoch`` (a mid-epoch checkpoint)."""

    step: int  # optimizer steps taken in the epoch
    loss_sum: float  # of the finite losses of those steps
    loss_count: int
    numpy_rng: dict[str, Any]  # the sampling generator's state before the epoch's chips were planned


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by group, and the JSON part."""

    state: TrainState
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: dict[str, torch.Tensor]
    spec: dict[str, Any]
    fingerprint: str
    progress: EpochProgress | None = None  # None: taken at an epoch's end
    url: str = ""  # of its JSON file


def save_checkpoint(folder: str, *, state: TrainState, model: torch.nn.Module,
                    best: dict[str, torch.Tensor] | None, optimizer: torch.optim.Optimizer,
                    scheduler: Any, rng: np.random.Generator, spec: dict[str, Any], fingerprint: str,
                    storage_options: dict[str, Any] | None = None,
                    progress: EpochProgress | None = None) -> str:
    """Write the checkpoint of ``state.epoch`` (and ``progress`` into the next epoch, when
    given) to ``folder``; returns the JSON file's URL."""
    fs, path = fsspec.core.url_to_fs(folder, **(storage_options or {}))
    fs.makedirs(path, exist_ok=True)
    tensors, optim_json = _tensors(model, best, optimizer)
    data = save_tensors(tensors)
    key = (state.epoch, 0 if progress is None else progress.step)
    stem = f"state-{state.epoch:04d}" + ("" if progress is None else f"-{progress.step:06d}")
    so, url = dict(storage_options or {}), folder.rstrip("/")
    write_whole(f"{url}/{stem}.safetensors", data, storage_options=so, what="Writing checkpoint")
    meta = {"format": FORMAT, "tensors": f"{stem}.safetensors",
            "tensors_sha256": hashlib.sha256(data).hexdigest(), "state": asdict(state),
            "optimizer": optim_json, "scheduler": scheduler.state_dict(),
            "numpy_rng": rng.bit_generator.state, "spec": spec, "fingerprint": fingerprint}
    if progress is not None:
        meta["epoch_progress"] = asdict(progress)
    write_whole(f"{url}/{stem}.json", json.dumps(finite_or_null(meta), indent=1), storage_options=so,
                what="Writing checkpoint")
    _remove_older(fs, path, key)
    return f"{folder.rstrip('/')}/{stem}.json"


def _tensors(model: torch.nn.Module, best: dict[str, torch.Tensor] | None,
             optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    for k, v in (best or {}).items():
        tensors[f"best.{k}"] = v.detach().cpu().contiguous().clone()
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optim["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors, {"param_groups": optim["param_groups"], "scalars": scalars}


def _key(match: re.Match[str]) -> tuple[int, int]:
    """(epochs done, steps into the next) of a checkpoint file's name."""
    return int(match.group(1)), int(match.group(2) or 0)


def _remove_older(fs: Any, path: str, key: tuple[int, int]) -> None:
    for name in fs.ls(path, detail=False):
        match = _FILE.search(name)
        if match and _key(match) < key:
            fs.rm(name)


def load_checkpoint(folder: str, storage_options: dict[str, Any] | None = None) -> Checkpoint | None:
    """The newest complete checkpoint in ``folder``, or ``None`` when there is none."""
    fs, path = fsspec.core.url_to_fs(folder, **(storage_options or {}))
    if not fs.exists(path):
        return None
    found = sorted(((_key(m), name) for name in fs.ls(path, detail=False)
                    if (m := _NAME.search(name))), reverse=True)
    for _, name in found:
        url = f"{folder.rstrip('/')}/{name.rsplit('/', 1)[-1]}"
        meta = _read_meta(fs.cat_file(name), url)
        tensor_path = f"{path}/{meta['tensors']}"
        data = fs.cat_file(tensor_path) if fs.exists(tensor_path) else b""
        if hashlib.sha256(data).hexdigest() == meta.get("tensors_sha256"):
            return _parse(meta, data, url)
    if found:
        raise CheckpointError(
            f"{folder} holds checkpoint files but none whose tensors match its JSON (interrupted while "
            "writing, or edited); delete that folder to start over, or set output.overwrite: true "
            "(--overwrite).")
    return None


def _damaged(url: str, problem: str) -> CheckpointError:
    """The error for the checkpoint at ``url`` that cannot be used as it is: ``problem``."""
    return CheckpointError(
        f"checkpoint {public_url(url)}: {problem}; it was interrupted while writing, or edited. "
        "Delete its folder to start over, or set output.overwrite: true (--overwrite).")


def _read_meta(text: bytes, url: str) -> dict[str, Any]:
    """The JSON part of a checkpoint: an object naming its tensor file, next to it."""
    try:
        meta = jsontext.loads(text)
    except ValueError as exc:  # not JSON, not UTF-8, or nested too deep
        raise _damaged(url, f"it is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _damaged(url, f"received a JSON {type(meta).__name__} ({brief(meta)}); "
                            "expected an object")
    tensors = meta.get("tensors")
    if not isinstance(tensors, str) or not _TENSORS.fullmatch(tensors):
        raise _damaged(url, f'"tensors": received {brief(tensors)}; expected the name of '
                            "the tensor file beside it (state-NNNN.safetensors)")
    return meta


def _parse(meta: dict[str, Any], data: bytes, url: str) -> Checkpoint:
    if meta.get("format") != FORMAT:
        raise _damaged(url, f"its format is {brief(meta.get('format'))}, not {FORMAT!r}")
    state = _record(TrainState, meta.get("state"), "state", url)
    if state.best_miou is None:  # stored as null: never improved
        state.best_miou = float("-inf")
    progress = meta.get("epoch_progress")
    progress = _record(EpochProgress, progress, "epoch_progress", url) if progress else None
    try:
        return _checkpoint(meta, load_tensors(data), url, state, progress)
    except KeyError as exc:
        raise _damaged(url, f"its JSON has no {exc} key") from None
    except (TypeError, ValueError, AttributeError) as exc:  # a SafetensorError is a ValueError
        said = clipped(" ".join(str(exc).split()), 200)
        raise _damaged(url, f"its content is not a checkpoint's ({said})") from None


def _checkpoint(meta: dict[str, Any], tensors: dict[str, torch.Tensor], url: str,
                state: TrainState, progress: EpochProgress | None) -> Checkpoint:
    return Checkpoint(
        state=state,
        model=_group(tensors, "model."),
        best=_group(tensors, "best."),
        optimizer=_optimizer_state(meta["optimizer"], _group(tensors, "optim.")),
        scheduler=meta["scheduler"],
        numpy_rng=meta["numpy_rng"],
        torch_rng=_group(tensors, "rng."),
        spec=meta["spec"],
        fingerprint=meta["fingerprint"],
        progress=progress,
        url=url,
    )


R = TypeVar("R")


def _record(cls: type[R], value: Any, key: str, url: str) -> R:
    """A ``cls`` dataclass from the JSON object under ``key``: no unknown key, none missing."""
    names = [f.name for f in fields(cls)]
    required = {f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING}
    if not isinstance(value, dict):
        raise _damaged(url, f'"{key}": received {brief(value)}; expected an object')
    unknown, missing = sorted(set(value) - set(names)), sorted(required - set(value))
    if unknown or missing:
        said = f"unknown key(s) {', '.join(unknown)}" if unknown else f"no {', '.join(missing)}"
        raise _damaged(url, f'"{key}": {said}; expected the keys {", ".join(names)}')
    _check_kinds(cls, value, key, url)
    return cls(**value)


def _check_kinds(cls: type, value: dict[str, Any], key: str, url: str) -> None:
    """Refuse a value of ``cls``'s fields that is not of the field's type (a list for an int)."""
    kinds = {name: typing.get_origin(hint) or hint for name, hint in typing.get_type_hints(cls).items()}
    wrong = next((name for name, item in value.items() if not _fits(item, kinds[name])), None)
    if wrong is not None:
        raise _damaged(url, f'"{key}.{wrong}": received {brief(value[wrong])}; expected '
                            f"{_KIND_NAMES[kinds[wrong]]}")


_KIND_NAMES = {int: "an integer", float: "a number or null", list: "a list", dict: "an object"}


def _fits(value: Any, kind: type) -> bool:
    """Whether a JSON ``value`` can stand for a field of type ``kind`` (int, float, list, dict);
    a float may be null (how checkpoints store an infinity)."""
    if kind is float:
        return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _group(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def restore(checkpoint: Checkpoint, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, rng: np.random.Generator) -> None:
    """Load weights, optimizer, scheduler and RNG states into freshly built objects; ``rng``
    as it was before the chips of the epoch under way were planned, for a mid-epoch checkpoint.
    A checkpoint whose state does not fit them (edited) is a :class:`CheckpointError`."""
    try:
        _restore(checkpoint, model, optimizer, scheduler, rng)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise _damaged(checkpoint.url, "its state does not fit this run's network and optimizer "
                                       f"({clipped(' '.join(str(exc).split()), 300)})") from None


def _restore(checkpoint: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any, rng: np.random.Generator) -> None:
    if checkpoint.best:  # checked now, loaded at the end
        model.load_state_dict(checkpoint.best, strict=True)
    model.load_state_dict(checkpoint.model, strict=True)
    optimizer.load_state_dict(checkpoint.optimizer)
    scheduler.load_state_dict(checkpoint.scheduler)
    progress = checkpoint.progress
    rng.bit_generator.state = checkpoint.numpy_rng if progress is None else progress.numpy_rng
    torch.set_rng_state(checkpoint.torch_rng["torch"])
    cuda = [checkpoint.torch_rng[f"cuda.{i}"] for i in range(torch.cuda.device_count())
            if f"cuda.{i}" in checkpoint.torch_rng]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def remove_checkpoints(folder: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete every checkpoint file in ``folder`` (starting a run over)."""
    fs, path = fsspec.core.url_to_fs(folder, **(storage_options or {}))
    if fs.exists(path):
        for name in fs.ls(path, detail=False):
            if _FILE.search(name):
                fs.rm(name)
