"""The shared layers keep every architecture's state_dict: saved weights must keep loading."""

from __future__ import annotations

import hashlib

import pytest
import torch

from geoseg.models._blocks import conv_chain, double_conv
from geoseg.models.registry import build_network

# sha256 of the sorted "key|shape" lines, taken before the layers were shared.
LAYOUTS = {
    "unet": ({"depth": 2, "width": 2}, 66,
             "5c822fe4015081497c7aa7e86658053f81819c10bf6052304cf6e12f1a3a44dd"),
    "unet3d": ({"depth": 2, "width": 2, "pool_z": 1}, 66,
               "a834d4d39e66624272b4e970d9ae388a91c894dd42ba4a4926bc65e34653179d"),
    "fcn": ({"depth": 3, "width": 2, "convs": 2}, 57,
            "3dae3b3668ae13e66e793488a894870e40d88743112a196410f66ed524632abe"),
    "segnet": ({"depth": 2, "width": 2, "convs": 3}, 74,
               "44de6bc3d8a473a5f51c50d1da6b5e15acbde3cc6d7c49624149ea980a766e9c"),
    "deeplabv3plus": ({"backbone": "resnet18", "width": 4}, 172,
                      "abdd5dac2ffb25144daefd298127272a2563cbdbf616ed0b38f5362024b5adde"),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_state_dict_layout_is_unchanged(name):
    config, count, digest = LAYOUTS[name]
    state = build_network(name, config).state_dict()
    text = "".join(f"{key}|{tuple(value.shape)}\n" for key, value in sorted(state.items()))
    assert len(state) == count
    assert hashlib.sha256(text.encode()).hexdigest() == digest


def test_double_conv_is_flat_and_chain_changes_width_where_asked():
    assert [type(m).__name__ for m in double_conv(1, 4, dims=3)] == [
        "Conv3d", "BatchNorm3d", "ReLU", "Conv3d", "BatchNorm3d", "ReLU"]
    chain = conv_chain([3, 3, 5])
    assert [stage[0].out_channels for stage in chain] == [3, 5]
    assert chain(torch.zeros(1, 3, 4, 4)).shape == (1, 5, 4, 4)


def test_unet_stride_and_radius_match_the_closed_form():
    from geoseg.models.unet import unet_receptive_radius

    for depth in (1, 2, 3, 4):
        net = build_network("unet", {"depth": depth, "width": 1})
        assert net.stride == 2**depth and net.receptive_radius == unet_receptive_radius(depth)
