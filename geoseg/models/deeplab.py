"""DeepLabv3+ (Chen et al., 2018) with a ResNet backbone, in plain torch.

* **Backbone**: ResNet-18/34 (basic blocks) or ResNet-50 (bottlenecks) with a
  7x7/2 stem and a 3x3/2 max pool. To reach ``output_stride`` 8 or 16 the
  strides of the last stage(s) are replaced by dilations, as in torchvision's
  ``replace_stride_with_dilation``: the first block of a dilated stage keeps
  the previous dilation in its first 3x3 convolution.
* **ASPP** on the deepest features: a 1x1 branch, one 3x3 branch per atrous
  rate (default 6/12/18 at output stride 16, doubled at 8) and an image-level
  pooling branch (global average, 1x1 conv, broadcast back), fused by a 1x1
  projection.
* **Decoder**: bilinear upsampling to stride 4, concatenation with projected
  low-level features of the first stage, two 3x3 convolutions, a 1x1
  classifier and bilinear upsampling to full resolution.

Image-level pooling makes every output depend on the whole input, so no halo
makes chunked inference exact: ``global_context`` is then True and
``receptive_radius`` is the radius of the *local* part (everything but the
pooling branch). ``image_pooling=False`` gives a purely local network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.errors import ModelConfigError
from geoseg.models._blocks import conv_bn_relu
from geoseg.models.probe import Span
from geoseg.models.registered import register_architecture


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 projection (with batch norm) when the residual changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    ``dilation`` is ``(first, second)``: the dilations of the two convolutions.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1)):
        super().__init__()
        self.stride, self.dilation = stride, dilation
        self.conv1 = _conv3x3(in_channels, planes, stride, dilation[0])
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation[1])
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)

    def span(self, span: Span) -> Span:
        path = span.conv(3, self.stride, self.dilation[0]).conv(3, 1, self.dilation[1])
        return path.union(span.conv(1, self.stride))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand, with a residual (ResNet-50).

    Only ``dilation[0]`` is used: the block has a single 3x3 convolution.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1)):
        super().__init__()
        self.stride, self.dilation = stride, dilation
        out_channels = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            _conv3x3(planes, planes, stride, dilation[0]),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + identity)

    def span(self, span: Span) -> Span:
        return span.conv(3, self.stride, self.dilation[0]).union(span.conv(1, self.stride))


RESNETS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetBackbone(nn.Module):
    """A ResNet whose last stages trade stride for dilation to stop at ``output_stride``.

    ``forward`` returns the first stage's features (stride 4) and the last
    stage's (stride ``output_stride``).
    """

    def __init__(self, in_channels: int, name: str, width: int, output_stride: int):
        super().__init__()
        block, counts = RESNETS[name]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.stages = nn.ModuleList()
        channels, stride, dilation = width, 4, 1
        for index, count in enumerate(counts):
            step = 1 if index == 0 else 2
            previous = dilation
            if stride * step > output_stride:
                step, dilation = 1, dilation * step
            else:
                stride *= step
            planes = width * 2**index
            blocks = [block(channels, planes, step, (previous, dilation))]
            channels = planes * block.expansion
            blocks += [block(channels, planes, 1, (dilation, dilation)) for _ in range(count - 1)]
            self.stages.append(nn.Sequential(*blocks))
        self.low_channels = width * block.expansion
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.stages[0](self.stem(x))
        high = low
        for stage in self.stages[1:]:
            high = stage(high)
        return low, high

    def span(self, span: Span) -> tuple[Span, Span]:
        """Spans of the low-level (stride 4) and high-level features."""
        span = span.conv(7, 2).conv(3, 2)
        spans = []
        for stage in self.stages:
            for block in stage:
                span = block.span(span)
            spans.append(span)
        return spans[0], spans[-1]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling, optionally with an image-level pooling branch."""

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...],
                 image_pooling: bool):
        super().__init__()
        self.rates = rates
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels, 1)]
            + [conv_bn_relu(in_channels, out_channels, 3, r) for r in rates]
        )
        # No batch norm on a 1x1 map: it would fail to train with batch size 1.
        self.pooling = None
        if image_pooling:
            self.pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                         nn.Conv2d(in_channels, out_channels, 1),
                                         nn.ReLU(inplace=True))
        branches = len(self.branches) + int(image_pooling)
        self.project = nn.Sequential(conv_bn_relu(branches * out_channels, out_channels, 1),
                                     nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [branch(x) for branch in self.branches]
        if self.pooling is not None:
            features.append(self.pooling(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(features, dim=1))

    def span(self, span: Span) -> Span:
        """Span of the local branches (the pooling branch reaches everything)."""
        return span.union(*[span.conv(3, dilation=r) for r in self.rates])


@register_architecture("deeplabv3plus")
class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with a ResNet backbone.

    Parameters
    ----------
    in_channels, num_classes
        Input bands and output classes.
    backbone
        ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
    output_stride
        Stride of the deepest features: 8, 16 or 32 (dilations replace the rest).
        Inputs must be multiples of it (:attr:`stride`).
    width
        Channels of the stem and first stage (64 in the standard ResNets);
        doubled at each stage.
    atrous_rates
        Dilations of the ASPP 3x3 branches (default ``(6, 12, 18)`` scaled by
        ``16 / output_stride``).
    image_pooling
        Whether ASPP has the image-level pooling branch (global context).
    aspp_channels
        Channels of ASPP and decoder (default ``4 * width``, 256 at width 64).
    low_level_channels
        Channels of the projected low-level features (default ``3 * width // 4``, 48 at 64).
    """

    spatial_dims = 2

    def __init__(self, in_channels: int = 3, num_classes: int = 2, backbone: str = "resnet50",
                 output_stride: int = 16, width: int = 64,
                 atrous_rates: tuple[int, ...] | list[int] | None = None,
                 image_pooling: bool = True, aspp_channels: int | None = None,
                 low_level_channels: int | None = None):
        super().__init__()
        _check_config(backbone, output_stride, width)
        self.in_channels, self.output_stride = in_channels, output_stride
        self.global_context = bool(image_pooling)
        default_rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
        rates = tuple(int(r) for r in atrous_rates) if atrous_rates else default_rates
        aspp_channels = aspp_channels or 4 * width
        low_level_channels = low_level_channels or max(1, 3 * width // 4)
        self.backbone = ResNetBackbone(in_channels, backbone, width, output_stride)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, rates, image_pooling)
        self.low_project = conv_bn_relu(self.backbone.low_channels, low_level_channels, 1)
        self.decoder = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, aspp_channels),
            conv_bn_relu(aspp_channels, aspp_channels),
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    @property
    def stride(self) -> int:
        """Total downsampling: inputs must be multiples of this on every axis."""
        return self.output_stride

    @property
    def receptive_radius(self) -> int:
        """Radius of the local part: everything except the image-level pooling branch."""
        return self.span().radius

    def span(self) -> Span:
        """Dependency interval of an output pixel through the local branches."""
        low, high = self.backbone.span(Span())
        span = self.aspp.span(high).bilinear(self.output_stride // 4).union(low)
        return span.conv(3).conv(3).bilinear(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        low, high = self.backbone(x)
        y = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear",
                          align_corners=False)
        y = self.decoder(torch.cat([y, self.low_project(low)], dim=1))
        return F.interpolate(self.classifier(y), size=size, mode="bilinear", align_corners=False)


def _check_config(backbone: str, output_stride: int, width: int) -> None:
    if backbone not in RESNETS:
        raise ModelConfigError(f"backbone must be one of {sorted(RESNETS)}, got {backbone!r}.")
    if output_stride not in (8, 16, 32):
        raise ModelConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}.")
    if width < 1:
        raise ModelConfigError(f"width must be >= 1, got {width}.")
