"""Batches over awkward file names, on a threads cluster: names holding glob characters (each
file opened as itself), a newline (one log line per input), names too long for the file system
(refused, in the plan too); and the spec's refusals of a formatted placeholder and a NaN lease."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine

from geoseg.errors import BatchSpecError, OutputLocationError
from geoseg.io import mosaic
from geoseg.jobs import JobSpec, run
from geoseg.jobs.batch import run_batch
from geoseg.jobs.batch_spec import BatchSpec
from geoseg.jobs.lease import Lease, LocalStore, check_name_lengths
from tests.conftest import CRS, TRANSFORM

THRESHOLD = 128
MODEL = {"method": "threshold", "params": {"thresholds": [THRESHOLD]}}


def tif(path: Path, value: int, *, east: int = 0) -> str:
    """A 1-band 32 x 32 GeoTIFF of ``value``, ``east`` pixels east of the tests' grid origin."""
    transform = TRANSFORM @ Affine.translation(east, 0)
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8",
                       crs=CRS, transform=transform) as dst:
        dst.write(np.full((1, 32, 32), value, np.uint8))
    return str(path)


def spec(inputs: dict, template: str, **extra) -> BatchSpec:
    return BatchSpec.from_dict({
        "name": "review", "inputs": inputs, "output": {"url_template": template},
        "job": {"model": MODEL, "output": {"chunks": [32, 32]}}, "cluster": {"kind": "threads"},
        **extra})


def provenance_input(output: str) -> str:
    return zarr.open_group(output, mode="r").attrs["geoseg"]["provenance"]["job"]["input"]["url"]


def test_each_file_a_glob_finds_is_opened_as_itself_though_its_name_holds_glob_characters(
        tmp_path):
    """``scene*.tif`` was re-globbed into a mosaic with its neighbour (a 32 x 64 output of both);
    ``br[1].tif`` matched nothing and failed."""
    scenes = tmp_path / "in"
    scenes.mkdir()
    tif(scenes / "scene*.tif", 200)
    tif(scenes / "scene-east.tif", 10, east=32)
    tif(scenes / "br[1].tif", 200)
    tif(scenes / "q?x.tif", 10)

    report = run_batch(spec({"glob": f"{scenes}/*.tif"}, f"{tmp_path}/out/{{stem}}.zarr"))

    assert {Path(i.input).name: i.state for i in report.items} == dict.fromkeys(
        ["scene*.tif", "scene-east.tif", "br[1].tif", "q?x.tif"], "done"), report.items
    for item in report.items:
        classes = zarr.open_group(item.output, mode="r")["classes"][:]
        bright = Path(item.input).name in ("scene*.tif", "br[1].tif")
        np.testing.assert_array_equal(classes, np.full((32, 32), int(bright), np.uint8))
        assert provenance_input(item.output) == item.input  # its true name, not a pattern


def test_a_job_whose_input_url_names_an_existing_file_with_brackets_opens_that_file(tmp_path):
    """An existing file is itself, not a pattern (``br[1].tif`` would match only ``br1.tif``);
    a pattern naming no file is still one."""
    tif(tmp_path / "br[1].tif", 200)
    tif(tmp_path / "br1.tif", 10, east=32)
    out = tmp_path / "out.zarr"
    job = {"input": {"url": str(tmp_path / "br[1].tif")}, "model": MODEL,
           "output": {"url": str(out), "chunks": [32, 32]}}

    run(JobSpec.from_dict(job), cluster="threads")

    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["classes"][:],
                                  np.ones((32, 32), np.uint8))
    assert mosaic.is_glob(str(tmp_path / "br[0-9].tif"))
    assert not mosaic.is_glob(str(tmp_path / "br[1].tif"))
    assert not mosaic.is_glob(f"file://{tmp_path}/br[1].tif")


def test_a_remote_file_a_listing_found_is_taken_literally_and_no_other():
    url = "s3://bucket/review/scene[2].tif"
    assert mosaic.is_glob(url)
    mosaic.take_literally([url])
    assert not mosaic.is_glob(url)
    assert mosaic.is_glob("s3://bucket/review/scene[3].tif")


