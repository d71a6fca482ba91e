"""A 2D segmenter run slice by slice over a ``(band, z, y, x)`` volume."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geoseg.core.segmenter import Segmenter


class SliceWise(Segmenter):
    """Wrap a 2D segmenter so the tiled executor can feed it volumes.

    Each z slice is segmented independently: the stride and halo along z are 1
    and 0, in-plane they are the 2D segmenter's.
    """

    def __init__(self, inner: Segmenter):
        self.inner = inner
        self.name = f"{inner.name} (slice by slice)"
        self.classes = inner.classes
        self.bands = inner.bands
        self.stride = (1, *inner.stride)
        self.halo = (0, *inner.halo)
        self.device = inner.device
        self.global_context = inner.global_context

    @property
    def spatial_axes(self) -> int:
        """3: it takes volumes (z, y, x) apart into slices; an image has none to take apart."""
        return 3

    def prepare(self, raw: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        slices = [self.inner.prepare(raw[:, z], nodata) for z in range(raw.shape[1])]
        return np.stack([x for x, _ in slices], axis=1), np.stack([v for _, v in slices])

    def prepare_tensor(self, raw: torch.Tensor, nodata: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        slices = [self.inner.prepare_tensor(raw[:, z], nodata) for z in range(raw.shape[1])]
        return torch.stack([x for x, _ in slices], dim=1), torch.stack([v for _, v in slices])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_tensor(torch.from_numpy(np.ascontiguousarray(batch))).numpy(force=True)

    def predict_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        return self._per_slice(batch, self.inner.predict_tensor)

    def predict_tensor_at(self, batch: torch.Tensor, windows: Sequence[tuple[slice, ...]],
                          shape: Sequence[int]) -> torch.Tensor:
        """Each slice's window is its volume window's in-plane part, in a plane of ``shape[1:]``."""
        z = batch.shape[2]
        planes = [window[1:] for window in windows for _ in range(z)]
        return self._per_slice(batch, lambda flat: self.inner.predict_tensor_at(flat, planes, shape[1:]))

    @staticmethod
    def _per_slice(batch: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        n, c, z, y, x = batch.shape
        flat = batch.permute(0, 2, 1, 3, 4).reshape(n * z, c, y, x)  # item i's slices are rows i*z..
        scores = predict(flat)
        return scores.reshape(n, z, -1, y, x).permute(0, 2, 1, 3, 4)

    def compile(self) -> SliceWise:
        self.inner.compile()
        return self

    def ref(self) -> SliceWiseRef:
        return SliceWiseRef(self.inner.ref())


@dataclass(frozen=True)
class SliceWiseRef:
    """What tasks carry for a :class:`SliceWise`: the inner segmenter's reference."""

    inner: Any

    def resolve(self) -> SliceWise:
        from geoseg.models.cache import resolve

        return SliceWise(resolve(self.inner))
