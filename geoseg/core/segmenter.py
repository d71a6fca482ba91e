"""What every segmenter offers the tiled executor, and the whole-image reference.

The contract, in tensors on the segmenter's :attr:`~Segmenter.device`:

* :meth:`~Segmenter.prepare_tensor` turns a raw window ``(bands, *spatial)`` in its stored
  dtype into the network input and a validity mask;
* :meth:`~Segmenter.predict_tensor` turns a batch of equally shaped windows
  ``(N, bands, *spatial)`` into per-class scores ``(N, classes, *spatial)``, left on the device;
* :meth:`~Segmenter.predict_tensor_at` does the same for windows the executor cut from a
  larger image, told where each lies. Most segmenters answer the same wherever a window lies
  and keep the default; Canny distrusts edges near a window side inside the image, and
  wrappers (ensembles, TTA, clean-up, slice by slice) pass the positions on to their members.

The executor copies a region's raw pixels to :attr:`~Segmenter.device` once, cuts, blends and
takes the arg-max there, and brings back only class ids. Segmenters that compute in torch
(deep models, ensembles, TTA) override the tensor methods; host methods written in numpy
(thresholds, k-means, edges) implement :meth:`~Segmenter.prepare` and
:meth:`~Segmenter.predict` and run on the CPU, where the default tensor methods wrap them
without copying. ``global_context`` says the segmenter pools over its whole input, so cropped
tiles cannot equal whole-image inference and windows are blended instead.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.core.classes import ClassInfo
from geoseg.core.nodata import exact_number
from geoseg.core.pixels import check_pixel_dtype
from geoseg.core.text import brief
from geoseg.errors import BandMismatchError, ParameterError, PlanError

if TYPE_CHECKING:
    import torch


class Segmenter(ABC):
    """Base class of everything that can segment a window.

    Subclasses set ``classes``, ``bands`` (expected band names, or ``None`` for
    any), ``stride`` and ``halo`` (per spatial axis), ``device`` and ``global_context``,
    and implement :meth:`predict` (numpy) or override :meth:`predict_tensor` (torch).
    """

    name: str = "segmenter"
    classes: tuple[ClassInfo, ...]
    bands: tuple[str, ...] | None = None
    stride: tuple[int, ...] = (1, 1)
    halo: tuple[int, ...] = (0, 0)
    global_context: bool = False
    _device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        """Where the tensor methods compute: the CPU unless the segmenter was placed elsewhere."""
        if self._device is None:
            import torch

            return torch.device("cpu")
        return self._device

    @device.setter
    def device(self, value: torch.device) -> None:
        self._device = value

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Scores ``(N, classes, *spatial)`` for prepared inputs ``(N, bands, *spatial)``."""

    def predict_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, classes, *spatial)`` on :attr:`device` for a prepared batch there.

        The default runs :meth:`predict` on the host (a CPU tensor shares its memory with numpy)."""
        import torch

        scores = self.predict(batch.numpy(force=True))
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).to(batch.device)

    def predict_tensor_at(self, batch: torch.Tensor, windows: Sequence[tuple[slice, ...]],
                          shape: Sequence[int]) -> torch.Tensor:
        """:meth:`predict_tensor` for windows cut from an image of spatial ``shape``:
        ``windows[i]`` is where ``batch[i]`` lies in it. The default ignores where."""
        return self.predict_tensor(batch)

    def prepare_tensor(self, raw: torch.Tensor, nodata: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw pixels ``(bands, *spatial)`` on :attr:`device` to network input and validity mask
        (as :meth:`prepare`); the default runs :meth:`prepare` on the host."""
        import torch

        x, valid = self.prepare(raw.numpy(force=True), nodata)
        return torch.from_numpy(x).to(raw.device), torch.from_numpy(valid).to(raw.device)

    def prepare(self, raw: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw pixels ``(bands, *spatial)`` to network input and a validity mask.

        A pixel is invalid when every band equals ``nodata`` or any band is NaN or infinite;
        invalid pixels are fed to the network as zeros.
        """
        x = raw.astype(np.float32, copy=True)
        valid = valid_mask(raw, nodata)
        x[:, ~valid] = 0.0
        return x, valid

    def defined(self, raw: np.ndarray) -> np.ndarray | None:
        """Where this segmenter's output is defined for raw pixels ``(bands, *spatial)``, beyond
        no data (a normalized difference is not where its bands sum to 0); ``None``: wherever
        there is data. An ensemble writes no data where a member's is undefined."""
        return None

    def compile(self) -> Segmenter:
        """Compile what can be compiled (a deep model's network, with ``torch.compile``); a
        no-op for host methods. Returns the segmenter."""
        return self

    def ref(self) -> Any:
        """A small picklable handle that :func:`geoseg.models.resolve` turns back into this."""
        return self

    def predict_image(self, image: np.ndarray, nodata: float | None = None) -> np.ndarray:
        """Scores for a whole in-memory image at once: the reference tiling must match. Pixels
        that are no-data (every band ``nodata``, or not finite) score NaN, as in
        :func:`geoseg.segment`'s probabilities. ``image`` may be any array-like (a nested list
        is read with ``np.asarray``); ``nodata`` is a number or ``None``."""
        image = image_array(image)
        x, valid = self.prepare(image, image_nodata(nodata))
        padded = pad_end(x, tuple(n + -n % s for n, s in zip(x.shape[1:], self.stride)))
        scores = self.predict(padded[None])[0]
        scores = scores[(slice(None),) + tuple(slice(0, n) for n in x.shape[1:])]
        if np.all(valid):
            return scores
        scores = scores.astype(np.result_type(scores.dtype, np.float32))
        scores[:, ~np.asarray(valid, bool)] = np.nan
        return scores

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def spatial_axes(self) -> int | None:
        """How many spatial axes it segments: 2 for images (y, x), 3 for volumes (z, y, x),
        ``None`` for any. By default as many as :attr:`halo` lists, or any for a pointwise
        segmenter (no halo, stride 1, as a threshold); a method whose filters work on any number
        of axes (a local threshold, a Sobel magnitude) says ``None``."""
        pointwise = not any(self.halo) and all(s == 1 for s in self.stride)
        return None if pointwise else len(tuple(self.halo))

    def check_bands(self, band_names: Sequence[str], where: str) -> None:
        """Fail before any compute when ``where`` has a band count this segmenter cannot use."""
        if self.bands is None or len(self.bands) == len(band_names):
            return
        raise BandMismatchError(
            f"{self.name} expects {len(self.bands)} band(s) ({', '.join(self.bands)}) but {where} has "
            f"{len(band_names)} ({', '.join(band_names)}). {_band_advice(self.bands, band_names)}"
        )


SPATIAL_KINDS = {2: "images (y, x)", 3: "volumes (z, y, x)"}


def image_array(image: Any) -> np.ndarray:
    """``image`` as a numpy array (a nested list, a tuple, a torch CPU tensor), refused when its
    pixels are not numbers (:func:`~geoseg.io.readers.check_pixel_dtype`)."""
    array = np.asarray(image)
    check_pixel_dtype(array.dtype, "predict_image(): image", "the image")
    return array


def image_nodata(nodata: Any) -> float | None:
    """``predict_image``'s ``nodata`` as a number (:func:`~geoseg.core.nodata.exact_number`),
    refused, as :func:`geoseg.segment` refuses a raster's ``attrs['nodata']``, when it is not
    one number."""
    if nodata is None:
        return None
    number = np.asarray(nodata)
    if number.shape == () and number.dtype.kind in "iuf":
        return exact_number(number.item())
    raise ParameterError(
        f"predict_image(): nodata: received {brief(nodata)} ({type(nodata).__name__}); expected "
        "a number, the value of the pixels with no data (e.g. nodata=0), or None if the image "
        "has none.")


def check_dimensions(segmenter: Segmenter, spatial_dims: Sequence[str], where: str,
                     key: str = "model") -> None:
    """Fail before any compute when ``segmenter`` segments another number of spatial axes
    (:attr:`~Segmenter.spatial_axes`) than ``where`` has (``spatial_dims``): a 2D network or
    method on a volume would fail in the first task. ``key`` names the setting in the message
    (``"model"`` in a job spec)."""
    axes = segmenter.spatial_axes
    if axes is None or axes == len(spatial_dims):
        return
    advice = ("Wrap it with geoseg.models.SliceWise to segment the volume slice by slice (Python "
              "API), or give a 3D model." if axes == 2 else "Give a 2D model for an image.")
    raise PlanError(
        f"{key}: {segmenter.name} segments {_spatial_kind(axes)}, but {where} has spatial axes "
        f"{tuple(spatial_dims)}; expected a model for {_spatial_kind(len(spatial_dims))}. {advice}")


def _spatial_kind(axes: int) -> str:
    return SPATIAL_KINDS.get(axes, f"{axes} spatial axes")


def _band_advice(wanted: Sequence[str], have: Sequence[str]) -> str:
    """What to do about a band count mismatch, fitted to the input: pick bands when it has more
    (by name where the names match), else another model or input."""
    if len(have) < len(wanted):
        return (f"The input has too few bands for this model: use a model trained on "
                f"{len(have)} band(s), or an input holding {', '.join(wanted)}.")
    lower = [name.lower() for name in have]
    picks = [lower.index(name.lower()) + 1 for name in wanted if name.lower() in lower]
    if len(picks) != len(wanted):
        picks = list(range(1, len(wanted) + 1))
    return ("Select the bands to use, 1-based and in the model's order, e.g. "
            f"bands: {picks} (input.bands in a job spec).")


def band_order(wanted: Sequence[str] | None, have: Sequence[str]) -> list[int] | None:
    """When the bands named ``have`` are the segmenter's ``wanted`` bands in another order or
    with some repeated (names compared without case): the positions (0-based, in ``have``) that
    give ``wanted``'s order, ``[]`` when some are repeated and no order gives it; else
    ``None`` (the right order, or names that say nothing, as ``band_1``)."""
    if wanted is None or len(wanted) != len(have):
        return None
    want, got = [n.lower() for n in wanted], [n.lower() for n in have]
    if got == want or not set(got) <= set(want):
        return None
    return [got.index(n) for n in want] if sorted(got) == sorted(want) else []


def band_order_said(model: str, wanted: Sequence[str], names: Sequence[str]) -> str:
    """What a warning about bands named as the model's but in another order says first
    (:func:`band_order`); the caller adds how to select them, in its own terms."""
    return (f"bands reach {model} as {', '.join(names)}, but it expects {', '.join(wanted)} in "
            "that order, so it would read each band as another.")


def bands_last(shape: Sequence[int]) -> bool:
    """Whether a 3-axis array read as ``(band, y, x)`` looks like ``(y, x, band)``: an image
    with its bands last (RGB, RGBA), which would read as hundreds of bands of a raster at most 4
    pixels wide."""
    return len(shape) == 3 and shape[2] <= 4 and min(shape[0], shape[1]) > 16


def valid_mask(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where a pixel holds data: not every band equal to ``nodata``, every band finite.

    An infinite value is no measurement either, and unlike a NaN it survives normalisation as
    a huge number that a network spreads over its whole receptive field."""
    valid = np.ones(raw.shape[1:], dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~np.all(raw == nodata, axis=0)
    if np.issubdtype(raw.dtype, np.floating):
        valid &= np.all(np.isfinite(raw), axis=0)
    return valid


def pad_end(x: np.ndarray, spatial_shape: Sequence[int]) -> np.ndarray:
    """Reflect-pad the spatial axes of ``x`` (``(bands, *spatial)``) at their end."""
    pad = [(0, 0)] + [(0, int(t) - n) for n, t in zip(x.shape[1:], spatial_shape)]
    if not any(after for _, after in pad):
        return x
    return np.pad(x, pad, mode="reflect")


_F32 = np.finfo(np.float32)


def normalization_fits(mean: Sequence[float], std: Sequence[float]) -> bool:
    """Whether per-band ``mean`` and ``std`` normalise in float32, as networks compute: each
    finite there, each std at least float32's smallest normal number. A NaN, an infinity, a
    std of 0 (or 1e-320, which becomes 0), a mean or std past 3.4e38 (which become infinite)
    turn every input into one value, or NaN, and the network gives one class everywhere."""
    return (all(math.isfinite(v) and abs(v) <= _F32.max for v in (*mean, *std))
            and all(s >= _F32.tiny for s in std))
