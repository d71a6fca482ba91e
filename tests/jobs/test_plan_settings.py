"""The job spec's tiling settings reach the Plan per axis; a halo with a blend fails before any compute."""

from __future__ import annotations

import pytest
import yaml

from geoseg.errors import JobSpecError, PlanError
from geoseg.jobs import JobSpec, prepare
from tests.conftest import textured_image, write_zarr


def _spec(tmp_path, inference: dict) -> JobSpec:
    url = str(tmp_path / "in.zarr")
    if not (tmp_path / "in.zarr").exists():
        write_zarr(url, textured_image(96, 80, seed=2), chunks=(32, 32))
    return JobSpec.from_dict({"input": {"url": url}, "model": {"method": "threshold",
                                                               "params": {"thresholds": [100], "feature": 1}},
                              "output": {"url": str(tmp_path / "out.zarr"), "chunks": [32, 32]},
                              "inference": inference})


def test_a_per_axis_halo_and_tile_reach_the_plan_per_axis(tmp_path):
    prepared = prepare(_spec(tmp_path, {"tile": [32, 48], "halo": [3, 5]}))
    assert prepared.work.tiling.halo == (3, 5) and prepared.work.tiling.tile == (32, 48)
    assert prepared.inner_chunks == (32, 32) and prepared.layout.shards == (32, 32)
    assert prepare(_spec(tmp_path, {"halo": 4})).work.tiling.halo == (4, 4)


@pytest.mark.parametrize("halo", [-1, [1, 2, 3, 4], [], [4]])
def test_a_halo_that_is_no_int_per_axis_is_a_spec_error(tmp_path, halo):
    with pytest.raises(JobSpecError, match="halo"):
        _spec(tmp_path, {"halo": halo})


def test_a_halo_of_the_wrong_axis_count_names_the_key(tmp_path):
    with pytest.raises(PlanError, match=r"inference: halo has 3 values .* 2 spatial axes"):
        prepare(_spec(tmp_path, {"halo": [1, 2, 3]}))


def test_a_halo_with_a_blend_fails_before_any_compute(tmp_path):
    with pytest.raises(PlanError, match=r"inference: halo=8 was given with blend='gaussian'"):
        prepare(_spec(tmp_path, {"halo": 8, "blend": "gaussian"}))
    assert prepare(_spec(tmp_path, {"halo": 0, "blend": "gaussian"})).work.tiling.blend == "gaussian"


@pytest.mark.parametrize("tile, said", [
    (".inf", "inference.tile: received inf (float); expected a finite number, or a valid tuple."),
    ("[512, abc]", "inference.tile.1: received 'abc' (str)"),
])
def test_a_value_fitting_no_alternative_of_a_field_is_one_problem_under_its_key(tmp_path, tile, said):
    """Not one line per alternative of ``int | tuple[int, ...]``, keyed by pydantic's type tags
    (``inference.tile.int``, ``inference.tile.tuple[int, ...]``)."""
    from geoseg.jobs import load_job

    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{url: in.zarr}}\nmodel: {{method: otsu}}\noutput: {{url: out.zarr}}\n"
                   f"inference: {{tile: {tile}}}\n")
    with pytest.raises(JobSpecError) as refused:
        load_job(job)
    text = str(refused.value)
    assert said in text and "tile.int" not in text and "tuple[int" not in text, text


@pytest.mark.parametrize("output, warned", [
    ({"chunks": [32, 32]}, True),
    ({"chunks": [32, 32], "shards": [256, 256]}, False),  # the fix the warning gives
    ({"chunks": [256, 256]}, False),
])
def test_many_small_tasks_are_warned_of_with_shards_as_the_fix(tmp_path, output, warned):
    """1,225 tasks of 32 x 32 pixels: about 10 ms each whatever their size."""
    from tests.cli import geoseg

    url = str(tmp_path / "in.zarr")
    write_zarr(url, textured_image(1100, 1100, bands=1), chunks=(256, 256))
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "input": {"url": url}, "model": {"method": "threshold", "params": {"thresholds": [100]}},
        "output": {"url": str(tmp_path / "out.zarr"), **output}}))
    said = " ".join(geoseg("validate", str(spec)).stderr.split())
    expected = ("Output chunks [32, 32] make 1225 tasks of 1024 pixels each; a task costs about "
                "10 ms whatever its size. Keep the chunks and add output.shards: [256, 256]")
    assert (expected in said) == warned, said
