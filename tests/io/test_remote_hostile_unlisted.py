"""An output read over HTTP from a server without folder listings: its manifest cannot be
listed, which read as "its manifest records 0 of the 4 task region(s)" (damaged)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from geoseg.io.integrity import damage, damage_found
from geoseg.io.output import OutputTarget
from tests.conftest import textured_image, write_zarr
from tests.io.test_remote import CountingServer, serving


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 64 x 64 output of 4 task regions, and a copy missing one manifest entry."""
    from geoseg.jobs import JobSpec, run

    root = tmp_path_factory.mktemp("www-unlisted")
    write_zarr(root / "in.zarr", textured_image(64, 64, bands=1, seed=2), chunks=(32, 32))
    run(JobSpec.from_dict({"input": {"url": str(root / "in.zarr")},
                           "model": {"method": "threshold", "params": {"thresholds": [128]}},
                           "output": {"url": str(root / "one.zarr"), "chunks": [32, 32]}}),
        scheduler="threads")
    shutil.copytree(root / "one.zarr", root / "gap.zarr")
    (root / "gap.zarr" / "manifest_done" / "c" / "1" / "1").unlink()
    return root


@pytest.fixture
def unlisted(www: Path) -> Iterator[CountingServer]:
    server = CountingServer(www)
    server.listings = False
    with serving(server):
        yield server


def attrs_of(url: str) -> dict:
    return OutputTarget(url).attrs()


def test_an_unlisted_output_is_not_called_damaged(unlisted):
    url = f"{unlisted.url}/one.zarr"
    attrs = attrs_of(url)
    assert attrs["n_chunks"] == 4
    assert damage(OutputTarget(url), attrs, "nothing was scored") is None
    assert damage_found(OutputTarget(url), attrs) is None


def test_a_missing_manifest_entry_is_still_found_unlisted(unlisted):
    url = f"{unlisted.url}/gap.zarr"
    said = damage(OutputTarget(url), attrs_of(url), "nothing was scored")
    assert said is not None and "its manifest records 3 of the 4 task region(s)" in said, said


def test_a_job_reads_a_zarr_input_from_a_server_without_listings(unlisted, tmp_path):
    """The input's identity lists its objects: aiohttp's 403 for the folder ended the job with an
    internal error. It now says the chunks were not listed, and the run completes."""
    from geoseg.jobs import JobSpec, run

    report = run(JobSpec.from_dict({
        "input": {"url": f"{unlisted.url}/in.zarr"},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(tmp_path / "out.zarr"), "chunks": [32, 32]},
        "runs_dir": str(tmp_path / "runs")}), scheduler="threads")
    identity = report.provenance["input"]["identity"]
    assert identity["chunks"] == "not listed (its HTTP server lists no folders)", identity
