"""The per-process model cache: one load per model and device, whatever GEOSEG_DEVICE says when
a task asks for it."""

from __future__ import annotations

import pytest
import torch

from geoseg.errors import SettingError
from geoseg.models import cache
from geoseg.models.modelfile import read_header


@pytest.fixture()
def ref(model_path):
    cache.clear()
    yield read_header(model_path).ref()
    cache.clear()


def test_a_model_is_loaded_once_per_process_and_reused(ref, monkeypatch):
    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    first = cache.resolve(ref)
    assert cache.resolve(ref) is first
    assert cache.load_counts()[ref.sha256] == 1
    assert first.device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_model_cached_on_the_cpu_is_not_handed_out_when_cuda_is_asked_for(ref, monkeypatch):
    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    cache.resolve(ref)
    monkeypatch.setenv("GEOSEG_DEVICE", "cuda")
    with pytest.raises(SettingError, match="GEOSEG_DEVICE=cuda"):
        cache.resolve(ref)


@pytest.mark.gpu
def test_a_model_is_loaded_again_for_another_device(ref, monkeypatch):
    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    on_cpu = cache.resolve(ref)
    monkeypatch.setenv("GEOSEG_DEVICE", "cuda")
    on_gpu = cache.resolve(ref)
    assert (on_cpu.device.type, on_gpu.device.type) == ("cpu", "cuda")
    assert cache.load_counts()[ref.sha256] == 2
    cache.release(ref.sha256)
    assert ref.sha256 not in cache.loaded()
