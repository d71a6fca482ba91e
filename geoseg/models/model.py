"""A deep segmentation model: a torch network plus the metadata that makes it safe to run."""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg import config
from geoseg.core.classes import ClassInfo
from geoseg.core.segmenter import Segmenter
from geoseg.errors import ModelConfigError, ModelFileError
from geoseg.models.tensors import valid_mask_tensor
from geoseg.tiling.plan import coerce_per_axis

IN_MEMORY = "in-memory:"
# Models built in this process, by weights hash, while their users hold them.
BUILT_IN_MEMORY: weakref.WeakValueDictionary[str, SegmentationModel] = weakref.WeakValueDictionary()


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of the weights that does not depend on file layout: names, dtypes, shapes, bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """Everything a model file says about its network besides the weights."""

    name: str
    architecture: str
    config: dict[str, Any]
    classes: tuple[ClassInfo, ...]
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.bands)
        if len(self.mean) != n or len(self.std) != n:
            raise ModelConfigError(
                f"normalization has {len(self.mean)} means and {len(self.std)} stds "
                f"for {n} bands {self.bands}; give one of each per band."
            )
        if any(s <= 0 for s in self.std):
            raise ModelConfigError(f"every std must be > 0, got {self.std}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "config": self.config,
            "classes": [c.to_dict() for c in self.classes],
            "bands": list(self.bands),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "sha256": self.sha256,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        norm = data["normalization"]
        return cls(
            name=str(data["name"]),
            architecture=str(data["architecture"]),
            config=dict(data["config"]),
            classes=tuple(ClassInfo.from_dict(c) for c in data["classes"]),
            bands=tuple(str(b) for b in data["bands"]),
            mean=tuple(float(m) for m in norm["mean"]),
            std=tuple(float(s) for s in norm["std"]),
            sha256=str(data.get("sha256", "")),
            extra=dict(data.get("extra", {})),
        )


@dataclass(frozen=True)
class ModelRef:
    """What a task carries instead of a model: where it lives and its weights' hash.

    Workers turn it into a loaded model once per process
    (:func:`geoseg.models.cache.resolve`). Storage options are neither compared
    nor printed.
    """

    url: str
    sha256: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class ModelHeader(Segmenter):
    """A model file as the job's client sees it: metadata and tiling geometry, no network.

    Classes, bands, stride, receptive field and the weights' hash come from the file's
    header (:func:`geoseg.models.modelfile.read_header`); the workers load the weights
    (:class:`geoseg.parallel.plugins.ModelPlugin`). It plans and checks, it never predicts.
    """

    def __init__(self, info: ModelInfo, source: ModelRef, *, stride: tuple[int, ...],
                 halo: tuple[int, ...], global_context: bool, parameters: int = 0):
        self.info, self.source, self.parameters = info, source, parameters
        self.name, self.classes, self.bands = info.name, info.classes, info.bands
        self.stride, self.halo, self.global_context = stride, halo, global_context

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise ModelFileError(f"{self.name} was read for its header only; load its weights with "
                             f"geoseg.load_model({self.source.url!r}) to predict.")

    def ref(self) -> ModelRef:
        return self.source

    def __repr__(self) -> str:
        return (f"ModelHeader(name={self.name!r}, architecture={self.info.architecture!r}, "
                f"stride={self.stride}, halo={self.halo}, sha256={self.info.sha256[:12]})")


class SegmentationModel(Segmenter):
    """A network in eval mode with its :class:`ModelInfo`.

    Runs on ``device`` (default: CUDA when available, else CPU); on CUDA under
    bf16 autocast with channels-last memory. :meth:`predict_tensor` returns softmax
    probabilities in float32 on the device; :meth:`predict` is its host (numpy) form.
    """

    def __init__(self, net: nn.Module, info: ModelInfo, *, source: ModelRef | None = None,
                 device: str | None = None):
        self.net = net.eval()
        self.info = info
        self.name = info.name
        self.classes = info.classes
        self.bands = info.bands
        self.source = source
        ndim = getattr(net, "spatial_dims", 2)
        self.stride = coerce_per_axis(net.stride, ndim, "stride")
        self.halo = coerce_per_axis(net.receptive_radius, ndim, "receptive_radius")
        self.global_context = bool(getattr(net, "global_context", False))
        self.device = torch.device(device or config.device())
        self.net.to(self.device)
        if self.device.type == "cuda" and ndim == 2:
            self.net.to(memory_format=torch.channels_last)
        self._forward: Any = self.net
        self._mean = np.asarray(info.mean, dtype=np.float32).reshape((-1,) + (1,) * ndim)
        self._std = np.asarray(info.std, dtype=np.float32).reshape((-1,) + (1,) * ndim)
        self._mean_t = torch.from_numpy(self._mean).to(self.device)
        self._std_t = torch.from_numpy(self._std).to(self.device)

    def prepare(self, raw: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        x, valid = self.prepare_tensor(torch.from_numpy(np.ascontiguousarray(raw)), nodata)
        return x.numpy(force=True), valid.numpy(force=True)

    def prepare_tensor(self, raw: torch.Tensor, nodata: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float32 input and validity mask, on the device of ``raw``; no-data
        pixels are fed to the network as zeros."""
        valid = valid_mask_tensor(raw, nodata)
        mean, std = self._mean_t.to(raw.device), self._std_t.to(raw.device)
        x = (raw.to(torch.float32) - mean) / std
        return x.masked_fill_(~valid, 0.0), valid

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_tensor(torch.from_numpy(np.ascontiguousarray(batch))).numpy(force=True)

    def predict_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, classes, *spatial)`` as a float32 tensor on the model's device."""
        x = batch.to(self.device, torch.float32)
        if self.device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            logits = self._forward(x)
        return torch.softmax(logits.float(), dim=1)

    def compile(self) -> SegmentationModel:
        """Run the network through ``torch.compile`` from now on (compiled at its first call,
        once per input shape; idempotent)."""
        if self._forward is self.net:
            self._forward = torch.compile(self.net, dynamic=False)
        return self

    @property
    def compiled(self) -> bool:
        return self._forward is not self.net

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def ref(self) -> ModelRef:
        """The model's file reference. A model built in memory gets an ``in-memory:``
        reference that resolves in this process only (in-process schedulers): it is found
        in :data:`BUILT_IN_MEMORY` while the model lives."""
        if self.source is None:
            sha = weights_sha256(self.net.state_dict())
            BUILT_IN_MEMORY[sha] = self
            self.source = ModelRef(f"{IN_MEMORY}{self.name}", sha)
        return self.source

    def __repr__(self) -> str:
        return (f"SegmentationModel(name={self.name!r}, architecture={self.info.architecture!r}, "
                f"bands={len(self.bands)}, classes={self.n_classes}, sha256={self.info.sha256[:12]})")
