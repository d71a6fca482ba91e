"""The per-process model cache: one load per model and device, whatever GEOSEG_DEVICE says when
a task asks for it."""

from __future__ import annotations

import numpy as np
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


def test_models_no_job_holds_are_kept_up_to_the_setting_least_recently_used_out(
        ref, tmp_path, monkeypatch):
    """The lazy segment() loads models on the workers without a job holding them: a
    long-lived cluster scoring many checkpoints kept every one loaded."""
    from geoseg.models import save_model
    from tests.conftest import random_unet

    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    monkeypatch.setenv("GEOSEG_MODEL_CACHE", "2")
    others = []
    for seed in (1, 2):
        save_model(random_unet(seed=seed), str(tmp_path / f"m{seed}.safetensors"))
        others.append(read_header(str(tmp_path / f"m{seed}.safetensors")).ref())
    held = cache.hold(ref)
    first = cache.resolve(others[0])
    cache.resolve(others[1])
    cache.resolve(others[0])  # now the more recently used
    assert cache.loaded() == {ref.sha256, others[0].sha256, others[1].sha256}
    newest = str(tmp_path / "m3.safetensors")
    save_model(random_unet(seed=3), newest)
    cache.resolve(read_header(newest).ref())
    assert others[1].sha256 not in cache.loaded()  # the least recently used of those unheld
    assert cache.resolve(ref) is held and cache.resolve(others[0]) is first
    cache.resolve(others[1])
    assert cache.load_counts()[others[1].sha256] == 2
    cache.release(ref.sha256)


def test_threads_asking_at_once_share_one_load_and_a_held_model_outlives_evictions(
        ref, tmp_path, monkeypatch):
    """A worker's threads start their first tasks together: each waits for the one load. A
    job's held model is never evicted by another thread's loads, however they interleave."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from geoseg.models import save_model
    from tests.conftest import random_unet

    monkeypatch.setenv("GEOSEG_DEVICE", "cpu")
    monkeypatch.setenv("GEOSEG_MODEL_CACHE", "1")  # of the others, each load evicts the other
    others = []
    for seed in (1, 2):
        save_model(random_unet(seed=seed), str(tmp_path / f"m{seed}.safetensors"))
        others.append(read_header(str(tmp_path / f"m{seed}.safetensors")).ref())
    start = threading.Barrier(8)

    def ask(index: int) -> object:
        start.wait()
        if index % 2:
            for other in others * 2:
                cache.resolve(other)
            return None
        model = cache.hold(ref)
        for other in others:
            cache.resolve(other)
            assert cache.resolve(ref) is model
        return model

    with ThreadPoolExecutor(8) as pool:
        models = [m for m in pool.map(ask, range(8)) if m is not None]
    assert len(models) == 4 and all(m is models[0] for m in models)
    assert cache.load_counts()[ref.sha256] == 1 and cache.holds() == {ref.sha256: 4}
    for _ in models:
        cache.release(ref.sha256)
    assert cache.holds() == {} and ref.sha256 not in cache.loaded()


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


@pytest.mark.gpu
def test_the_last_release_of_a_gpu_model_hands_its_memory_back_to_the_gpu(ref, monkeypatch):
    import gc

    monkeypatch.setenv("GEOSEG_DEVICE", "cuda")
    gc.collect()  # tensors an earlier test left in reference cycles would hold memory below
    torch.cuda.empty_cache()
    before, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    cache.hold(ref)
    cache.hold(ref)  # a second job holding the same model
    held = torch.cuda.memory_allocated()
    assert held > before
    cache.release(ref.sha256)
    assert ref.sha256 in cache.loaded() and torch.cuda.memory_allocated() == held
    cache.release(ref.sha256)
    assert ref.sha256 not in cache.loaded() and torch.cuda.memory_allocated() == before
    assert torch.cuda.memory_reserved() <= reserved  # and the cache's blocks went back


# --- segment() runs the model it is given --------------------------------------------------


def _segmented(model, image):
    import dask
    import xarray as xr

    import geoseg

    raster = xr.DataArray(image, dims=("band", "y", "x"))
    with dask.config.set(scheduler="threads"):
        return geoseg.segment(raster, model, output="probabilities", chunks=48).values


@pytest.fixture()
def loaded(model_path):
    import geoseg

    cache.clear()
    yield geoseg.load_model(model_path, device="cpu")
    cache.clear()


def test_models_sharing_weights_but_not_normalisation_or_classes_each_run_as_themselves(loaded):
    """The cache keyed models by their weights alone: a copy with other normalisation (or its
    classes in another order), segmented after the file's model, ran as that model, and the
    file's model, segmented after the copy, ran as the copy."""
    import dataclasses

    from geoseg import Ensemble, SegmentationModel
    from tests.conftest import textured_image

    image = textured_image(96, 112, seed=9).astype(np.float32)
    renormalised = SegmentationModel(loaded.net, dataclasses.replace(
        loaded.info, mean=(0.0,) * 3, std=(255.0,) * 3), device="cpu")
    reversed_classes = SegmentationModel(loaded.net, dataclasses.replace(
        loaded.info, classes=tuple(reversed(loaded.info.classes))), device="cpu")
    back_in_order = Ensemble([reversed_classes], classes=[c.name for c in loaded.classes])
    for model, expected in [(renormalised, renormalised.predict_image(image)),
                            (loaded, loaded.predict_image(image)),
                            (back_in_order, reversed_classes.predict_image(image)[::-1]),
                            (renormalised, renormalised.predict_image(image))]:
        np.testing.assert_allclose(_segmented(model, image), expected, atol=1e-5)
    assert np.abs(renormalised.predict_image(image) - loaded.predict_image(image)).max() > 1e-3


