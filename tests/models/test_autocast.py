"""The autocast type of a network on a CUDA device, by its compute capability (the GPU case
itself is in test_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from geoseg.models.model import inference_dtype


@pytest.mark.parametrize(("capability", "dtype"), [
    ((7, 0), torch.float16),  # V100: no bf16 convolutions in cuDNN
    ((7, 5), torch.float16),  # T4
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4
    ((9, 0), torch.bfloat16),  # H100, H200
])
def test_bf16_from_ampere_on_float16_before(capability, dtype):
    assert inference_dtype(capability) == dtype
