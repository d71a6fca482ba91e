"""CUDA path: bf16 autocast on the GPU agrees with float32 on the CPU (skipped without a GPU).

Tolerances are bf16's: on the CPU, bf16 autocast of the demo U-Net against float32 differed by
at most 0.060 in a probability (0.023 at the 99.99th percentile), and agreed on 99.93% of the
class ids of the photograph below; cuDNN, choosing its algorithms per tile shape, adds
differences of that size between tilings."""

from __future__ import annotations

import numpy as np
import pytest

import geoseg
from tests.conftest import textured_image

pytestmark = pytest.mark.gpu


def test_cuda_bf16_matches_cpu_float32():
    image = textured_image(512, 512, seed=2)
    cpu = geoseg.load_model("builtin:demo-unet", device="cpu").predict_image(image)
    gpu = geoseg.load_model("builtin:demo-unet", device="cuda").predict_image(image)
    assert np.quantile(np.abs(gpu - cpu), 0.999) < 0.03 and np.abs(gpu - cpu).max() < 0.15
    assert (gpu.argmax(0) == cpu.argmax(0)).mean() > 0.99


def test_chunked_equals_whole_image_on_cuda(tmp_path):
    import dask

    from tests.conftest import write_zarr

    image = textured_image(300, 260, seed=4)
    model = geoseg.load_model("builtin:demo-unet", device="cuda")
    assert model.device.type == "cuda"
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image))
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(raster, model, output="probabilities", chunks=(128, 96), tile=128).values
    whole = model.predict_image(image)
    assert np.quantile(np.abs(probs - whole), 0.999) < 0.03 and np.abs(probs - whole).max() < 0.15
    assert (probs.argmax(0) == whole.argmax(0)).mean() > 0.995


def test_ensemble_combines_member_scores_on_the_gpu():
    """Members on CUDA: scores are combined there (one transfer back) and equal the CPU ensemble."""
    import torch

    from geoseg import Ensemble
    from geoseg.methods import Threshold

    image = textured_image(128, 128, seed=6)
    cpu_members = [geoseg.load_model("builtin:demo-unet", device="cpu")]
    gpu_members = [geoseg.load_model("builtin:demo-unet", device="cuda")]
    model = gpu_members[0]
    names = [c.name for c in model.classes]
    for members in (cpu_members, gpu_members):  # a classical member's one-hot scores join on the device
        members.append(Threshold(thresholds=(50, 100, 150, 200), feature="mean", class_names=tuple(names)))
    gpu, cpu = Ensemble(gpu_members, classes=names), Ensemble(cpu_members, classes=names)
    assert gpu.device.type == "cuda"
    batch = image[None].astype(np.float32)
    assert gpu.member_scores(0, batch).device.type == "cuda"
    assert gpu.member_scores(1, batch).device.type == "cuda"
    np.testing.assert_allclose(gpu.predict(batch), cpu.predict(batch), atol=0.05)
    assert torch.cuda.is_available()


def test_cuda_class_ids_agree_with_cpu_float32_on_a_photograph():
    """The whole device path (bf16, channels-last, device tiles and arg-max) against float32 on the
    CPU, on a real photograph, chunked as a job would."""
    import dask
    import xarray as xr
    from skimage import data

    raster = xr.DataArray(np.moveaxis(data.astronaut(), -1, 0), dims=("band", "y", "x"))
    ids = {}
    for device in ("cpu", "cuda"):
        model = geoseg.load_model("builtin:demo-unet", device=device)
        assert model.device.type == device  # a "cuda" run quietly on the CPU would agree too
        with dask.config.set(scheduler="sync"):
            ids[device] = geoseg.segment(raster, model, chunks=128).values
    assert (ids["cuda"] == ids["cpu"]).mean() >= 0.998


def test_a_tta_ensemble_runs_on_the_gpu_and_agrees_with_the_cpu():
    import dask
    import xarray as xr

    from geoseg import TTA, Ensemble

    image = textured_image(300, 260, seed=8)
    raster = xr.DataArray(image, dims=("band", "y", "x"))
    ids = {}
    for device in ("cpu", "cuda"):
        model = geoseg.load_model("builtin:demo-unet", device=device)
        segmenter = Ensemble([TTA(model, "flips"), model])
        assert segmenter.device.type == device
        with dask.config.set(scheduler="sync"):
            ids[device] = geoseg.segment(raster, segmenter, chunks=128).values
    assert (ids["cuda"] == ids["cpu"]).mean() >= 0.995


@pytest.mark.parametrize("dtype, nodata", [("uint16", 0.0), ("int16", -1024.0), ("float32", float("nan"))])
def test_stored_dtypes_and_nodata_cross_to_the_gpu(dtype, nodata):
    """Windows cross the bus in their stored dtype (uint16 has only basic CUDA kernels) and the
    no-data test runs there, with nodata as a float as readers report it."""
    assert ids_by_device(dtype, nodata, ("cpu", "cuda")) >= 0.998


