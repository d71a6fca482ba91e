"""A deep segmentation model: a torch network plus the metadata that makes it safe to run."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import uuid
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg import config
from geoseg.core.pixels import check_pixel_dtype
from geoseg.core.segmenter import Segmenter, image_array
from geoseg.core.text import brief
from geoseg.errors import ParameterError
from geoseg.models.header import IN_MEMORY, ModelInfo, ModelRef
from geoseg.models.tensors import non_finite_said, valid_mask_tensor
from geoseg.tiling.plan import coerce_per_axis

# Models built in this process (or changed since they were read), by their in-memory URL,
# while their users hold them.
BUILT_IN_MEMORY: weakref.WeakValueDictionary[str, SegmentationModel] = weakref.WeakValueDictionary()
# models of files loaded in this process, by (url, weights hash, device): tasks in this process
# (an in-process scheduler) use the model itself rather than load the file again
LOADED: weakref.WeakValueDictionary[tuple[str, str, str], SegmentationModel] = weakref.WeakValueDictionary()


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of the weights that does not depend on file layout: names, dtypes, shapes, bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_types(net: Any, info: Any) -> None:
    """Refuse a network that is no torch module (a function, a TorchScript file's path) or
    metadata that is no :class:`ModelInfo`, before either is used."""
    if not isinstance(net, nn.Module):
        raise ParameterError(
            f"SegmentationModel: net: received {type(net).__name__} {brief(net, 60)}; expected a "
            "torch.nn.Module (e.g. geoseg.models.UNet2D(...)): wrap a function in an nn.Module "
            "whose forward returns the class scores, or load a model file with geoseg.load_model.")
    if not isinstance(info, ModelInfo):
        raise ParameterError(
            f"SegmentationModel: info: received {type(info).__name__} {brief(info, 60)}; expected "
            "a geoseg.ModelInfo (name, architecture, config, classes, bands, mean, std).")


def _check_classes(net: nn.Module, info: ModelInfo) -> None:
    """Refuse metadata naming another number of classes than the network scores (its config's
    ``num_classes``): a saved file would be refused when loaded, and a task would fail."""
    channels = info.config.get("num_classes", getattr(net, "num_classes", None))
    if isinstance(channels, int) and not isinstance(channels, bool) and channels != len(info.classes):
        names = ", ".join(c.name for c in info.classes[:8])
        raise ParameterError(
            f"SegmentationModel: info names {len(info.classes)} class(es) ({names}) but the "
            f"network scores {channels} (num_classes in its config); expected one class per "
            f"output channel. Give a ModelInfo with {channels} classes, or the network they "
            "belong to.")


def inference_dtype(capability: tuple[int, int]) -> torch.dtype:
    """The autocast type of a network on a CUDA device of compute ``capability``: bf16 from
    Ampere (8.0) on, float16 before it (V100, T4), where cuDNN has no bf16 convolutions and
    torch falls back to its own, many times slower, kernels (bf16 is emulated there, so
    ``torch.cuda.is_bf16_supported`` says yes). Both keep softmax in float32."""
    return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16


def _check_finite(net: nn.Module) -> None:
    """Refuse a network with NaN or infinite weights (:func:`non_finite_said`, as load_model
    refuses them in a file): it would give class 0 on every pixel."""
    said = non_finite_said(net.state_dict())
    if said:
        raise ParameterError(
            f"SegmentationModel: net: its {said}; training diverged (expected finite weights). "
            "Use the network from a checkpoint before the divergence.")


def _check_bands(net: nn.Module, info: ModelInfo) -> None:
    """Refuse metadata naming another number of bands than the network takes (its config's
    ``in_channels``, else its first convolution's): segment() would feed it those bands, and
    torch would refuse every task."""
    channels = info.config.get("in_channels")
    if not isinstance(channels, int) or isinstance(channels, bool):
        first = next((m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        channels = None if first is None else first.in_channels
    if channels is not None and channels != len(info.bands):
        raise ParameterError(
            f"SegmentationModel: info names {len(info.bands)} band(s) ({', '.join(info.bands[:8])})"
            f" but the network takes {channels} input channel(s); expected one band per channel "
            f"(with its mean and std). Give a ModelInfo with {channels} bands, or the network "
            "they belong to.")


class SegmentationModel(Segmenter):
    """A network in eval mode with its :class:`ModelInfo`.

    Runs on ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``; default ``GEOSEG_DEVICE``:
    CUDA when available, else CPU); on CUDA under
    bf16 autocast with channels-last memory. :meth:`predict_tensor` returns softmax
    probabilities in float32 on the device; :meth:`predict` is its host (numpy) form.
    """

    def __init__(self, net: nn.Module, info: ModelInfo, *, source: ModelRef | None = None,
                 device: str | None = None):
        _check_types(net, info)
        _check_classes(net, info)
        _check_bands(net, info)
        _check_finite(net)
        self.net = net.eval()
        self.info = info
        self.name = info.name
        self.classes = info.classes
        self.bands = info.bands
        self.source = source
        self._token = uuid.uuid4().hex[:12]  # names this very model in an in-memory reference
        self._hashed: tuple[str, tuple[Any, ...]] | None = None  # (hash, weights' versions) at ref()
        ndim = getattr(net, "spatial_dims", 2)
        self.stride = coerce_per_axis(net.stride, ndim, "stride")
        self.halo = coerce_per_axis(net.receptive_radius, ndim, "receptive_radius")
        self.global_context = bool(getattr(net, "global_context", False))
        self.device = torch.device(config.resolve_device(device))
        # a device asked for (not GEOSEG_DEVICE's default) travels with the model's reference
        self._placed = None if device is None or device == "auto" else str(self.device)
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
        pixels are fed to the network as zeros. A finite value that normalises to no float32
        number (a float64 1e300) is no data too: the network would score it NaN, which its
        class id would not show (the arg-max of NaNs is class 0)."""
        valid = valid_mask_tensor(raw, nodata)
        mean, std = self._mean_t.to(raw.device), self._std_t.to(raw.device)
        x = (raw.to(torch.float32) - mean) / std
        if raw.dtype == torch.float64:  # the one input type whose finite values overflow here
            valid &= torch.isfinite(x).all(dim=0)
        return x.masked_fill_(~valid, 0.0), valid

    def predict_image(self, image: np.ndarray, nodata: float | None = None) -> np.ndarray:
        """Scores ``(classes, *spatial)`` for a whole in-memory image ``(bands, *spatial)``, its
        layout and band count checked first (:meth:`check_image`), and the weights (a network
        that diverged since it was built scores NaN everywhere); a nested list is read as an
        array."""
        image = image_array(image)
        self.check_image(image)
        _check_finite(self.net)
        return super().predict_image(image, nodata)

    def check_image(self, image: Any) -> None:
        """Refuse an image that is not ``(bands, y, x)`` (``(bands, z, y, x)`` for a volume
        model), bands last, with a band count other than the model's (as :meth:`check_bands`), or
        with pixels no network computes on (complex, whose imaginary part torch would drop
        silently; text, dates), as :func:`geoseg.segment` refuses them."""
        ndim = len(self.stride)
        layout = "(bands, z, y, x)" if ndim == 3 else "(bands, y, x)"
        shape = tuple(getattr(image, "shape", ()))
        if len(shape) != ndim + 1:
            one = " For a one-band image add the band axis: image[None]." if len(shape) == ndim else ""
            raise ParameterError(
                f"predict_image(): received an image of shape {shape} ({len(shape)} axes); "
                f"expected {ndim + 1} axes, {layout}, bands first.{one}")
        n = len(self.bands) if self.bands is not None else None
        if n is not None and shape[0] != n and shape[-1] == n:
            raise ParameterError(
                f"predict_image(): received an image of shape {shape}, which looks bands-last; "
                f"expected {layout} with the {n} bands first. Move the band axis first: "
                "np.moveaxis(image, -1, 0).")
        self.check_bands([f"band_{i + 1}" for i in range(shape[0])], f"the image of shape {shape}")
        dtype = getattr(image, "dtype", None)
        if isinstance(dtype, np.dtype):
            check_pixel_dtype(dtype, "predict_image(): image", "the image")

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
            capability = torch.cuda.get_device_capability(self.device)
            return torch.autocast("cuda", dtype=inference_dtype(capability))
        return contextlib.nullcontext()

    def ref(self) -> ModelRef:
        """The reference tasks carry, holding this model for tasks computed in this process.

        The model file's while the weights are still the file's; otherwise (built in memory,
        or its weights changed in place since it was read) an ``in-memory:`` reference naming
        this very model, with the weights' hash as they are now: it resolves in this process
        only (in-process schedulers). The weights are hashed at every call (once per
        :func:`geoseg.segment`), so that no changed network is taken for the one a file,
        another model of the same weights or an earlier graph stands for; weights changed
        after this call are not taken for them either (:meth:`holds_weights`)."""
        _check_finite(self.net)
        sha = weights_sha256(self.net.state_dict())
        self._hashed = (sha, self._weights_version())
        source = self.source
        if source is not None and not source.url.startswith(IN_MEMORY) and source.sha256 == sha:
            ref = dataclasses.replace(source, device=self._placed, held=self)
            LOADED[(ref.url, ref.sha256, str(self.device))] = self  # this process needs no copy
            return ref
        url = f"{IN_MEMORY}{self.name}#{self._token}"
        BUILT_IN_MEMORY[url] = self
        return ModelRef(url, sha, held=self)

    def holds_weights(self, sha256: str) -> bool:
        """True while the network's weights are the ones :meth:`ref` last hashed as ``sha256``.
        Unchanged tensors (none replaced, moved, cast, nor changed in place through torch's
        version counters: an optimiser step, ``load_state_dict``, ``mul_``) are taken as they
        are; otherwise the weights are hashed again. Tasks of a graph built before a change then
        load the file's weights, as workers of other processes do, or are refused where there is
        no file. (An in-place change through ``.data`` moves no counter: hashing every task
        would cost more than the network.)"""
        if self._hashed is None or self._hashed[0] != sha256:
            return False
        version = self._weights_version()
        if self._hashed[1] == version:
            return True
        if weights_sha256(self.net.state_dict()) != sha256:
            return False
        self._hashed = (sha256, version)  # the same weights, written again
        return True

    def _weights_version(self) -> tuple[Any, ...]:
        """Which tensors the network holds, where their data lies, in what type, and torch's
        count of in-place changes to each."""
        state = self.net.state_dict(keep_vars=True)
        return tuple((name, id(t), t.data_ptr(), t.dtype, t._version) for name, t in state.items())

    def __repr__(self) -> str:
        return (f"SegmentationModel(name={self.name!r}, architecture={self.info.architecture!r}, "
                f"bands={len(self.bands)}, classes={self.n_classes}, sha256={self.info.sha256[:12]})")
