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
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from geoseg.core import jsontext
from geoseg.errors import CheckpointError
from geoseg.io.files import write_whole

FORMAT = "geoseg-train-checkpoint/1"
_NAME = re.compile(r"state-(\d+)(?:-(\d+))?\.json$")
_FILE = re.compile(r"state-(\d+)(?:-(\d+))?\.(json|safetensors)$")


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
    write_whole(f"{url}/{stem}.json", json.dumps(_finite(meta), indent=1), storage_options=so,
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


def _finite(value: Any) -> Any:
    """JSON has no -inf: store a never-improved best mIoU as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def load_checkpoint(folder: str, storage_options: dict[str, Any] | None = None) -> Checkpoint | None:
    """The newest complete checkpoint in ``folder``, or ``None`` when there is none."""
    fs, path = fsspec.core.url_to_fs(folder, **(storage_options or {}))
    if not fs.exists(path):
        return None
    found = sorted(((_key(m), name) for name in fs.ls(path, detail=False)
                    if (m := _NAME.search(name))), reverse=True)
    for _, name in found:
        meta = jsontext.loads(fs.cat_file(name))
        tensor_path = f"{path}/{meta['tensors']}"
        data = fs.cat_file(tensor_path) if fs.exists(tensor_path) else b""
        if hashlib.sha256(data).hexdigest() == meta.get("tensors_sha256"):
            return _parse(meta, load_tensors(data))
    if found:
        raise CheckpointError(
            f"{folder} holds checkpoint files but none whose tensors match its JSON (interrupted while "
            "writing, or edited); delete that folder to start over, or set output.overwrite: true.")
    return None


def _parse(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Checkpoint:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint format {meta.get('format')!r} is not {FORMAT!r}.")
    state_json = dict(meta["state"])
    if state_json.get("best_miou") is None:
        state_json["best_miou"] = float("-inf")
    return Checkpoint(
        state=TrainState(**state_json),
        model=_group(tensors, "model."),
        best=_group(tensors, "best."),
        optimizer=_optimizer_state(meta["optimizer"], _group(tensors, "optim.")),
        scheduler=meta["scheduler"],
        numpy_rng=meta["numpy_rng"],
        torch_rng=_group(tensors, "rng."),
        spec=meta["spec"],
        fingerprint=meta["fingerprint"],
        progress=EpochProgress(**meta["epoch_progress"]) if meta.get("epoch_progress") else None,
    )


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
    as it was before the chips of the epoch under way were planned, for a mid-epoch checkpoint."""
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
