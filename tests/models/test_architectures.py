"""Shapes, whole-image use and stated vs measured receptive fields of the new architectures."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.core.classes import ClassInfo

# Imported directly so that the architectures register themselves.
from geoseg.models import deeplab, fcn, segnet, unet3d  # noqa: F401
from geoseg.models.deeplab import DeepLabV3Plus, ResNetBackbone
from geoseg.models.header import ModelInfo
from geoseg.models.model import SegmentationModel
from geoseg.models.probe import (
    Span,
    gradient_support,
    impulse_support,
    measure_receptive_radius,
    probe_size,
)
from geoseg.models.registry import architectures, build_network
from geoseg.models.unet import unet_receptive_radius
from geoseg.tiling.plan import coerce_per_axis

# name: (architecture, config) at test widths; "local" cases have a bounded receptive field.
LOCAL: dict[str, tuple[str, dict[str, Any]]] = {
    "fcn": ("fcn", {"width": 4}),
    "fcn-depth3": ("fcn", {"depth": 3, "width": 4, "convs": 1, "fc_kernel": 7}),
    "segnet": ("segnet", {"depth": 3, "width": 4}),
    "deeplab18-os16": ("deeplabv3plus", {"backbone": "resnet18", "width": 4, "atrous_rates": [2, 3],
                                         "image_pooling": False}),
    "deeplab18-os8": ("deeplabv3plus", {"backbone": "resnet18", "output_stride": 8, "width": 4,
                                        "atrous_rates": [2, 3], "image_pooling": False}),
    "deeplab50-os16": ("deeplabv3plus", {"backbone": "resnet50", "width": 2, "atrous_rates": [2, 3],
                                         "image_pooling": False}),
    "unet3d": ("unet3d", {"depth": 2, "width": 2}),
    "unet3d-flat-z": ("unet3d", {"depth": 2, "width": 2, "pool_z": False}),
    "unet3d-deep-z": ("unet3d", {"depth": 2, "width": 2, "pool_z": 1}),
}
GLOBAL: dict[str, tuple[str, dict[str, Any]]] = {
    "deeplab34-pooling": ("deeplabv3plus", {"backbone": "resnet34", "width": 4}),
    "deeplab50-pooling-os8": ("deeplabv3plus", {"backbone": "resnet50", "output_stride": 8,
                                                "width": 2}),
}
ALL = {**LOCAL, **GLOBAL}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(case: str, bands: int = 3, classes: int = 3, seed: int = 0) -> nn.Module:
    """A test-width network for ``case``, built through the registry, in eval mode."""
    torch.manual_seed(seed)
    architecture, config = ALL[case]
    config = {"in_channels": bands, "num_classes": classes, **config}
    return build_network(architecture, config).eval()


def spatial_multiple(net: nn.Module, multiples: tuple[int, ...] = (3, 2, 3)) -> tuple[int, ...]:
    """A non-cubic input size made of multiples of the stride on every axis."""
    return tuple(k * s for k, s in zip(multiples, coerce_per_axis(net.stride, net.spatial_dims, "stride")))


def test_architectures_are_registered():
    assert {"fcn", "segnet", "deeplabv3plus", "unet3d"} <= set(architectures())


@pytest.mark.parametrize("case", sorted(ALL))
def test_output_shape_matches_input(case):
    net = build(case, bands=2, classes=5)
    shape = spatial_multiple(net)
    with torch.inference_mode():
        out = net(torch.randn(2, 2, *shape))
    assert out.shape == (2, 5, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("case", sorted(ALL))
def test_whole_image_prediction_on_odd_sizes(case):
    """SegmentationModel reflect-pads an odd-sized image to the stride and crops the scores back."""
    architecture, config = ALL[case]
    net = build(case, bands=3, classes=4)
    info = ModelInfo(case, architecture, {"in_channels": 3, "num_classes": 4, **config},
                     tuple(ClassInfo(f"class_{i}") for i in range(4)), ("b1", "b2", "b3"),
                     (128.0,) * 3, (64.0,) * 3)
    model = SegmentationModel(net, info, device="cpu")
    spatial = (37, 45) if net.spatial_dims == 2 else (5, 13, 11)
    image = np.random.default_rng(0).integers(0, 255, (3, *spatial)).astype(np.uint8)
    scores = model.predict_image(image)
    assert scores.shape == (4, *spatial)
    np.testing.assert_allclose(scores.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("case", sorted(LOCAL))
def test_stated_receptive_radius_is_safe_and_tight(case):
    """Per axis: measured (gradient + impulse, every phase) <= stated < measured + stride."""
    net = build(case, bands=1, classes=2)
    ndim = net.spatial_dims
    stated = coerce_per_axis(net.receptive_radius, ndim, "radius")
    stride = coerce_per_axis(net.stride, ndim, "stride")
    measured = measure_receptive_radius(net, ndim)
    for axis in range(ndim):
        assert stated[axis] - stride[axis] < measured[axis] <= stated[axis], (stated, measured)


def test_deeplab_default_rates_radius():
    """The default 6/12/18 rates at output stride 16: a 538-pixel local radius, measured exactly."""
    torch.manual_seed(0)
    net = DeepLabV3Plus(1, 2, backbone="resnet18", width=2, image_pooling=False).eval()
    assert net.receptive_radius == 538
    measured = measure_receptive_radius(net, method="gradient")
    assert all(net.receptive_radius - net.stride < m <= net.receptive_radius for m in measured)


def test_deeplab_image_pooling_reaches_the_far_corner():
    """With image pooling an output pixel depends on the whole image; without, on its radius."""
    kwargs = {"backbone": "resnet18", "width": 4, "atrous_rates": (2, 3)}
    torch.manual_seed(0)
    pooled = DeepLabV3Plus(1, 2, **kwargs).eval()
    local = DeepLabV3Plus(1, 2, image_pooling=False, **kwargs).eval()
    assert pooled.global_context and not local.global_context
    assert pooled.receptive_radius == local.receptive_radius
    size = probe_size(local.receptive_radius, local.stride, 2)[0]
    assert size - 1 > local.receptive_radius
    x = torch.randn(1, 1, size, size)
    far = (size - 1, size - 1)
    assert gradient_support(pooled, x, far)[0, 0]
    assert impulse_support(pooled, x, (0, 0))[far]
    assert not gradient_support(local, x, far)[0, 0]
    assert not impulse_support(local, x, (0, 0))[far]


@pytest.mark.parametrize("case", sorted(set(LOCAL) - {c for c in LOCAL if c.startswith("deeplab")}))
def test_other_nets_are_local(case):
    assert build(case).global_context is False


def test_anisotropic_unet3d_metadata():
    """Per-axis stride and radius; their int() is the conservative scalar SegmentationModel uses."""
    net = unet3d.UNet3D(1, 2, depth=2, width=2, pool_z=False)
    assert net.stride == (1, 4, 4) and int(net.stride) == 4
    assert net.receptive_radius == (10, 23, 23) and int(net.receptive_radius) == 23
    assert unet3d.UNet3D(1, 2, depth=2, width=2).stride == 4
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 5, 8, 12)).shape == (1, 2, 5, 8, 12)


class _Understated(nn.Module):
    """A 5x5 convolution (true radius 2) that claims a radius of 1."""

    spatial_dims, stride, receptive_radius = 2, 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_probe_catches_an_understated_radius():
    """The default probe size leaves room beyond the stated radius, so an error shows."""
    assert measure_receptive_radius(_Understated()) == (2, 2)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_span_reproduces_the_unet_formula(depth):
    span, skips = Span(), []
    for _ in range(depth):
        span = span.conv(3).conv(3)
        skips.append(span)
        span = span.conv(2, stride=2, padding=0)
    span = span.conv(3).conv(3)
    for level in reversed(range(depth)):
        span = span.transposed(2).union(skips[level]).conv(3).conv(3)
    assert span.radius == unet_receptive_radius(depth)
    net3d = unet3d.UNet3D(1, 2, depth=depth, width=1)
    assert net3d.receptive_radius == unet_receptive_radius(depth)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_span_bilinear_matches_interpolate(factor):
    """Offsets of linear upsampling (align_corners=False), enumerated from torch's own gradients."""
    coarse = torch.randn(1, 1, 12, requires_grad=True)
    fine = F.interpolate(coarse, scale_factor=factor, mode="linear", align_corners=False)
    offsets = []
    for j in range(3 * factor, 9 * factor):  # away from the clamped borders
        (grad,) = torch.autograd.grad(fine[0, 0, j], coarse)
        offsets += [factor * int(i) - j for i in torch.nonzero(grad[0, 0])]
    span = Span(step=factor).bilinear(factor)
    assert (span.lo, span.hi, span.step) == (min(offsets), max(offsets), 1)


