"""The HTML run report of a real run: self-contained, every section, written by the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.report.html import load_record, record_of, render_report, report_path, write_index
from tests.cli import geoseg
from tests.test_errors_cli import assert_clean


@pytest.mark.timeout(120)
def test_the_run_record_keeps_each_region(finished_run):
    record = load_record(finished_run.record_url)
    regions = record["regions"]
    assert len(regions) == finished_run.n_tasks == 12
    assert sum(r["pixels"] for r in regions) == 384 * 512
    assert all(r["seconds"] > 0 and r["done_s"] is not None for r in regions)
    assert max(r["done_s"] for r in regions) <= record["timings"]["compute_s"] + 0.01
    from geoseg.io.output import OutputTarget

    stored = OutputTarget(finished_run.output_url).attrs()["provenance"]
    assert "regions" not in stored and stored["run_record"] == finished_run.record_url


@pytest.mark.timeout(120)
def test_a_run_s_own_report_draws_no_quicklook_past_its_pixel_budget(finished_run, monkeypatch):
    """The picture reads every chunk of the output and the input: a run's report (as geoseg
    run writes it) leaves it out past the budget, saying how to draw it; asked, it is drawn."""
    from geoseg.report import quicklook

    record = load_record(finished_run.record_url)
    pixels = math.prod(record["input"]["shape"][1:])
    built = []
    monkeypatch.setattr(quicklook, "build", lambda *a, **k: built.append(a) or pytest.fail("read"))
    page = render_report(record, quicklook_pixels=pixels - 1)
    assert not built and 'id="quicklook"' not in page
    assert f"geoseg quicklook {record['output']['url']} quicklook.png" in page
    monkeypatch.undo()
    assert 'id="quicklook"' in render_report(record, quicklook_pixels=pixels)
    assert 'id="quicklook"' in render_report(record, quicklook_pixels=None)


@pytest.mark.timeout(120)
def test_the_page_is_self_contained_and_has_every_section(finished_run):
    page = render_report(load_record(finished_run.record_url))
    for heading in ("Quicklook", "Metrics", "Confusion matrix", "Chunks", "Throughput",
                    "Provenance"):
        assert f"<h2>{heading}</h2>" in page
    assert 'id="metrics-table"' in page and "mIoU" in page
    load = finished_run.provenance["timings"]["model_load_s"]
    assert f"<td>seconds (loading models on the workers)</td><td>{load:.4f}</td>" in page
    # every class of the scene scored and drawn: nothing left out, nothing to say so
    assert 'id="confusion-note"' not in page and 'id="absent-classes"' not in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    assert finished_run.provenance["model"]["sha256"] in page


@pytest.mark.timeout(120)
def test_geoseg_report_writes_beside_the_record_and_shows_eval_scores(finished_run, tmp_path):
    runner = CliRunner()
    scores = tmp_path / "scores.json"
    done = runner.invoke(app, ["eval", finished_run.output_url, finished_run.output_url.replace(
        "mask.zarr", "scene.zarr"), "--ref-variable", "labels", "--json", str(scores)])
    assert done.exit_code == 0, done.output
    made = runner.invoke(app, ["report", finished_run.output_url, "--scores", str(scores)])
    assert made.exit_code == 0, made.output
    where = report_path(finished_run.record_url)
    assert f"html report: {where}" in made.output.replace("\n", "")
    page = Path(where).read_text(encoding="utf-8")
    assert "fwiou" in page and "precision" in page
    # the run scored itself with the same reference: one confusion matrix, two ways
    assert json.loads(scores.read_text())["confusion"] == \
        load_record(finished_run.record_url)["evaluation"]["confusion"]
    assert record_of(finished_run.record_url) == finished_run.record_url


@pytest.mark.timeout(120)
def test_geoseg_report_reads_scores_from_an_object_store(finished_run, tmp_path, s3_server,
                                                          monkeypatch):
    """--scores was a local path: ``s3://bucket/scores.json``, which eval --json writes, became
    ``s3:/bucket/scores.json`` and was not found."""
    import fsspec

    done = CliRunner().invoke(app, ["eval", finished_run.output_url, finished_run.output_url.replace(
        "mask.zarr", "scene.zarr"), "--ref-variable", "labels", "--json", str(tmp_path / "s.json")])
    assert done.exit_code == 0, done.output
    fs = fsspec.filesystem("s3", **s3_server)
    fs.pipe("geoseg/scores/s.json", (tmp_path / "s.json").read_bytes())
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["client_kwargs"]["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    out = tmp_path / "r.html"
    made = geoseg("report", finished_run.output_url, "--scores", "s3://geoseg/scores/s.json",
                  "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    assert "fwiou" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("record", ["{}", '{"job": 5}', '{"job": {}, "input": []}'])
def test_geoseg_report_refuses_json_that_is_not_a_run_record(tmp_path, record):
    (tmp_path / "e.json").write_text(record)
    result = geoseg("report", str(tmp_path / "e.json"))
    assert_clean(result, 2, f"{tmp_path / 'e.json'} is not a geoseg run record (no ",
                 "give a run record from the runs folder")


@pytest.mark.timeout(120)
def test_geoseg_report_replaces_a_file_at_out_only_with_overwrite(finished_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    refused = geoseg("report", finished_run.output_url, "--out", str(notes))
    assert_clean(refused, 2, f"{notes} already exists", "--overwrite")
    assert notes.read_text() == "keep"
    made = geoseg("report", finished_run.output_url, "--out", str(notes), "--overwrite")
    assert made.returncode == 0, made.stderr
    assert "<html" in notes.read_text(encoding="utf-8")
    again = geoseg("report", finished_run.output_url)  # its own page beside the record: rewritten
    assert again.returncode == 0, again.stderr


def test_index_links_reports_relative_to_itself(tmp_path):
    (tmp_path / "runs").mkdir()
    rows = [("a.tif", {"evaluation": {"miou": 0.5}, "pixels": 4}, str(tmp_path / "runs" / "a.html")),
            ("b.tif (failed)", None, None)]
    index = write_index(rows, str(tmp_path / "index.html"), "batch x")
    page = Path(index).read_text(encoding="utf-8")
    assert 'href="runs/a.html"' in page and "b.tif (failed)" in page and "0.5000" in page
