"""What a report shows is the run's own: a batch index row only the figures and report of the run
that batch made of the input, a resumed run's chunk maps on the whole task grid, and no picture
of an output that another job has since overwritten. Small real threshold jobs on threads."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.jobs import JobSpec, run
from geoseg.jobs.batch import run_batch
from geoseg.jobs.batch_spec import BatchSpec
from geoseg.report.html import load_record, render_report, write_batch_index
from tests.conftest import textured_image, write_zarr


def threshold_job(folder: Path, threshold: int, *, name: str = "plain", size: int = 64,
                  chunks: int = 32) -> dict:
    """A job spec thresholding ``folder``/in.zarr (made if missing) into ``folder``/out.zarr."""
    if not (folder / "in.zarr").exists():
        write_zarr(folder / "in.zarr", textured_image(size, size, bands=1, seed=3),
                   chunks=(chunks, chunks))
    return {"name": name, "input": {"url": str(folder / "in.zarr")},
            "model": {"method": "threshold", "params": {"thresholds": [threshold]}},
            "output": {"url": str(folder / "out.zarr"), "chunks": [chunks, chunks]}}


def index_rows(index: str) -> list[dict[str, str]]:
    """The batch index's rows, each cell's text by its column's name, ``link`` its report link."""
    page = Path(index).read_text(encoding="utf-8")
    table = re.search(r"<table id='jobs'>(.*?)</table>", page).group(1)
    header, *rows = re.findall(r"<tr>(.*?)</tr>", table)
    names = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", header)]
    found = []
    for row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        text = {n: html.unescape(re.sub(r"<[^>]+>", "", c)) for n, c in zip(names, cells)}
        link = re.search(r'href="([^"]+)"', row)
        found.append({**text, "link": link.group(1) if link else None})
    return found


@pytest.mark.timeout(120)
def test_a_batch_index_row_shows_only_the_run_this_batch_made_of_its_input(tmp_path):
    other = threshold_job(tmp_path, 100, name="other")
    run(JobSpec.from_dict(other), scheduler="threads")  # the output: another job's
    data = {"name": "nightly", "inputs": {"urls": [other["input"]["url"]]},
            "job": {"model": {"method": "threshold", "params": {"thresholds": [128]}},
                    "output": {"chunks": [32, 32]}},
            "output": {"url_template": other["output"]["url"]}, "cluster": {"kind": "threads"}}
    spec = BatchSpec.from_dict(data)

    refused = run_batch(spec)  # made by a different job: failed, the other job's output kept
    assert refused.items[0].state == "failed"
    [row] = index_rows(write_batch_index(refused))
    assert row["state"] == "failed" and row["link"] is None
    assert (row["model"], row["pixels computed"], row["Mpx/s"]) == ("-", "-", "-")
    assert "made by a different job" in row["note"]
    assert [p.name for p in tmp_path.glob("*.html")] == [Path(refused.url).stem + ".html"]

    done = run_batch(spec, overwrite=True)
    [row] = index_rows(write_batch_index(done))
    assert (row["state"], row["chunks computed"], row["pixels computed"]) == ("done", "4", "4096")
    assert row["model"] != "-" and row["link"] and row["note"] == ""
    page = (tmp_path / row["link"]).read_text(encoding="utf-8")
    assert "geoseg run: nightly/in" in page  # the batch's job, not the other one

    skipped = run_batch(spec)
    assert skipped.items[0].state == "skipped"
    [again] = index_rows(write_batch_index(skipped))
    assert (again["state"], again["chunks computed"], again["pixels computed"]) == \
        ("skipped", "0", "-")
    assert again["model"] == "-" and again["Mpx/s"] == "-"
    assert again["report"] == "earlier run's report" and again["link"] == row["link"]
    assert again["note"].startswith("already done by an earlier run (started ")