def test_resnet_backbones_match_torchvision_parameter_counts():
    """Without the classifier, torchvision's resnet18/34/50 have exactly these many parameters."""
    expected = {"resnet18": 11_176_512, "resnet34": 21_284_672, "resnet50": 23_508_032}
    for name, count in expected.items():
        assert sum(p.numel() for p in ResNetBackbone(3, name, 64, 16).parameters()) == count


@pytest.mark.parametrize("case", sorted(ALL))
def test_test_configs_are_small(case):
    count = sum(p.numel() for p in build(case).parameters())
    assert 1_000 < count < 1_000_000


@pytest.mark.parametrize("case", sorted(ALL))
def test_forward_time_on_cpu(case):
    """1x3x256x256 (3D: 1x3x16x64x64) well under a second at test widths, on one thread."""
    net = build(case)
    shape = (256, 256) if net.spatial_dims == 2 else (16, 64, 64)
    x = torch.randn(1, 3, *shape)
    with torch.inference_mode():
        net(x)
        elapsed = []
        for _ in range(3):  # the fastest of three: another test's processes share the cores
            start = time.perf_counter()
            net(x)
            elapsed.append(time.perf_counter() - start)
            if elapsed[-1] < 1.0:
                break
    print(f"{case}: {min(elapsed) * 1000:.1f} ms")
    assert min(elapsed) < 1.0


@pytest.mark.parametrize(("architecture", "config"), [
    ("fcn", {"depth": 2}),
    ("fcn", {"fc_kernel": 4}),
    ("segnet", {"depth": 0}),
    ("deeplabv3plus", {"backbone": "resnet101"}),
    ("deeplabv3plus", {"output_stride": 4}),
    ("unet3d", {"depth": 2, "pool_z": 3}),
])
def test_bad_configs_are_refused(architecture, config):
    with pytest.raises(ValueError):
        build_network(architecture, {"in_channels": 1, "num_classes": 2, **config})