def test_a_loaded_model_whose_weights_changed_in_place_runs_with_its_new_weights(loaded, model_path):
    import geoseg
    from tests.conftest import textured_image

    image = textured_image(96, 112, seed=9).astype(np.float32)
    before = _segmented(loaded, image)
    with torch.no_grad():
        for p in loaded.net.parameters():
            p.mul_(1.5)
    after = _segmented(loaded, image)
    np.testing.assert_allclose(after, loaded.predict_image(image), atol=1e-5)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(_segmented(model_path, image),  # the file itself is unchanged
                               geoseg.load_model(model_path, device="cpu").predict_image(image),
                               atol=1e-5)


def test_a_changed_model_on_worker_processes_is_refused_saying_to_save_it(loaded, cluster_address):
    import xarray as xr
    from distributed import Client

    import geoseg
    from geoseg.errors import ModelFileError
    from tests.conftest import textured_image

    with torch.no_grad():
        next(loaded.net.parameters()).add_(1.0)
    raster = xr.DataArray(textured_image(64, 64, seed=2).astype(np.float32), dims=("band", "y", "x"))
    with Client(cluster_address), pytest.raises(ModelFileError, match=r"was built in memory \(or "
                                                r"its weights changed since it was read\).*save_model"):
        geoseg.segment(raster, loaded, chunks=32).compute()


def test_tasks_run_the_model_given_on_the_device_it_was_placed_on(loaded, model_path, monkeypatch):
    """A model loaded with device="cpu" was loaded again by its tasks on GEOSEG_DEVICE (CUDA
    where there is one): a second copy, on another device than asked, so that the GPU tests
    compared CUDA with CUDA. Its reference carries the device, and this process's tasks use the
    model itself."""
    import geoseg

    ref = loaded.ref()
    assert ref.device == "cpu"
    monkeypatch.setenv("GEOSEG_DEVICE", "cuda")  # as on a GPU machine; none here
    assert cache.resolve(ref) is loaded and not cache.load_counts()
    monkeypatch.delenv("GEOSEG_DEVICE")
    default = geoseg.load_model(model_path)  # GEOSEG_DEVICE's choice: the workers' own
    assert default.ref().device is None and cache.resolve(default.ref()) is default
