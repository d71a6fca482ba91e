"""Test-time augmentation: a segmenter averaged over flips (and rotations) of its input.

For 2D tiles ``(N, C, y, x)`` the ``"d4"`` transforms are the 8 symmetries of
the square (4 rotations, each with and without a flip of x); windows may be
non-square (a quarter turn swaps y and x, so the stride and halo of the wrapper
are the same on both axes). For 3D tiles ``(N, C, z, y, x)`` the transforms are
the 8 combinations of z, y and x flips. Each output is mapped back (the inverse
transform) before averaging.

The transforms apply to the network's input as geoseg pads it, reflected at the image's far
end up to a multiple of the stride: on an image whose size is not such a multiple, a flipped
copy has its padding at its start, and differs from a copy of the image flipped first and
padded after (as a network that is not shift-invariant sees them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geoseg.core.segmenter import Segmenter
from geoseg.ensembles.ensemble import as_segmenter
from geoseg.errors import EnsembleError

TRANSFORMS = ("d4", "flips", "identity")
# unsigned integer types that torch turns (and flips, uint64) on no build, each with the signed
# type of its size: a transform moves elements, exactly whatever their bits mean
_SIGNED = {getattr(torch, f"uint{bits}"): getattr(torch, f"int{bits}")
           for bits in (16, 32, 64) if hasattr(torch, f"uint{bits}")}


@dataclass(frozen=True)
class Transform:
    """Flip the listed axes (of the spatial axes, 0-based), then turn ``k`` quarter turns in (y, x)."""

    flips: tuple[int, ...] = ()
    k: int = 0

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """The transformed batch ``(N, C, *spatial)``, on its device, in its dtype (a threshold's
        uint64 band too, moved as the int64 of the same bits)."""
        return _moved(batch, self._apply)

    def _apply(self, batch: torch.Tensor) -> torch.Tensor:
        out = batch
        if self.flips:
            out = torch.flip(out, dims=tuple(2 + a for a in self.flips))
        if self.k:
            out = torch.rot90(out, self.k, dims=(-2, -1))
        return out.contiguous()

    def place(self, windows: Sequence[tuple[slice, ...]], shape: Sequence[int]
              ) -> tuple[list[tuple[slice, ...]], tuple[int, ...]]:
        """Where ``windows`` of an image of spatial ``shape`` lie once the image is transformed,
        and the transformed image's shape: ``apply(image)[placed]`` is ``apply(image[window])``."""
        placed = []
        for window in windows:
            spans, sizes = [(w.start, w.stop) for w in window], list(shape)
            for a in self.flips:
                spans[a] = (sizes[a] - spans[a][1], sizes[a] - spans[a][0])
            for _ in range(self.k % 4):  # a quarter turn of (y, x): new y runs along old x, reversed
                (y0, y1), (x0, x1) = spans[-2:]
                spans[-2:] = [(sizes[-1] - x1, sizes[-1] - x0), (y0, y1)]
                sizes[-2:] = sizes[-1], sizes[-2]
            placed.append(tuple(slice(a, b) for a, b in spans))
        return placed, self.shape(shape)

    def shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape of a transformed image of ``shape``."""
        sizes = tuple(shape)
        return (*sizes[:-2], sizes[-1], sizes[-2]) if self.k % 2 else sizes

    def undo(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores of a transformed batch mapped back to the batch's own orientation."""
        return _moved(scores, self._undo)

    def _undo(self, scores: torch.Tensor) -> torch.Tensor:
        out = scores
        if self.k:
            out = torch.rot90(out, -self.k, dims=(-2, -1))
        if self.flips:
            out = torch.flip(out, dims=tuple(2 + a for a in self.flips))
        return out


def _moved(tensor: torch.Tensor, move: Any) -> torch.Tensor:
    """``move(tensor)`` for a transform that only moves elements; an unsigned integer tensor is
    moved as the signed one of the same bits (:data:`_SIGNED`), which torch can turn."""
    signed = _SIGNED.get(tensor.dtype)
    if signed is None:
        return move(tensor)
    return move(tensor.view(signed)).view(tensor.dtype)