def test_a_newline_in_an_input_name_keeps_each_log_line_whole(tmp_path):
    scenes = tmp_path / "in"
    scenes.mkdir()
    tif(scenes / "nl\nname.tif", 200)
    said: list[str] = []

    report = run_batch(spec({"glob": f"{scenes}/*.tif"}, f"{tmp_path}/out/{{stem}}.zarr"),
                       log=said.append)

    assert [i.state for i in report.items] == ["done"]
    assert all("\n" not in line for line in said), said
    assert any(line.startswith("done: ") and "nl\\x0aname.tif" in line for line in said), said


def test_an_output_name_too_long_for_the_file_system_is_refused_in_the_plan_and_the_run(tmp_path):
    """The dry run said ``new``; the run failed with a raw ``OSError: [Errno 36] File name too
    long`` making the lease's temporary file."""
    scenes = tmp_path / "in"
    scenes.mkdir()
    long = "x" * 240  # its output, x...x.zarr, fits; the lease beside it does not
    tif(scenes / f"{long}.tif", 200)
    batch = spec({"glob": f"{scenes}/*.tif"}, f"{tmp_path}/out/{{stem}}.zarr")

    for dry_run in (True, False):
        [item] = run_batch(batch, dry_run=dry_run).items
        assert item.state == "failed", item
        assert item.error.startswith("OutputLocationError: The output "), item.error
        assert "at most 255 bytes per file or folder name" in item.error
        assert "Use a shorter output name" in item.error
    assert not (tmp_path / "out" / f"{long}.zarr").exists()


def test_a_lease_whose_name_fits_is_written_through_a_temporary_file_whose_name_fits_too(
        tmp_path):
    """The temporary file was the lease's name with 37 characters more: a lease of 220-odd
    bytes, allowed, could never be taken."""
    output = tmp_path / ("y" * (255 - len(".zarr.lease.swap")) + ".zarr")
    check_name_lengths(str(output))  # the longest name allowed

    lease = Lease(str(output), owner="me", seconds=60)
    assert lease.acquire()
    assert Path(lease.url).is_file()
    lease.release()
    assert sorted(os.listdir(tmp_path)) == []


def test_a_lease_file_of_the_longest_name_is_created_and_replaced(tmp_path):
    """Its temporary file was named as the lease, 37 bytes longer: ``File name too long``."""
    store = LocalStore(str(tmp_path / ("z" * 244 + ".lease")))  # 250 bytes, .swap 255
    assert store.create(b"{}") == b"{}"
    assert store.swap(b"[]", b"{}") == b"[]"
    assert store.read() == (b"[]", b"[]")
    assert len(os.listdir(tmp_path)) == 1  # no temporary file left


def test_a_folder_name_too_long_is_refused_naming_the_folder(tmp_path):
    with pytest.raises(OutputLocationError, match="a folder in its path"):
        check_name_lengths(f"{tmp_path}/{'f' * 256}/out.zarr")
    check_name_lengths(f"s3://bucket/{'f' * 300}/out.zarr")  # no such limit there


@pytest.mark.parametrize("report", ["r/{run!r}.json", "r/{run:>99999999}.json",
                                    "r/{run!s:>4}.json"])
def test_a_placeholder_with_a_conversion_or_format_spec_is_refused_as_such(tmp_path, report):
    with pytest.raises(BatchSpecError) as refused:
        spec({"urls": ["a.tif"]}, "out/{stem}.zarr", report=report)
    said = " ".join(str(refused.value).split())
    assert "without a conversion (!r) or format spec (:>10)" in said, said
    assert "; write {run}" in said


def test_an_unknown_placeholder_is_still_refused_naming_the_allowed_ones():
    with pytest.raises(BatchSpecError, match=r"placeholders \{run\}, \{started\} only "
                                             r"\(found \{user\}\)"):
        spec({"urls": ["a.tif"]}, "out/{stem}.zarr", report="r/{user}.json")


@pytest.mark.parametrize("seconds", [".nan", ".inf"])
def test_a_lease_of_nan_or_infinite_seconds_is_refused_as_not_a_number(seconds):
    import yaml

    with pytest.raises(BatchSpecError) as refused:
        spec({"urls": ["a.tif"]}, "out/{stem}.zarr", lease_seconds=yaml.safe_load(seconds))
    said = " ".join(str(refused.value).split())
    assert "lease_seconds: received" in said and "expected a finite number" in said, said
