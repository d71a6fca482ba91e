"""Receptive fields: analytic interval arithmetic and an empirical probe.

Two tools, one per side of the contract every architecture makes
(``receptive_radius``: the largest distance from an output pixel to an input
pixel it can depend on):

* :class:`Span` tracks, along one axis, the lowest and highest input offsets a
  feature pixel can depend on, relative to the input position of that pixel
  (``step * index``), worst case over every phase of the stride. Architectures
  push a :class:`Span` through their layers to *state* their radius.
* :func:`measure_receptive_radius` *measures* it, by backpropagating from output
  pixels and by perturbing input pixels at every phase of the stride. It never
  sees more than the true dependency (it is a lower bound); a stated radius is
  safe when it is at least the measured one, and tight when the gap is below one
  stride.

Max pooling and max unpooling route gradients through the arg-max only, so the
gradient alone can miss dependencies through "which pixel is the maximum"; the
impulse probe sees those. The default ``method="both"`` takes the union.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from geoseg.errors import ModelConfigError, ParameterError
from geoseg.tiling.plan import coerce_per_axis, round_up

Method = Literal["gradient", "impulse", "both"]


@dataclass(frozen=True)
class Span:
    """Dependency interval of a feature map along one axis.

    A pixel with index ``i`` of a feature map whose stride is ``step`` input
    pixels depends on input positions ``step * i + lo`` to ``step * i + hi``
    (inclusive), for every ``i``: the bounds are the worst case over phases.

    Parameters
    ----------
    lo, hi
        Lowest and highest offset, in input pixels.
    step
        Total stride of the feature map, in input pixels.
    """

    lo: int = 0
    hi: int = 0
    step: int = 1

    @property
    def radius(self) -> int:
        """Largest distance from a pixel to an input it depends on."""
        return max(-self.lo, self.hi)

    def conv(self, kernel: int, stride: int = 1, dilation: int = 1,
             padding: int | None = None) -> Span:
        """Through a convolution or pooling window (default: "same" zero padding).

        Output index ``i`` reads input indices ``stride * i - padding + dilation * t``
        for ``t`` in ``[0, kernel)``.
        """
        pad = (kernel - 1) // 2 * dilation if padding is None else padding
        reach = dilation * (kernel - 1) - pad
        return Span(self.lo - self.step * pad, self.hi + self.step * reach, self.step * stride)

    def transposed(self, factor: int, kernel: int | None = None, padding: int = 0) -> Span:
        """Through a transposed convolution with stride ``factor`` (kernel defaults to ``factor``).

        Fine index ``j`` reads coarse indices ``i`` with ``factor * i`` in
        ``[j + padding - kernel + 1, j + padding]``.
        """
        fine = self._fine_step(factor)
        kernel = factor if kernel is None else kernel
        return Span(self.lo + fine * (padding - kernel + 1), self.hi + fine * padding, fine)

    def bilinear(self, factor: int) -> Span:
        """Through (bi)linear upsampling by an integer ``factor``, ``align_corners=False``.

        Fine index ``j = factor * m + r`` samples source ``(j + 0.5) / factor - 0.5``,
        i.e. coarse ``floor`` and ``floor + 1`` unless the weight of the latter is 0;
        the offsets are enumerated over ``r`` (borders clamp and only shrink them).
        """
        fine = self._fine_step(factor)
        offsets = [fine * (factor * c - r)
                   for r in range(factor) for c in _linear_sources(r, factor)]
        return Span(self.lo + min(offsets), self.hi + max(offsets), fine)

    def union(self, *others: Span) -> Span:
        """Hull of spans of feature maps with the same stride (concatenation, addition)."""
        if any(o.step != self.step for o in others):
            steps = [self.step] + [o.step for o in others]
            raise ModelConfigError(f"cannot join spans of steps {steps}.")
        spans = (self, *others)
        return Span(min(s.lo for s in spans), max(s.hi for s in spans), self.step)

    def _fine_step(self, factor: int) -> int:
        if factor < 1 or self.step % factor:
            raise ModelConfigError(f"cannot upsample a map of stride {self.step} by {factor}.")
        return self.step // factor


def _linear_sources(r: int, factor: int) -> list[int]:
    """Coarse offsets (relative to ``m``) that fine ``j = factor * m + r`` interpolates from."""
    twice = 2 * r + 1 - factor  # 2 * factor * source, relative to 2 * factor * m
    base = twice // (2 * factor)
    return [base] if twice % (2 * factor) == 0 else [base, base + 1]


def probe_size(radius: int | Sequence[int], stride: int | Sequence[int],
               ndim: int) -> tuple[int, ...]:
    """A probe input size per axis: a multiple of the stride with room for the radius both sides.

    ``(2 * radius // stride + 3) * stride`` leaves at least ``radius + 1`` pixels on
    each side of every position :func:`measure_receptive_radius` probes.
    """
    pairs = zip(coerce_per_axis(radius, ndim, "radius"), coerce_per_axis(stride, ndim, "stride"))
    return tuple((2 * r // s + 3) * s for r, s in pairs)


def input_channels(net: nn.Module) -> int:
    """The number of input channels of ``net``: its ``in_channels`` or its first convolution's."""
    if hasattr(net, "in_channels"):
        return int(net.in_channels)
    for module in net.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.in_channels
    raise ModelConfigError(f"cannot tell how many input channels {type(net).__name__} takes; "
                           "pass in_channels.")


def gradient_support(net: nn.Module, x: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
    """Input pixels for which the output at ``index`` (summed over classes) has a nonzero gradient.

    Parameters
    ----------
    net
        Network, in the mode it should be probed in (normally ``eval``).
    x
        One input ``(1, C, *spatial)``.
    index
        Spatial index of the output pixel.

    Returns
    -------
    torch.Tensor
        Boolean mask over the input's spatial axes.
    """
    x = x.detach().clone().requires_grad_(True)
    out = net(x)
    out[(0, slice(None), *index)].sum().backward()
    return (x.grad[0] != 0).any(dim=0)


def impulse_support(net: nn.Module, x: torch.Tensor, index: Sequence[int], amplitude: float = 10.0,
                    seed: int = 0) -> torch.Tensor:
    """Output pixels that change when the input pixel at spatial ``index`` is perturbed.

    The perturbation adds ``amplitude`` times a random vector over channels, large
    enough to move arg-max decisions of pooling layers.

    Returns
    -------
    torch.Tensor
        Boolean mask over the output's spatial axes.
    """
    generator = torch.Generator().manual_seed(seed)
    kicked = x.detach().clone()
    kicked[(0, slice(None), *index)] += amplitude * torch.randn(x.shape[1], generator=generator)
    with torch.inference_mode():
        before, after = net(x.detach()), net(kicked)
    return (before[0] != after[0]).any(dim=0)


def support_reach(mask: torch.Tensor, centre: Sequence[int]) -> tuple[int, ...]:
    """Per axis, the largest distance from ``centre`` to a True pixel of ``mask`` (0 when empty)."""
    hits = torch.nonzero(mask)
    if hits.numel() == 0:
        return (0,) * mask.ndim
    return tuple(int((hits[:, axis] - c).abs().max()) for axis, c in enumerate(centre))


def measure_receptive_radius(net: nn.Module, spatial_dims: int | None = None,
                             size: int | Sequence[int] | None = None, *,
                             stride: int | Sequence[int] | None = None,
                             in_channels: int | None = None, method: Method = "both",
                             seed: int = 0) -> tuple[int, ...]:
    """Measure, per spatial axis, how far an output pixel's dependencies reach.

    For every phase of the stride (the same phase index on every axis, modulo
    that axis's stride) a pixel near the centre of a random input is probed; the
    result is the largest distance seen on each axis, over phases and methods.

    Parameters
    ----------
    net
        Any network mapping ``(1, C, *spatial)`` to ``(1, K, *spatial)``; it is
        probed in eval mode and its mode is restored afterwards.
    spatial_dims
        Number of spatial axes (default: ``net.spatial_dims``, else 2).
    size
        Probe input size, an int or one per axis; rounded up to multiples of the
        stride. Default: :func:`probe_size` of ``net.receptive_radius``, which
        leaves at least ``radius + 1`` pixels on each side of every probed pixel,
        so a stated radius that is too small shows up as measured > stated
        (measurements never exceed what the borders allow, so pass a larger size
        to see how far beyond the stated radius the true one reaches).
    stride
        Period of the network's translation equivariance (default ``net.stride``).
    in_channels
        Input channels (default: ``net.in_channels`` or the first convolution's).
    method
        ``"gradient"`` (backpropagate from the output pixel), ``"impulse"``
        (perturb the input pixel and see which outputs change) or ``"both"``.
    seed
        Seed of the random inputs.

    Returns
    -------
    tuple[int, ...]
        Measured radius per spatial axis: a lower bound of the true one.
    """
    ndim = spatial_dims or getattr(net, "spatial_dims", 2)
    strides = coerce_per_axis(getattr(net, "stride", 1) if stride is None else stride, ndim, "stride")
    if size is None:
        size = probe_size(net.receptive_radius, strides, ndim)
    sizes = tuple(round_up(n, s) for n, s in zip(coerce_per_axis(size, ndim, "size"), strides))
    channels = in_channels or input_channels(net)
    generator = torch.Generator().manual_seed(seed)
    was_training = net.training
    net.eval()
    reach = (0,) * ndim
    try:
        for phase in range(max(strides)):
            centre = tuple(n // 2 - (n // 2) % s + phase % s for n, s in zip(sizes, strides))
            x = torch.randn(1, channels, *sizes, generator=generator)
            for mask in _supports(net, x, centre, method, seed + phase):
                reach = tuple(max(a, b) for a, b in zip(reach, support_reach(mask, centre)))
    finally:
        net.train(was_training)
    return reach


def _supports(net: nn.Module, x: torch.Tensor, centre: tuple[int, ...], method: Method,
              seed: int) -> list[torch.Tensor]:
    if method not in ("gradient", "impulse", "both"):
        raise ParameterError(f"method must be 'gradient', 'impulse' or 'both', got {method!r}.")
    masks = []
    if method in ("gradient", "both"):
        masks.append(gradient_support(net, x, centre))
    if method in ("impulse", "both"):
        masks.append(impulse_support(net, x, centre, seed=seed))
    return masks
