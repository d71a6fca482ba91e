"""Reports and indexes of records a reviewer made hostile or extreme, from real runs' records: file
and folder names that read as URLs, names of 10,000 letters, fields a few bytes long that cost
gigabytes, an all-no-data input, a task grid one region high. Links and widths as Chromium
shows them."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.errors import EvaluationError
from geoseg.jobs import JobSpec, run
from geoseg.report.html import load_record, render_report, write_index, write_report
from tests.conftest import textured_image, write_geotiff, write_zarr
from tests.report.browser import chromium, find_chromium

browser = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (make browser installs Debian's chromium as root; "
           "elsewhere: apt-get install chromium)")


def threshold_run(folder: Path, image: np.ndarray, *, chunks: int = 32, nodata: bool = False,
                  name: str = "plain") -> str:
    """A real threshold run of ``image`` (bands, rows, cols) on threads; its record's path."""
    folder.mkdir(parents=True, exist_ok=True)
    if nodata:
        source = write_geotiff(folder / "in.tif", image, nodata=0)
    else:
        source = write_zarr(folder / "in.zarr", image, chunks=(chunks, chunks))
    spec = {"name": name, "input": {"url": source},
            "model": {"method": "threshold", "params": {"thresholds": [128]}},
            "output": {"url": str(folder / "out.zarr"), "chunks": [chunks, chunks]},
            "cluster": {"kind": "threads"}, "runs_dir": str(folder / "runs")}
    return run(JobSpec.from_dict(spec)).record_url


@pytest.fixture(scope="module")
def record_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return threshold_run(tmp_path_factory.mktemp("hostile"), textured_image(64, 64, bands=1))


def copy_record(source: str, target: Path, edit=None) -> str:
    """``source``'s record written at ``target`` (a run writes records whole, as JSON), edited."""
    record = json.loads(Path(source).read_text(encoding="utf-8"))
    if edit is not None:
        edit(record)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record), encoding="utf-8")
    return str(target)


def runs_index(folder: Path, index: Path) -> str:
    """``geoseg runs --dir folder --html index``, as a user writes the runs folder's index."""
    done = CliRunner().invoke(app, ["runs", "--dir", str(folder), "--html", str(index)])
    assert done.exit_code == 0, done.output
    return index.read_text(encoding="utf-8")


def clicked(index: Path, profile: Path) -> tuple[str, str, object]:
    """Chromium's location, title and ``body.dataset.pwned`` after a click on the index's
    first link, once what the click loads has loaded."""
    url = index.as_uri()
    with chromium(url, profile) as page:
        page.evaluate("document.querySelector('#jobs a').click()")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = page.evaluate("[location.href, document.readyState, document.title, "
                                  "document.body && document.body.dataset.pwned]")
            if state and (state[0] != url or state[3]) and state[1] == "complete":
                break
            time.sleep(0.2)
        return state[0], state[2], state[3]


@browser
@pytest.mark.timeout(180)
def test_a_record_named_as_a_script_url_is_linked_as_a_file(record_url, tmp_path):
    """A record named ``javascript:...json`` in the runs folder, the index in that folder: its
    link was ``href="javascript:...html"``, and a click ran the name as script."""
    evil = "javascript:document.body.dataset.pwned='clicked';void(0)"
    folder = tmp_path / "runs"
    report = Path(write_report(copy_record(record_url, folder / f"{evil}.json")))
    page = runs_index(folder, folder / "index.html")
    assert 'href="javascript:' not in page
    location, title, pwned = clicked(folder / "index.html", tmp_path / "profile")
    assert pwned is None and location == report.as_uri() and title.startswith("geoseg run")


@browser
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["runs #1", "runs %41"])
def test_index_links_reach_reports_in_folders_named_with_url_characters(record_url, tmp_path,
                                                                         name):
    """``#`` in a folder's name made the rest of the link a fragment, ``%41`` an ``A``: the
    link led to a folder, or to nothing."""
    folder = tmp_path / name
    report = Path(write_report(copy_record(record_url, folder / "r.json")))
    (tmp_path / "runs A").mkdir()  # what "%41" decoded to: not where the link may lead
    runs_index(folder, tmp_path / "index.html")
    location, title, _ = clicked(tmp_path / "index.html", tmp_path / "profile")
    assert location == report.as_uri() and title.startswith("geoseg run")
    assert report.as_uri().endswith(quote(f"/{name}/r.html"))


def long_names(record: dict) -> None:
    """A job name and a class name of 10,000 letters each, as a job spec allows them."""
    record["job"]["name"] = "N" * 10_000
    first = next(iter(record["class_counts"]))
    record["class_counts"] = {("A" * 10_000 if k == first else k): v
                              for k, v in record["class_counts"].items()}


@browser
@pytest.mark.timeout(180)
def test_long_names_wrap_and_keep_the_page_as_wide_as_the_window(record_url, tmp_path):
    """Names of 10,000 letters made the report and the index 100,000 px wide, the counts beside
    them off-screen; numbers beside them stay on one line."""
    record = copy_record(record_url, tmp_path / "runs" / "r.json", long_names)
    report = write_report(record)
    index = write_index([("N" * 10_000, load_record(record), report)],
                        str(tmp_path / "index.html"), "geoseg runs")
    widths = ("[document.documentElement.scrollWidth, window.innerWidth, [...document.querySelectorAll"
              "('table')].map(t => t.getBoundingClientRect().right)]")
    for page_file, table in ((report, "classes-table"), (index, "jobs")):
        with chromium(Path(page_file).as_uri(), tmp_path / "profile") as page:
            scroll, window, rights = page.evaluate(widths)
            lines = page.evaluate(  # line boxes of each cell of the table's long-name row
                f"[...document.getElementById('{table}').rows[1].cells].map(c => {{"
                "const r = document.createRange(); r.selectNodeContents(c); "
                "return [c.innerText, new Set([...r.getClientRects()].map(b => "
                "Math.round(b.top))).size]; })")
        shutil.rmtree(tmp_path / "profile")
        assert scroll <= window and max(rights) <= window, (page_file, scroll, rights)
        numbers = [n for text, n in lines if re.fullmatch(r"[-0-9.%]+", text)]
        assert lines[0][1] > 10 and numbers and set(numbers) == {1}, (page_file, lines[1:])


