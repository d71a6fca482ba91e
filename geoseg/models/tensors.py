"""The tensor forms of the contract's helpers (:mod:`geoseg.core.segmenter`), on any device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def valid_mask_tensor(raw: torch.Tensor, nodata: float | None) -> torch.Tensor:
    """:func:`valid_mask` for a tensor, computed on its device."""
    valid = torch.ones(raw.shape[1:], dtype=torch.bool, device=raw.device)
    if nodata is not None and not np.isnan(nodata) and _holds(raw.dtype, nodata):
        valid &= ~torch.all(raw == nodata, dim=0)
    if raw.is_floating_point():
        valid &= torch.all(torch.isfinite(raw), dim=0)
    return valid


def _holds(dtype: torch.dtype, nodata: float) -> bool:
    """Whether a pixel of ``dtype`` can equal ``nodata``, as numpy decides it: torch wraps an
    integer out of an integer type's range (-1 equals a uint8 255, 259 equals 3)."""
    if dtype.is_floating_point or dtype == torch.bool or not isinstance(nodata, int):
        return True
    info = torch.iinfo(dtype)
    return info.min <= nodata <= info.max


def pad_end_tensor(x: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """:func:`pad_end` on the device: reflect-pad the spatial axes of ``(bands, *spatial)``.

    Gathers with numpy's reflect indices, so a pad longer than the axis reflects again as
    ``np.pad`` does (torch's own reflect padding refuses that)."""
    for axis, (n, target) in enumerate(zip(x.shape[1:], spatial_shape), start=1):
        if int(target) > n:
            index = np.pad(np.arange(n), (0, int(target) - n), mode="reflect")
            x = x.index_select(axis, torch.from_numpy(index).to(x.device))
    return x


def non_finite_said(state: Mapping[str, torch.Tensor]) -> str | None:
    """What the first of ``state``'s tensors holding NaN or infinite values says, ``tensor NAME
    holds N NaN or infinite value(s) of M``, or ``None`` when every weight is finite. Such a
    network scores NaN everywhere, which class ids show as class 0: a model file's loading,
    its saving and an in-memory model's use all refuse it with this check."""
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0 or _finite_ends(tensor):
            continue
        bad = int(tensor.numel() - torch.isfinite(tensor).sum())
        return f"tensor {name} holds {bad} NaN or infinite value(s) of {tensor.numel()}"
    return None


def _finite_ends(tensor: torch.Tensor) -> bool:
    """Whether the least and greatest values are finite, so every value is (a NaN makes both
    NaN): one pass that allocates nothing the size of the tensor, 8x faster than counting
    finite values (12 against 95 ms for 40 M weights); weights are checked at every load."""
    low, high = torch.aminmax(tensor.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def class_ids(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """The arg-max of ``scores`` over the class axis ``dim`` (the first of equal maxima, as
    torch and numpy both take). On the CPU through numpy, whose reduction over the class axis
    of ``(N, C, H, W)`` scores is about 5x faster than torch's (100 against 13 ms for two
    classes over 1024^2 on one thread): for a classical method the arg-max took 70 to 80% of
    a task. Elsewhere (a GPU; numpy has no bfloat16) torch's, where the scores lie."""
    if scores.device.type != "cpu" or scores.dtype == torch.bfloat16:
        return scores.argmax(dim=dim)
    return torch.from_numpy(np.asarray(scores.numpy(force=True).argmax(axis=dim)))
