"""What a batch refuses, and how it says so: a hostile catalog, an output inside its input. Real
files, the real command; a dry run must refuse what the run would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr

CATALOG_SPEC = ('name: c\ninputs: {catalog: CATALOG, asset: visual}\n'
                'job: {model: {path: "builtin:demo-unet"}}\noutput: {url_template: "o/{id}.zarr"}\n')


@pytest.mark.parametrize(("content", "received"), [
    ("[" * 200_000 + "]" * 200_000, "nests arrays or objects 200000 levels deep; expected at most 256"),
    ('{"type": "FeatureCollection", "features": [', "is not JSON"),
])
def test_a_catalog_that_is_not_readable_json_is_refused_in_one_line(tmp_path, content, received):
    (tmp_path / "cat.json").write_text(content)
    spec = tmp_path / "cd.yaml"
    spec.write_text(CATALOG_SPEC.replace("CATALOG", "cat.json"))

    done = geoseg("batch", str(spec), "--dry-run")

    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: inputs.catalog: ") and "internal error" not in line
    assert f"{tmp_path / 'cat.json'} {received}" in line
    assert "expected a STAC FeatureCollection or ItemCollection" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["fifo", "device", "large"])
def test_a_catalog_that_is_a_fifo_a_device_or_too_large_is_refused_unread(tmp_path, kind):
    """A FIFO hung the batch for ever; /dev/zero was read until MemoryError."""
    import os

    catalog = tmp_path / "cat.json"
    if kind == "fifo":
        os.mkfifo(catalog)
    elif kind == "device":
        catalog.symlink_to("/dev/zero")
    else:
        catalog.write_text(json.dumps({"type": "FeatureCollection", "features": [], "pad": "x" * 3000}))
    spec = tmp_path / "cd.yaml"
    spec.write_text(CATALOG_SPEC.replace("CATALOG", "cat.json"))

    done = geoseg("batch", str(spec), "--dry-run", env={"GEOSEG_MAX_METADATA_BYTES": "2048"})

    assert done.returncode == 2, done.stderr
    said = {"fifo": "is a FIFO (named pipe), not a file", "device": "is a device, not a file",
            "large": "holds 3 KiB or more; the limit is 2048 (GEOSEG_MAX_METADATA_BYTES)"}[kind]
    assert f"error: inputs.catalog: {catalog} {said}" in " ".join(done.stderr.split())


def batch_spec(folder: Path, template: str) -> Path:
    spec = folder / "batch.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "inside", "inputs": {"glob": f"{folder}/in/*.zarr"},
        "job": {"model": {"method": "threshold", "params": {"thresholds": [128]}},
                "output": {"chunks": [32, 32]}},
        "output": {"url_template": template}, "cluster": {"kind": "threads"}}))
    return spec


def failures(stderr: str) -> dict[str, str]:
    """The error of each ``failed: INPUT -> OUTPUT (S s): ERROR`` line, by input name."""
    lines = [line.split(": ", 1)[1] for line in stderr.splitlines() if line.startswith("failed: ")]
    return {Path(line.split(" -> ")[0]).name: line.split("): ", 1)[1] for line in lines}


def test_a_dry_run_refuses_an_output_inside_its_zarr_input_as_the_run_does(tmp_path):
    for name, seed in (("a", 1), ("b", 2)):
        write_zarr(tmp_path / "in" / f"{name}.zarr", textured_image(64, 64, bands=1, seed=seed),
                   chunks=(32, 32))
    spec = batch_spec(tmp_path, f"{tmp_path}/in/{{name}}/mask.zarr")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    plan = geoseg("batch", str(spec), "--dry-run")

    assert plan.returncode == 1, plan.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    planned = failures(plan.stderr)
    assert set(planned) == {"a.zarr", "b.zarr"} and " new " not in plan.stderr
    assert all("JobSpecError" in e and "lies inside it" in e for e in planned.values()), planned

    done = geoseg("batch", str(spec))

    assert done.returncode == 1, done.stderr
    assert failures(done.stderr) == planned  # the same refusal, word for word
    [report] = (tmp_path / "in").glob("batch-inside-*.json")
    assert {i["state"] for i in json.loads(report.read_text())["items"]} == {"failed"}
    assert not list((tmp_path / "in").rglob("mask.zarr*"))  # no output, no lease in an input


def test_outputs_under_a_file_are_refused_before_any_job_not_after_every_one(tmp_path):
    """Each job failed on its own, then the report, written beside the outputs, ended the batch
    in an internal error, exit 1 and no report."""
    write_zarr(tmp_path / "in" / "a.zarr", textured_image(64, 64, bands=1, seed=1), chunks=(32, 32))
    (tmp_path / "afile").write_text("x")
    spec = batch_spec(tmp_path, f"{tmp_path}/afile/{{stem}}-mask.zarr")
    done = geoseg("batch", str(spec))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "internal error" not in said, done.stderr
    assert f"Cannot write {tmp_path}/afile/batch-inside-" in said
    assert f"{tmp_path}/afile is a file, not a folder" in said and "failed: " not in said


def test_a_job_that_fails_part_way_reports_the_chunks_it_wrote(tmp_path):
    """The report said 0 chunks computed for a failed job whose output held many of them."""
    from geoseg.io.output import OutputTarget

    src = write_zarr(tmp_path / "in" / "a.zarr", textured_image(256, 256, bands=1, seed=1),
                     chunks=(32, 32))
    (Path(src) / "c" / "0" / "7" / "7").write_bytes(b"not zstd")  # the last of 8 x 8 chunks
    spec = batch_spec(tmp_path, f"{tmp_path}/out/{{stem}}-mask.zarr")
    done = geoseg("batch", str(spec))
    assert done.returncode == 1 and "cannot decode" in done.stderr, done.stderr
    [report] = (tmp_path / "out").glob("batch-inside-*.json")
    [item] = json.loads(report.read_text())["items"]
    written = OutputTarget(str(tmp_path / "out" / "a-mask.zarr"), {}).count_done()
    assert item["state"] == "failed" and 0 < written < 64
    assert item["chunks_computed"] == written


def test_a_runs_folder_under_a_file_is_refused_once_before_any_job(tmp_path):
    """It was refused once per input, each job failing alike."""
    for name in ("a", "b"):
        write_zarr(tmp_path / "in" / f"{name}.zarr", textured_image(64, 64, bands=1), chunks=(32, 32))
    (tmp_path / "afile").write_text("x")
    spec = batch_spec(tmp_path, f"{tmp_path}/out/{{stem}}-mask.zarr")
    done = geoseg("batch", str(spec), env={"GEOSEG_RUNS_DIR": str(tmp_path / "afile" / "runs")})
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and said.count("is a file, not a folder") == 1, done.stderr
    assert said.startswith("error: runs_dir (GEOSEG_RUNS_DIR): Cannot write") and "failed: " not in said
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["report", "runs", "output"])
def test_records_inside_an_input_or_output_are_refused_before_any_job(tmp_path, where):
    """A report written into an input changed it: the next run found the input changed and
    planned to replace its output. Refused by the dry run as by the run, nothing written."""
    for name in ("a", "b"):
        write_zarr(tmp_path / "in" / f"{name}.zarr", textured_image(64, 64, bands=1), chunks=(32, 32))
    spec = batch_spec(tmp_path, f"{tmp_path}/out/{{stem}}-mask.zarr")
    data = yaml.safe_load(spec.read_text())
    inside = tmp_path / ("out/b-mask.zarr" if where == "output" else "in/a.zarr") / "records"
    env = {"GEOSEG_RUNS_DIR": str(inside)} if where == "runs" else {}
    if where != "runs":
        data["report"] = str(inside / "report.json")
    spec.write_text(yaml.safe_dump(data))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for flags in (["--dry-run"], []):
        done = geoseg("batch", str(spec), *flags, env=env)
        said = " ".join(done.stderr.split())
        assert done.returncode == 2 and "internal error" not in said, done.stderr
        setting = "runs_dir (GEOSEG_RUNS_DIR)" if where == "runs" else "report"
        kind = "output" if where == "output" else "input"
        assert f"{setting}: received {inside}" in said and f"batch's {kind} " in said, said
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_an_input_named_with_escape_codes_is_batched_and_shown_escaped(tmp_path):
    """Its name made the job's name, which refused control characters: a raw ValidationError
    for an input that is a valid raster; the progress lines printed the escape codes raw."""
    write_zarr(tmp_path / "in" / "evil\x1b[2Jx.zarr", textured_image(64, 64, bands=1, seed=1),
               chunks=(32, 32))
    spec = batch_spec(tmp_path, f"{tmp_path}/out/{{stem}}.zarr")

    done = geoseg("batch", str(spec))

    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr + done.stdout
    assert "evil\\x1b[2Jx.zarr" in done.stderr
    assert (tmp_path / "out" / "evil\x1b[2Jx.zarr").is_dir()


def test_a_catalog_item_with_an_empty_href_is_named(tmp_path):
    """An empty href resolved to the catalog's own folder: "it is a folder"."""
    catalog = tmp_path / "cat.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"id": "a", "assets": {"visual": {"href": ""}}}]}))
    spec = tmp_path / "cd.yaml"
    spec.write_text(CATALOG_SPEC.replace("CATALOG", "cat.json"))
    done = geoseg("batch", str(spec), "--dry-run")
    assert done.returncode == 2, done.stderr
    assert "item 'a' of" in done.stderr and "has an empty href for asset 'visual'" in done.stderr


def test_an_output_the_template_makes_refusable_names_the_input_not_pydantic(tmp_path):
    """A file:// template over an input named with '#' made an output key the job refuses; the
    batch showed it as "ValidationError: 1 validation error for OutputSpec ..."."""
    write_zarr(tmp_path / "in" / "a#1.zarr", textured_image(64, 64, bands=1, seed=1),
               chunks=(32, 32))
    done = geoseg("batch", str(batch_spec(tmp_path, f"file://{tmp_path}/out/{{stem}}.zarr")))
    assert done.returncode == 1, done.stderr
    [said] = failures(done.stderr).values()
    assert said.startswith("BatchSpecError: input a#1: its output (output.url_template): "), said
    assert "received a URL whose key holds '?' or '#'" in done.stderr
    assert "ValidationError" not in done.stderr and "pydantic" not in done.stderr