def drop(path: str):
    def edit(record: dict) -> None:
        *where, key = path.split(".")
        target = record
        for part in where:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[key]
    return edit


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("edit", "said"), [
    (lambda r: r["resolved"].update(task_region=[0, 0]),
     "its resolved.task_region is an array [0, 0], expected 2 or 3 sizes in pixels, each 1 or more"),
    (drop("regions.0.seconds"), "its regions[0].seconds is missing, expected a number of seconds"),
    (lambda r: r["regions"][1].update(window=[[5, 5], [0, 32]]), "its regions[1].window is an array"),
    (lambda r: r["regions"][0].update(class_counts=["x"]), "its regions[0].class_counts is an array"),
    (lambda r: r["class_counts"].update(water="many"),
     "its class_counts.water is a string 'many', expected a whole number of pixels"),
    (lambda r: r["evaluation"].update(confusion=[[1, 2, 3], [4]]),
     "its evaluation.confusion is an array [[1, 2, 3], [4]], expected 5 rows of 5 whole numbers"),
    (lambda r: r["input"].update(shape=[3, 2.5, 4]), "its input.shape is an array [3, 2.5, 4]"),
])
def test_a_record_whose_regions_counts_or_matrix_are_not_a_run_s_is_refused_naming_the_field(
        finished_run, tmp_path, edit, said):
    """A few edited bytes ended `geoseg report` in an internal error (ZeroDivisionError,
    KeyError, TypeError, ValueError) deep in the page's figures."""
    render_report(load_record(finished_run.record_url))  # as the run wrote it: read
    record = copy_record(finished_run.record_url, tmp_path / "r.json", edit)
    with pytest.raises(EvaluationError, match=re.escape(said)):
        load_record(record)


@pytest.mark.timeout(180)
def test_an_input_shape_implying_a_huge_task_grid_draws_no_chunk_maps(finished_run, tmp_path):
    """A record whose input shape implies 10^6 x 10^6 task regions made the maps allocate for
    each (MemoryError; 5000 x 5000 took 3 GB): past MAP_CELLS the page says so instead."""
    def huge(record: dict) -> None:
        record["input"]["shape"] = [3, 128 * 10**6, 128 * 10**6]
        record["resolved"]["task_region"] = [128, 128]

    page = render_report(load_record(copy_record(finished_run.record_url, tmp_path / "r.json",
                                                 huge)))
    note = re.search(r'<p class="note" id="chunk-note">([^<]*)</p>', page).group(1)
    assert note.startswith("1000000 x 1000000 task regions, 12 computed by this run: no chunk maps")
    assert 'id="chunk-maps"' not in page and "<h2>Provenance</h2>" in page


@pytest.mark.timeout(180)
def test_an_all_nodata_run_s_report_says_its_pixels_were_no_data(tmp_path):
    """A run of an input all no data showed a table of zeros and never said why."""
    record = threshold_run(tmp_path, np.zeros((1, 64, 64), np.uint8), nodata=True)
    page = render_report(load_record(record))
    said = re.search(r'<p class="warn" id="nodata-note">([^<]*)</p>', page).group(1)
    assert said.startswith("4096 of the 4096 pixels this run computed (100.00%) are the input")
    assert "4 of the 4 task regions computed were no data all through" in said

    some = textured_image(64, 64, bands=1)
    some[:, :16] = 0  # a quarter no data
    page = render_report(load_record(threshold_run(tmp_path / "some", some, nodata=True)))
    said = re.search(r'<p class="note" id="nodata-note">([^<]*)</p>', page).group(1)
    assert said.startswith("1024 of the 4096 pixels this run computed (25.00%) are the input")


@pytest.mark.timeout(180)
def test_a_task_grid_one_region_high_draws_its_maps_across_the_figure(tmp_path):
    """A 1 x N grid drew each map a few pixels high and 80 wide, titles over each other."""
    record = threshold_run(tmp_path, textured_image(16, 1024, bands=1), chunks=16)
    page = render_report(load_record(record))
    assert "1 x 64 task regions; 64 computed by this run." in page
    maps = re.search(r'alt="chunk maps" src="data:image/png;base64,([^"]+)"', page).group(1)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(maps))).convert("RGB")).astype(int)
    coloured = picture.max(2) - picture.min(2) > 60  # the viridis map and the classes' colours
    wide_rows = coloured.sum(1) > picture.shape[1] / 3  # a map across a third of the figure
    assert wide_rows.sum() >= 150, wide_rows.sum()  # two maps, each well over 50 px high


def test_a_link_to_a_report_on_a_web_server_keeps_its_port():
    """The host's ``:`` was percent-encoded with the path's (``127.0.0.1%3A8769``): a link
    no browser follows."""
    from geoseg.report.html import _relative

    link = _relative("http://127.0.0.1:8769/runs/a b#1.html", "/tmp/out/index.html")
    assert link == "http://127.0.0.1:8769/runs/a%20b%231.html"
    assert _relative("s3://bucket/runs/r.html", "/tmp/out/index.html") == "s3://bucket/runs/r.html"