def transform_set(name: str, ndim: int) -> tuple[Transform, ...]:
    """The transforms of ``name`` (``"d4"``, ``"flips"``, ``"identity"``) for ``ndim`` spatial axes.

    ``"d4"`` in 2D: the 8 rotations/flips of the square; in 3D (no rotations, the
    voxels need not be cubes): the 8 axis-flip combinations, as ``"flips"``.
    """
    if name not in TRANSFORMS:
        raise EnsembleError(f"transforms={name!r}; expected one of {TRANSFORMS}.")
    if name == "identity":
        return (Transform(),)
    if name == "d4" and ndim == 2:
        return tuple(Transform((1,) if flip else (), k) for k in range(4) for flip in (False, True))
    axes = range(ndim)
    return tuple(Transform(tuple(a for a, f in zip(axes, fs) if f))
                 for fs in itertools.product((False, True), repeat=ndim))


class TTA(Segmenter):
    """Average of ``member``'s scores over transformed copies of each tile.

    Parameters
    ----------
    member
        Any segmenter, a model file reference (a path, URL or ``builtin:NAME``), or a reference
        :func:`geoseg.models.resolve` accepts.
    transforms
        ``"d4"`` (default; 8 flips/rotations in 2D, 8 axis flips in 3D),
        ``"flips"`` (axis flips only) or ``"identity"``.

    :attr:`transforms` are those for the member's spatial axes. A member that segments any
    number of axes (a threshold, a local threshold: ``spatial_axes`` ``None``) segments
    images and volumes under TTA too, each tile with the transforms of its own number of axes
    (:func:`transform_set`; on a volume ``"d4"`` is the 8 z, y, x flips).
    """

    def __init__(self, member: Any, transforms: str = "d4"):
        self.member: Segmenter = as_segmenter(member, "TTA(member)")
        self.transforms_name = transforms
        ndim = len(tuple(self.member.stride))
        self.transforms = transform_set(transforms, ndim)
        self.name = f"{self.member.name} (TTA {transforms})"
        self.classes = self.member.classes
        self.bands = self.member.bands
        self.global_context = self.member.global_context
        self.device = self.member.device
        stride, halo = tuple(self.member.stride), tuple(self.member.halo)
        if any(t.k for t in self.transforms):
            stride = stride[:-2] + (math.lcm(*stride[-2:]),) * 2
            halo = halo[:-2] + (max(halo[-2:]),) * 2
        self.stride, self.halo = stride, halo

    @property
    def spatial_axes(self) -> int | None:
        """The member's: a member that segments any number of axes does so under TTA too."""
        return self.member.spatial_axes

    def transforms_for(self, ndim: int) -> tuple[Transform, ...]:
        """The transforms of a tile of ``ndim`` spatial axes: :attr:`transforms`, or for a member
        that segments any number of axes those of :func:`transform_set` for ``ndim``."""
        if self.member.spatial_axes is None:
            return transform_set(self.transforms_name, ndim)
        return self.transforms

    def check_bands(self, band_names: Sequence[str], where: str) -> None:
        """The member's check (an ensemble's checks each of its members)."""
        self.member.check_bands(band_names, where)

    def prepare(self, raw: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.member.prepare(raw, nodata)

    def defined(self, raw: np.ndarray) -> np.ndarray | None:
        return self.member.defined(raw)  # pixel by pixel: the same under flips and turns

    def prepare_tensor(self, raw: torch.Tensor, nodata: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.member.prepare_tensor(raw, nodata)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_tensor(torch.from_numpy(np.ascontiguousarray(batch))).numpy(force=True)

    def predict_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """The mean of the member's scores over the transforms, summed in float64 on the device."""
        return self._mean(batch)

    def predict_tensor_at(self, batch: torch.Tensor, windows: Sequence[tuple[slice, ...]],
                          shape: Sequence[int]) -> torch.Tensor:
        """:meth:`predict_tensor` for windows of an image of ``shape``: the member is told where
        each transformed window lies in the image transformed alike."""
        return self._mean(batch, (windows, shape))

    def _mean(self, batch: torch.Tensor,
              where: tuple[Sequence[tuple[slice, ...]], Sequence[int]] | None = None) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64, device=batch.device)
        transforms = self.transforms_for(batch.ndim - 2)
        for t in transforms:
            x = t.apply(batch)
            if where is None:
                scores = self.member.predict_tensor(x)
            else:
                scores = self.member.predict_tensor_at(x, *t.place(*where))
            total = total + t.undo(scores.to(batch.device, torch.float64))
        return (total / len(transforms)).float()

    def compile(self) -> TTA:
        self.member.compile()
        return self

    def ref(self) -> TTARef:
        return TTARef(self.member.ref(), self.transforms_name)


@dataclass(frozen=True)
class TTARef:
    """What tasks carry for a :class:`TTA`: the member's reference and the transform set."""

    member: Any
    transforms: str

    def resolve(self) -> TTA:
        return TTA(self.member, self.transforms)
