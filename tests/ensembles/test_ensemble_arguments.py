"""What an Ensemble takes as members (model file references load, a lone segmenter is refused),
the README's ensemble example run as written, and the distance watershed's ``h`` checked."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.ensembles import Ensemble, EnsembleError
from geoseg.errors import InstanceError
from geoseg.instances.watershed import distance_watershed
from geoseg.methods import fit_threshold
from geoseg.models import SegmentationModel
from tests.conftest import random_unet, textured_image, write_zarr

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_members_given_as_model_file_references_are_loaded(model_path):
    ens = Ensemble([model_path, Path(model_path)])
    loaded = geoseg.load_model(model_path)
    assert all(isinstance(m, SegmentationModel) for m in ens.members)
    assert [c.name for c in ens.classes] == [c.name for c in loaded.classes]
    assert ens.ref().resolve().members[0].info == loaded.info
    image = textured_image(40, 36)
    np.testing.assert_array_equal(ens.predict_image(image), loaded.predict_image(image))


def test_builtin_references_are_loaded():
    ens = Ensemble(["builtin:demo-unet", "builtin:demo-unet"], combine="vote")
    assert [c.name for c in ens.classes] == [c.name for c in geoseg.load_model("builtin:demo-unet").classes]


@pytest.mark.parametrize("members", ["builtin:demo-unet", "model", None, 3])
def test_members_that_are_not_a_list_are_refused(members):
    members = random_unet() if members == "model" else members
    with pytest.raises(EnsembleError, match=r"members: a list of segmenters .* Ensemble\(\[model\]\)"):
        Ensemble(members)


def test_a_member_that_is_not_a_segmenter_is_refused():
    with pytest.raises(EnsembleError, match=r"member 1: a segmenter was expected; got int 3"):
        Ensemble([random_unet(), 3])


def _readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.DOTALL).group(1)


def test_the_readme_ensemble_example_runs_as_written(tmp_path, monkeypatch):
    for i, name in enumerate(("water-a", "water-b")):
        unet = random_unet(classes=2, bands=4, depth=1, width=4, seed=i)
        info = dataclasses.replace(unet.info, classes=(ClassInfo("land"), ClassInfo("water")))
        geoseg.save_model(SegmentationModel(unet.net, info, device="cpu"), str(tmp_path / f"{name}.safetensors"))
    raster = geoseg.open_raster(write_zarr(tmp_path / "scene.zarr", textured_image(48, 40, bands=4)))
    monkeypatch.chdir(tmp_path)
    names = {"geoseg": geoseg, "fit_threshold": fit_threshold, "raster": raster}
    exec(_readme_block("### Ensembles and test-time augmentation"), names)  # noqa: S102 (the README's own code)
    assert [c.name for c in names["ens"].classes] == ["land", "water"]
    mask = names["mask"].compute()
    assert mask.shape == (48, 40)
    assert set(np.unique(mask.values)) <= {0, 1}


@pytest.mark.parametrize("h", [-1, 0, 0.0, float("nan"), float("inf"), "2", None, True])
def test_distance_watershed_refuses_an_h_that_is_not_a_positive_number(h):
    mask = da.from_array(np.ones((8, 8), bool), chunks=4)
    with pytest.raises(InstanceError, match=r"expected a finite number > 0.*h=2\.0"):
        distance_watershed(mask, h=h)


def test_distance_watershed_takes_an_integer_h():
    mask = np.zeros((20, 20), bool)
    mask[3:10, 3:10] = mask[8:16, 8:18] = True
    labels, count = distance_watershed(da.from_array(mask, chunks=10), h=1)
    assert count >= 1
    assert (labels.compute() > 0).sum() == mask.sum()


def test_members_may_come_from_any_iterable():
    unet = random_unet(depth=1, width=4)
    assert len(Ensemble(m for m in (unet, unet)).members) == 2


def test_tta_of_what_is_not_a_segmenter_is_an_ensemble_error_and_of_a_path_loads_it(model_path):
    import geoseg
    from geoseg import TTA

    with pytest.raises(EnsembleError, match=r"TTA\(member\): a segmenter was expected; got NoneType"):
        TTA(None)
    assert TTA(model_path, transforms="flips").member.info.sha256 == \
        geoseg.load_model(model_path).info.sha256
