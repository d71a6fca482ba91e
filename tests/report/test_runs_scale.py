"""``geoseg runs`` on a runs folder of many real records: the listing keeps what its table and
index show of each run, never a record's per-region lists, and measures a record's nesting
without walking its every node in Python. 3000 copies of a 34 KB record took 65 s and 830 MB,
most of it in that walk, and every record was kept whole."""

from __future__ import annotations

import io
import json
import shutil
import sys
import tracemalloc
from pathlib import Path

import pytest
from rich.console import Console

from geoseg.report import runs
from tests.cli import threshold_run

COPIES = 200


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The record of a real ``geoseg run`` of 144 task regions (about 30 KB, most of it the
    per-region list)."""
    folder = tmp_path_factory.mktemp("scale")
    threshold_run(folder, "scale", size=384, chunk=32, seed=3)
    [found] = (folder / "runs").glob("*.json")
    assert len(json.loads(found.read_text())["regions"]) == 144
    return found


def _copies(record: Path, folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        shutil.copy(record, folder / f"run-{i:04d}.json")
    return folder


def test_the_listing_keeps_a_few_kb_of_each_run_however_many_regions_it_lists(record, tmp_path):
    folder = _copies(record, tmp_path / "runs", COPIES)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        found = runs.list_runs(str(folder))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert len(found) == COPIES
    listed = found[0][1]
    assert "regions" not in listed and "packages" not in listed and "timings" not in listed
    assert len(json.dumps(listed)) < 2048 < record.stat().st_size / 10
    assert held < COPIES * 20 * 1024, held  # whole records: about 120 KB each


def test_listing_a_record_runs_a_bounded_number_of_lines_not_one_per_node(record, tmp_path):
    """The nesting check walked each of a record's thousands of nodes in Python (15,000 lines
    run for this one); it is measured on the text now, and only the listed fields visited."""
    folder = _copies(record, tmp_path / "runs", 1)
    lines = 0

    def tracer(frame, event, arg):
        nonlocal lines
        if frame.f_code.co_filename != runs.__file__:
            return None
        lines += event == "line"
        return tracer

    sys.settrace(tracer)
    try:
        [(_, listed)] = runs.list_runs(str(folder))
    finally:
        sys.settrace(None)
    assert listed["job"]["name"] == "scale"
    assert lines < 3000, lines


def _shown(found: list) -> str:
    out = io.StringIO()
    Console(file=out, width=250, color_system=None).print(runs.runs_table(found))
    return out.getvalue()


def test_the_table_of_the_listing_is_the_table_of_the_whole_records(record, tmp_path):
    """What is left out is nothing the table shows: settings that differ, a failed run's error,
    storage options left out as before."""
    folder = tmp_path / "runs"
    folder.mkdir()
    whole = json.loads(record.read_text())
    variants = [whole, {**whole, "resolved": {**whole["resolved"], "batch_size": 2}},
                {**whole, "status": "failed", "error": "CorruptInputError: " + "bad chunk " * 50,
                 "job": {**whole["job"], "model": {**whole["job"]["model"],
                                                   "storage_options": {"anon": True}}}}]
    for i, variant in enumerate(variants):
        (folder / f"run-{i}.json").write_text(json.dumps(variant))

    found = runs.list_runs(str(folder))

    records = [(where, json.loads(Path(where).read_text())) for where, _ in found]
    assert _shown(found) == _shown(records)
    assert "batch_size=2" in _shown(found) and "storage_options" not in _shown(found)
    assert "failed: CorruptInputError: bad chunk" in _shown(found)


def test_compare_still_reads_each_whole_record(record, tmp_path):
    folder = _copies(record, tmp_path / "runs", 2)
    for key in ("0", "run-0001"):
        where, found = runs.find_run(key, str(folder))
        assert found == json.loads(Path(where).read_text()) and len(found["regions"]) == 144
