"""Morphological clean-up of one class of a class map, with exact halos.

The steps, in this order, each optional: opening (disk of radius ``opening``),
closing (disk of radius ``closing``), removing objects of at most
``max_object_size`` pixels, filling holes of at most ``max_hole_size`` pixels
(scikit-image's ``opening``, ``closing`` with their default ``reflect`` border,
``remove_small_objects`` and ``remove_small_holes``, on a boolean mask).

Halo, per side: ``2 * opening + 2 * closing + max_object_size + max_hole_size``.
An opening or closing reaches twice its radius. For the size filters: a
component of at most ``m`` pixels lies within ``m - 1`` pixels of any of its
pixels, so a window reaching ``m`` pixels past the core sees it whole; and a
larger component seen through such a window still shows at least ``m + 1``
pixels connected to the core pixel, so it is kept. Hence tiled results equal the
whole image's.

Use :class:`Cleaned` to wrap any segmenter (its halo is added), or
:func:`clean_mask` on a class map that is already computed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from skimage import morphology

from geoseg import budgets
from geoseg.core.classes import ClassInfo
from geoseg.core.segmenter import Segmenter
from geoseg.core.text import as_whole
from geoseg.errors import MethodParameterError
from geoseg.methods.features import PixelMethod, class_infos, one_hot
from geoseg.methods.params import check_value
from geoseg.models.cache import resolve


@dataclass(frozen=True)
class Cleanup:
    """The clean-up steps (see the module docstring); ``connectivity`` 1 or 2 (4/8 neighbours)."""

    opening: int = 0
    closing: int = 0
    max_object_size: int = 0
    max_hole_size: int = 0
    connectivity: int = 1

    def __post_init__(self) -> None:
        """Each size a whole number >= 0 of pixels (kept as ``int``), ``connectivity`` 1 or 2,
        and the opening's and closing's disks within ``GEOSEG_MAX_KERNEL``."""
        for name in ("opening", "closing", "max_object_size", "max_hole_size", "connectivity"):
            check_value(name, getattr(self, name), f"Cleanup {name}")
            object.__setattr__(self, name, as_whole(getattr(self, name)))
        for name in ("opening", "closing"):
            budgets.check_kernel(getattr(self, name), f"{name}={getattr(self, name)}",
                                 "clean-up (a disk of that radius)")

    @property
    def halo(self) -> int:
        return 2 * self.opening + 2 * self.closing + self.max_object_size + self.max_hole_size

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """The cleaned boolean ``mask`` (2-D)."""
        out = mask.astype(bool, copy=True)
        if self.opening:
            out = morphology.opening(out, morphology.disk(self.opening))
        if self.closing:
            out = morphology.closing(out, morphology.disk(self.closing))
        if self.max_object_size:
            out = morphology.remove_small_objects(
                out, max_size=self.max_object_size, connectivity=self.connectivity
            )
        if self.max_hole_size:
            out = morphology.remove_small_holes(
                out, max_size=self.max_hole_size, connectivity=self.connectivity
            )
        return out


def clean(mask: np.ndarray, **steps: Any) -> np.ndarray:
    """Clean an in-memory boolean mask: ``clean(mask, opening=2, max_object_size=30)``."""
    return Cleanup(**steps).apply(mask)


@dataclass(frozen=True)
class Cleaned(Segmenter):
    """Another segmenter's class map, with class ``target`` cleaned up.

    With a two-class inner segmenter the classes are the inner ones (the other
    class fills what the clean-up removes); otherwise the classes are ``other``
    and the target class. Scores are one-hot. The inner segmenter may be a deep
    model: it travels as its reference and is resolved on the worker. With a
    model stride above 1 the clean-up, like the model, sees the image
    reflect-padded at its end to a multiple of the stride (the whole-image
    reference, :meth:`predict_image`, does the same).

    Parameters
    ----------
    inner
        Any segmenter (or a model reference).
    target
        The class cleaned (default 1, ``foreground`` of a threshold).
    steps
        A :class:`Cleanup`.
    """

    inner: Any
    target: int = 1
    steps: Cleanup = Cleanup()

    def __post_init__(self) -> None:
        n = self.segmenter.n_classes
        if not 0 <= self.target < n:
            raise MethodParameterError(
                f"target={self.target} is not a class of {self.segmenter.name}, which has "
                f"classes 0..{n - 1}."
            )
        if self.steps.halo and self.segmenter.global_context:
            raise MethodParameterError(
                f"inner: received {self.segmenter.name}, which pools over its whole input "
                "(global context): its windows are blended, never cropped, so the clean-up "
                "steps would not see their halo around each window and would cut objects at the "
                "window seams; expected a segmenter without global context. Segment with the "
                "model, then clean its class map: "
                "geoseg.parallel.cleanup.clean_mask(classes, target, **steps).")
        axes = self.segmenter.spatial_axes
        if self.steps.halo and axes not in (None, 2):
            raise MethodParameterError(
                f"inner: received {self.segmenter.name}, which segments {axes} spatial axes, but "
                f"the clean-up steps work on images (y, x); expected a 2D segmenter. For a "
                f"volume, clean slice by slice: SliceWise(Cleaned(model_2d, ...))."
            )

    @property
    def segmenter(self) -> Segmenter:
        return resolve(self.inner)

    @property
    def name(self) -> str:
        return f"{self.segmenter.name} + clean-up"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        inner = self.segmenter.classes
        if len(inner) == 2:
            return inner
        return (ClassInfo("other", (0, 0, 0)), inner[self.target])

    @property
    def bands(self) -> tuple[str, ...] | None:
        return self.segmenter.bands

    @property
    def stride(self) -> tuple[int, ...]:
        return self.segmenter.stride

    @property
    def halo(self) -> tuple[int, ...]:
        return tuple(h + self.steps.halo for h in self.segmenter.halo)

    @property
    def spatial_axes(self) -> int | None:
        """2 when there are clean-up steps (they work on images (y, x)), else the inner's."""
        return 2 if self.steps.halo else self.segmenter.spatial_axes

    @property
    def device(self) -> torch.device:
        """The inner segmenter's: a region of a network on a GPU is prepared and tiled there,
        and takes the GPU's turn (a wrapper said the CPU, so a GPU worker's threads ran it
        all at once)."""
        return self.segmenter.device

    @property
    def global_context(self) -> bool:
        """The inner segmenter's: one that pools over its whole input is blended, never
        cropped, wrapped or not."""
        return self.segmenter.global_context

    def compile(self) -> Cleaned:
        self.segmenter.compile()
        return self

    def prepare(
        self, raw: np.ndarray, nodata: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.segmenter.prepare(raw, nodata)

    def prepare_tensor(self, raw: torch.Tensor, nodata: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.segmenter.prepare_tensor(raw, nodata)

    def ref(self) -> Any:
        """This wrapper with the inner segmenter replaced by its own (small) reference."""
        inner_ref = self.segmenter.ref()
        if inner_ref is self.inner:
            return self
        clone = copy.copy(self)
        object.__setattr__(clone, "inner", inner_ref)  # no re-validation: that would load the model
        return clone

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._cleaned(self.segmenter.predict(batch))

    def predict_tensor_at(self, batch: torch.Tensor, windows: Sequence[tuple[slice, ...]],
                          shape: Sequence[int]) -> torch.Tensor:
        """The inner segmenter is told where the windows lie (a Canny inside keeps its
        window-side rule); the clean-up runs on its class map as in :meth:`predict`."""
        scores = self.segmenter.predict_tensor_at(batch, windows, shape).numpy(force=True)
        return torch.from_numpy(self._cleaned(scores).astype(np.float32)).to(batch.device)

    def _cleaned(self, scores: np.ndarray) -> np.ndarray:
        ids = np.argmax(scores, axis=1)
        cleaned = np.stack([self.steps.apply(m) for m in ids == self.target])
        if len(self.segmenter.classes) == 2:
            return one_hot(np.where(cleaned, self.target, 1 - self.target), 2)
        return one_hot(cleaned.astype(np.int64), 2)


@dataclass(frozen=True)
class MaskCleanup(PixelMethod):
    """Cleans class ``target`` of a one-band class map (what :func:`clean_mask` runs per chunk)."""

    target: int = 1
    steps: Cleanup = Cleanup()

    @property
    def name(self) -> str:
        return "mask clean-up"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        return class_infos(("other", "target"))

    @property
    def halo(self) -> tuple[int, int]:
        return (self.steps.halo, self.steps.halo)

    @property
    def spatial_axes(self) -> int | None:
        """2 when there are clean-up steps (they work on images (y, x)), else any."""
        return 2 if self.steps.halo else None

    def prepare(
        self, raw: np.ndarray, nodata: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        x, valid = super().prepare(raw, nodata)
        x[:, ~valid] = -1.0  # never the target, whatever its id
        return x, valid

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return one_hot(
            np.stack([self.steps.apply(m) for m in batch[:, 0] == self.target]).astype(np.int64), 2
        )
