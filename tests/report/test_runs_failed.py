"""Failed and interrupted runs leave a run record too: the runs folder lists the night's
failures beside its successes, and their report says how they ended."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.errors import CorruptInputError
from geoseg.io.output import OutputTarget
from geoseg.jobs import JobSpec, run
from geoseg.report.html import load_record, render_report
from geoseg.report.runs import list_runs
from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr


def spec(folder: Path, name: str) -> JobSpec:
    return JobSpec.from_dict({
        "name": name, "input": {"url": str(folder / f"{name}.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(folder / f"{name}-out.zarr"), "chunks": [32, 32]},
        "runs_dir": str(folder / "runs")})


def test_failed_and_interrupted_runs_are_listed_with_how_they_ended(tmp_path):
    for name in ("ok", "broken", "stopped"):
        write_zarr(tmp_path / f"{name}.zarr", textured_image(128, 128, bands=1), chunks=(32, 32))
    run(spec(tmp_path, "ok"), scheduler="threads")
    (tmp_path / "broken.zarr" / "c" / "0" / "2" / "3").write_bytes(b"not zstd at all" * 10)
    with pytest.raises(CorruptInputError):
        run(spec(tmp_path, "broken"), scheduler="threads")

    def stop_after_two(stats, seen=[]):  # noqa: B006 - counts this run's regions
        seen.append(stats)
        if len(seen) == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run(spec(tmp_path, "stopped"), scheduler="threads", on_done=stop_after_two)

    found = list_runs(str(tmp_path / "runs"))
    assert {r["job"]["name"]: r["status"] for _, r in found} == {
        "ok": "complete", "broken": "failed", "stopped": "interrupted"}
    # the listing keeps what the table shows; the records themselves, as `report` reads them
    records = {r["job"]["name"]: load_record(where) for where, r in found}
    assert set(records) == {"ok", "broken", "stopped"}
    assert records["ok"]["status"] == "complete" and records["ok"]["chunks"]["computed"] == 16
    assert records["broken"]["status"] == "failed"
    assert records["broken"]["error"].startswith("CorruptInputError: input window")
    assert records["stopped"]["status"] == "interrupted"
    assert records["stopped"]["error"] == "interrupted (SIGINT)"
    # the two whose results came back, and any its other threads wrote while it stopped
    written = OutputTarget(str(tmp_path / "stopped-out.zarr")).count_done()
    assert records["stopped"]["chunks"] == {"total": 16, "computed": written, "skipped_as_done": 0}
    assert written >= 2
    listed = " ".join(geoseg("runs", "--dir", str(tmp_path / "runs")).stdout.split())
    assert "failed: CorruptInputError" in listed and "interrupted: interrupted (SIGINT)" in listed
    page = render_report(records["stopped"])
    assert 'id="run-status"' in page and f"computed {written} of 16 task regions" in page
    for name in ("broken", "stopped"):  # the records as read from their files, as `report` reads
        [record] = (tmp_path / "runs").glob(f"*-{name}-*.json")
        assert records[name]["timings"]["compute_s"] is None
        assert 'id="run-status"' in render_report(load_record(str(record)))