def dense_runs(picture: np.ndarray) -> list[tuple[int, int]]:
    """The runs of image rows (start, stop) holding coloured pixels (the viridis map; the
    hatching, the text and the axes are grey) in the figure's left quarter, left of the
    colour bar."""
    left = picture[:, : picture.shape[1] // 3].astype(int)
    coloured = (left.max(2) - left.min(2) > 60).sum(1) > 20
    edges = np.flatnonzero(np.diff(np.r_[0, coloured.astype(int), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


@pytest.mark.timeout(120)
def test_a_resumed_run_s_chunk_maps_draw_the_whole_task_grid(tmp_path):
    import zarr

    data = threshold_job(tmp_path, 128, size=128, chunks=16)  # an 8 x 8 task grid
    run(JobSpec.from_dict(data), scheduler="threads")
    manifest = zarr.open_group(data["output"]["url"], mode="r+")["manifest_done"]
    manifest[[1, 2, 3, 5, 6, 7], :] = False  # as if a killed run had written rows 0 and 4 only
    resumed = run(JobSpec.from_dict(data), scheduler="threads")
    assert (resumed.n_tasks, resumed.skipped) == (48, 16)

    page = render_report(load_record(resumed.record_url))
    assert ("8 x 8 task regions; 48 computed by this run, 16 not (done before this run, or not "
            "recorded): hatched.") in page
    maps = re.search(r'alt="chunk maps" src="data:image/png;base64,([^"]+)"', page).group(1)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(maps))).convert("RGB"))
    (top, gap), (after, bottom) = dense_runs(picture)  # rows 1-3 and 5-7, row 4 between
    row = (gap - top) / 3
    assert abs((bottom - after) - 3 * row) <= 2 and abs((after - gap) - row) <= 2
    # row 0 above them, hatched: grey and white, no colour
    band = picture[int(top - row) + 2: top - 2, : picture.shape[1] // 3]
    assert (band.max(2) - band.min(2) < 20).all() and (band.min(2) < 230).any()


@pytest.mark.timeout(120)
def test_the_report_of_a_run_whose_output_another_job_overwrote_draws_no_quicklook(tmp_path):
    first = run(JobSpec.from_dict(threshold_job(tmp_path, 128, name="first")), scheduler="threads")
    page = render_report(load_record(first.record_url))
    assert 'id="quicklook"' in page and 'id="output-replaced"' not in page

    second = run(JobSpec.from_dict(threshold_job(tmp_path, 100, name="second")),
                 scheduler="threads", overwrite=True)
    stale = render_report(load_record(first.record_url))
    assert 'id="quicklook"' not in stale
    warning = re.search(r'<p class="warn" id="output-replaced">([^<]*)</p>', stale).group(1)
    assert "now holds another job's result (job second), not this run's" in html.unescape(warning)
    assert 'id="quicklook"' in render_report(load_record(second.record_url))  # its own: drawn


@pytest.mark.parametrize(("edit", "said"), [
    (lambda r: r.update(started=5), "its started is a number 5, expected a string"),
    (lambda r: r["output"].update(url=5), "its output.url is a number 5, expected a string"),
    (lambda r: r["input"].update(shape="[/]"), "its input.shape is a string '[/]', expected a list"),
    (lambda r: r.update(evaluation={"miou": "x"}), "its evaluation is an object"),
    (lambda r: r.update(regions=["x"]), "its regions is an array ['x'], expected a list of objects"),
])
def test_a_record_whose_fields_are_not_what_a_run_writes_is_refused_naming_the_field(
        tmp_path, edit, said):
    """An edited record ended `geoseg report` with an internal error (AttributeError: 'int' has no
    attribute 'replace', KeyError: 'classes', ...) wherever the page first used the field."""
    import json

    from geoseg.errors import EvaluationError

    report = run(JobSpec.model_validate({**threshold_job(tmp_path, 128), "cluster": {"kind": "threads"},
                                         "runs_dir": str(tmp_path / "runs")}))
    render_report(load_record(report.record_url))  # the record as the run wrote it is read
    record = json.loads(Path(report.record_url).read_text())
    edit(record)
    Path(report.record_url).write_text(json.dumps(record))
    with pytest.raises(EvaluationError, match=re.escape(said)):
        load_record(report.record_url)