def ids_by_device(dtype: str, nodata: float, devices: tuple[str, str]) -> float:
    """Segment one image stored as ``dtype`` on both ``devices``; return the share of pixels
    whose ids agree, after checking the no-data corner is ``nodata_class`` on both."""
    import dask
    import xarray as xr

    image = textured_image(256, 256, seed=3).astype(dtype)
    image[:, :40, :40] = nodata
    raster = xr.DataArray(image, dims=("band", "y", "x"), attrs={"nodata": nodata})
    ids = []
    for device in devices:
        model = geoseg.load_model("builtin:demo-unet", device=device)
        assert model.device.type == device.split(":")[0]
        with dask.config.set(scheduler="sync"):
            ids.append(geoseg.segment(raster, model, chunks=128).values)
        assert (ids[-1][:40, :40] == 255).all() and (ids[-1][40:, 40:] != 255).all()
    return float((ids[0] == ids[1]).mean())


@pytest.mark.parametrize("blend", ["crop", "gaussian"])
def test_a_job_on_the_local_gpu_worker_agrees_with_the_network_on_the_cpu(tmp_path, blend):
    """The job path on CUDA, which the tests above do not take: the local cluster's GPU worker
    (its CUDA_VISIBLE_DEVICES and GEOSEG_DEVICE), the model plugin loading onto the GPU, float16
    probabilities stored, and blended windows accumulated on the device."""
    import dask
    import zarr

    from geoseg.jobs import JobSpec, run
    from tests.conftest import write_zarr

    image = textured_image(384, 320, seed=9)
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(128, 128))
    out = tmp_path / f"{blend}.zarr"
    report = run(JobSpec.from_dict({
        "input": {"url": src}, "model": {"path": "builtin:demo-unet"},
        "inference": {"tile": 128, "blend": blend},
        "output": {"url": str(out), "chunks": [128, 128], "probabilities": True}}))
    assert report.provenance["resolved"]["device"] == ["cuda"]
    cpu = geoseg.load_model("builtin:demo-unet", device="cpu")
    with dask.config.set(scheduler="sync"):
        expected = geoseg.segment(xr_raster(image), cpu, output="probabilities", tile=128,
                                  blend=blend, chunks=128).values
    stored = zarr.open_group(str(out), mode="r")
    assert stored["probabilities"].dtype == np.float16
    probabilities = stored["probabilities"][:].astype(np.float32)
    assert np.quantile(np.abs(probabilities - expected), 0.999) < 0.03
    assert (stored["classes"][:] == expected.argmax(0)).mean() >= 0.995


def xr_raster(image: np.ndarray):
    import xarray as xr

    return xr.DataArray(image, dims=("band", "y", "x"))


@pytest.mark.parametrize("dtype", ["uint32", "uint64", "int64"])
def test_wide_integer_bands_cross_to_the_gpu(dtype):
    """The types CUDA has only basic kernels for (unsigned) or that cross as views of signed
    ones: moved, compared with the no data and normalised there as on the CPU."""
    assert ids_by_device(dtype, 0.0, ("cpu", "cuda")) >= 0.998


@pytest.mark.filterwarnings("ignore:segment\\(\\):UserWarning")  # values unlike the network's data
def test_a_gpu_ensemble_keeps_a_uint64_band_exact_for_its_threshold():
    """An ensemble on the GPU gives its threshold member the band's 64-bit integers there
    (views of uint64 on the device): values float64 rounds together are told apart."""
    import dask
    import xarray as xr

    from geoseg.methods import Threshold

    model = geoseg.load_model("builtin:demo-unet", device="cuda")
    names = tuple(c.name for c in model.classes)
    base = 2**63 + 1000
    image = np.full((3, 64, 96), base, np.uint64)
    image[:, :, 48:] += 1
    thresholds = (base,) + tuple(base + 10 + i for i in range(len(names) - 2))
    threshold = Threshold(thresholds=thresholds, feature=1, class_names=names)
    ensemble = geoseg.Ensemble([threshold, model], weights=[1, 0], classes=list(names))
    assert ensemble.device.type == "cuda"
    with dask.config.set(scheduler="sync"):
        ids = geoseg.segment(xr.DataArray(image, dims=("band", "y", "x")), ensemble,
                             chunks=64).values
    assert (ids[:, :48] == 0).all() and (ids[:, 48:] == 1).all()


def test_a_cleaned_network_runs_on_the_gpu_as_on_the_cpu():
    """A wrapper of a GPU network computes on the GPU (its regions prepared there, the GPU's
    turn taken) and cleans the same classes as on the CPU."""
    import dask

    from geoseg.methods import Cleaned, Cleanup

    image = textured_image(256, 256, seed=6)
    ids = {}
    for device in ("cpu", "cuda"):
        cleaned = Cleaned(geoseg.load_model("builtin:demo-unet", device=device), target=1,
                          steps=Cleanup(opening=1, max_object_size=20))
        assert cleaned.device.type == device
        with dask.config.set(scheduler="sync"):
            ids[device] = geoseg.segment(xr_raster(image), cleaned, chunks=128).values
    assert (ids["cuda"] == ids["cpu"]).mean() >= 0.995


def test_the_autocast_type_suits_the_gpu():
    """bf16 from Ampere on; float16 before, where cuDNN has no bf16 convolutions."""
    import torch

    from geoseg.models.model import inference_dtype

    model = geoseg.load_model("builtin:demo-unet", device="cuda")
    capability = torch.cuda.get_device_capability(model.device)
    with model._autocast():
        assert torch.get_autocast_dtype("cuda") == inference_dtype(capability)
