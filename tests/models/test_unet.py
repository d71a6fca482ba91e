"""U-Net shapes, stride and receptive field, checked empirically."""

from __future__ import annotations

import pytest
import torch

from geoseg.models import UNet2D
from geoseg.models.unet import unet_receptive_radius


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_output_shape_matches_input(depth):
    net = UNet2D(3, 5, depth=depth, width=4).eval()
    size = (2 ** depth) * 3
    out = net(torch.zeros(2, 3, size, size + 2 ** depth))
    assert out.shape == (2, 5, size, size + 2 ** depth)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_radius_bounds_the_gradient_support(depth):
    """Backpropagate from output pixels at every phase of the stride: the input gradient
    must vanish beyond the stated radius, and reach close to it."""
    torch.manual_seed(depth)
    net = UNet2D(1, 2, depth=depth, width=4).eval()
    radius = net.receptive_radius
    stride = net.stride
    size = (2 * radius // stride + 4) * stride
    reach = 0
    for phase in range(stride):
        x = torch.randn(1, 1, size, size, requires_grad=True)
        centre = size // 2 - size // 2 % stride + phase
        net(x)[0, :, centre, centre].sum().backward()
        ys, xs = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
        reach = max(reach, int((ys - centre).abs().max()), int((xs - centre).abs().max()))
    assert reach <= radius
    assert reach > radius - stride


def test_known_radius():
    assert unet_receptive_radius(3) == 51
