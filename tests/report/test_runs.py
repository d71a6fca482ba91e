"""Runs compared, and the reports geoseg run writes, on real runs of one runs folder."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.report.html import write_report
from geoseg.report.runs import differences, differing, find_run, list_runs
from tests.report.conftest import job


@pytest.fixture(scope="module")
def second_run(finished_run, client):
    """The same scene, other inference settings, run by ``geoseg run`` on the test cluster."""
    folder = Path(finished_run.output_url).parent
    # not a hex digit after "report-test-": the other record is "report-test-<hash>" and a name
    # that could begin its hash would match both records
    spec = job(folder, "report-test-other", out="mask-b.zarr", inference={"batch_size": 2})
    path = folder / "b.yaml"
    path.write_text(yaml.safe_dump(spec.redacted()))
    done = CliRunner().invoke(app, ["run", str(path), "--cluster", client.scheduler.address])
    assert done.exit_code == 0, done.output
    return done


@pytest.mark.timeout(120)
def test_geoseg_run_writes_the_html_report_beside_the_record(second_run, finished_run):
    runs = Path(finished_run.record_url).parent
    printed = second_run.output.replace("\n", "")
    reports = [p for p in runs.glob("*report-test-other*.html")]
    assert len(reports) == 1 and f"html report: {reports[0]}" in printed
    assert "<h2>Metrics</h2>" in reports[0].read_text(encoding="utf-8")


@pytest.mark.timeout(120)
def test_runs_lists_both_with_the_settings_that_differ(second_run, finished_run):
    folder = str(Path(finished_run.record_url).parent)
    found = list_runs(folder)
    assert [r["job"]["name"] for _, r in found] == ["report-test", "report-test-other"]
    keys = differing([r for _, r in found])
    assert "resolved.batch_size" in keys and "job.inference.batch_size" in keys
    assert "job.model.path" not in keys and "resolved.halo" not in keys  # the same in both
    write_report(finished_run.record_url)  # the first run came from Python: no report yet
    done = CliRunner().invoke(app, ["runs", "--dir", folder, "--html",
                                    str(Path(folder) / "index.html")], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    assert "report-test-other" in done.output and "batch_size=2" in done.output
    index = (Path(folder) / "index.html").read_text(encoding="utf-8")
    assert index.count('<a href="') == 2  # both runs have their report


@pytest.mark.timeout(120)
def test_compare_shows_every_difference_and_nothing_else(second_run, finished_run):
    folder = str(Path(finished_run.record_url).parent)
    a, b = find_run("0", folder), find_run("report-test-other", folder)
    changed = {k: (x, y) for k, x, y in differences(a[1], b[1])}
    assert changed["resolved.batch_size"][1] == 2
    assert changed["job.name"] == ("report-test", "report-test-other")
    assert not any(k.startswith(("started", "regions", "evaluation.confusion")) for k in changed)
    assert "model.sha256" not in changed  # the same model
    done = CliRunner().invoke(app, ["runs", "compare", "0", "1", "--dir", folder],
                              env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    assert "resolved.batch_size" in done.output and "mask-b.zarr" in done.output
    missing = CliRunner().invoke(app, ["runs", "compare", "0", "nothing-like-it", "--dir", folder])
    assert missing.exit_code != 0


@pytest.mark.timeout(180)
def test_geoseg_batch_writes_an_index_linking_each_jobs_report(tmp_path, client):
    from geoseg.demo import write_scene
    from geoseg.synth import make_scene

    for i in (1, 2):
        write_scene(make_scene(96, 128, seed=i), str(tmp_path / f"scene{i}.zarr"), chunks=64)
    spec = {"name": "nightly", "inputs": {"glob": str(tmp_path / "scene*.zarr")},
            "job": {"input": {"variable": "image"}, "model": {"path": "builtin:demo-unet"},
                    "output": {"chunks": [64, 64]}},
            "output": {"url_template": str(tmp_path / "out" / "{stem}-mask.zarr")},
            "concurrency": 1}  # two jobs of one model at once race on its worker plugin's name
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = CliRunner().invoke(app, ["batch", str(path), "--cluster", client.scheduler.address])
    assert done.exit_code == 0, done.output
    index = next((tmp_path / "out").glob("batch-nightly-*.html"))
    assert f"html report: {index}" in done.output.replace("\n", "")
    page = index.read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)">', page)
    assert len(links) == 2 and all((index.parent / link).is_file() for link in links)
    assert "scene1.zarr" in page and "scene2.zarr" in page


def test_a_row_shows_its_own_differing_settings_at_most_six_and_the_start_of_an_error():
    """With many runs of other methods, every row listed every setting that differed anywhere
    (mostly =None), a few characters per line: 2,300 lines at 80 columns."""
    from rich.console import Console

    from geoseg.report.runs import runs_table

    def record(name: str, params: dict, **extra: object) -> dict:
        return {"job": {"name": name, "model": {"params": params}}, "started": "2026-12-07",
                "model": {"name": "m"}, "input": {"url": "a.zarr", "shape": [3, 8, 8]}, **extra}

    many = {f"p{i}": i for i in range(9)}
    runs = [("a.json", record("many", many)),
            ("b.json", record("other", {"q": 1}, status="failed", error="E: " + "word " * 100))]
    console = Console(width=400, record=True)
    console.print(runs_table(runs))
    rows = {line.split("│")[3].strip(): line for line in console.export_text().splitlines()
            if line.count("│") > 5 and ("many" in line or "other" in line)}
    assert "p5=5" in rows["many"] and "p6=6" not in rows["many"]
    assert "+3 more (runs compare)" in rows["many"] and "q=" not in rows["many"]
    assert "q=1" in rows["other"] and "p0=" not in rows["other"]
    assert "failed: E: word" in rows["other"] and rows["other"].count("word") < 30


@pytest.mark.parametrize("made", ["nothing", "file"])
def test_a_runs_folder_that_is_missing_or_a_file_is_refused_not_listed_empty(tmp_path, made):
    """A file given as --dir was listed as a folder of 0 runs, exit 0."""
    from tests.cli import geoseg

    where = tmp_path / "runs"
    if made == "file":
        where.write_text("x")
    result = geoseg("runs", "--dir", str(where))
    said = " ".join(result.stderr.split())
    expected = "is a file, not a folder" if made == "file" else "does not exist"
    assert result.returncode == 2 and f"runs folder {where} {expected}" in said, said
    assert "0 run(s)" not in result.stdout


def test_names_from_records_and_scored_files_reach_tables_with_their_control_characters_escaped():
    """A job or class name holding escape codes cleared and recoloured the terminal a table was
    printed to, and a newline in one forged a row of its own."""
    from rich.console import Console

    from geoseg.report.runs import compare_table, runs_table
    from geoseg.report.tables import scores_table

    evil = "evil\x1b[2J\x1b]0;pwned\x07\nFAKE | 1.0 |"
    record = {"job": {"name": evil}, "started": "2026-12-07", "model": {"name": "m"},
              "input": {"url": "a.zarr", "shape": [3, 8, 8]}}
    row = {"iou": 0.5, "dice": 0.6, "precision": 0.7, "recall": 0.8, "support": 3, "predicted": 3}
    scores = {"per_class": {evil: row}, "miou": 0.5, "fwiou": 0.5, "overall_accuracy": 0.9,
              "pixels_scored": 3, "predicted_other": 0}
    for table in (runs_table([("a.json", record)]),
                  compare_table(("a.json", record), ("b.json", {**record, "job": {"name": "b"}})),
                  scores_table(scores)):
        console = Console(width=400, record=True, file=io.StringIO())
        console.print(table)
        text = console.export_text()
        assert "\x1b" not in text and "\x07" not in text, text
        assert "evil\\x1b[2J\\x1b]0;pwned\\x07\\x0aFAKE" in text.replace(" ", "").replace("│", "")
        assert not any(line.lstrip("│ ").startswith("FAKE") for line in text.splitlines())
