"""A runs folder with files that are not run records geoseg can list: ``geoseg runs`` lists the
others and names each such file in a warning; ``geoseg runs compare`` refuses one by name."""

from __future__ import annotations

import pytest

from geoseg.errors import GeosegError
from tests.cli import geoseg, threshold_run

UNREADABLE = {
    "20260101T000002Z-odd-00000002.json": ('{"format":"geoseg-run/1","job":"x"}',
                                           "'job' is a string, not an object"),
    "20260101T000003Z-deep-00000003.json": ("[" * 200_000 + "]" * 200_000,
                                            "nests arrays or objects 200000 levels deep"),
    "20260101T000004Z-half-00000004.json": ('{"format": "geoseg-run/1", "job": {"na',
                                            "not JSON"),
    "20260101T000005Z-nest-00000005.json": ('{"format": "geoseg-run/1", "job": {}, "resolved": '
                                            + '{"a": ' * 100 + "1" + "}" * 101,
                                            "nesting is 101 levels deep"),
}


def test_runs_lists_the_readable_records_and_names_each_unreadable_file(tmp_path):
    runs = tmp_path / "runs"
    threshold_run(tmp_path, "real", size=64, chunk=32, seed=3)
    [record] = runs.glob("*.json")
    for name, (content, _) in UNREADABLE.items():
        (runs / name).write_text(content)
    (runs / "notes.json").write_text('{"kind": "another tool\'s file"}')  # not a run: left out

    done = geoseg("runs", env={"GEOSEG_RUNS_DIR": str(runs)})

    assert done.returncode == 0, done.stderr
    assert "1 run(s)" in done.stdout and record.name in done.stdout and "real" in done.stdout
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == len(UNREADABLE), done.stderr
    for line, (name, (_, received)) in zip(warnings, sorted(UNREADABLE.items()), strict=True):
        assert "WARNING" in line and f"skipped {runs / name}: received" in line, line
        assert received in line and "expected a run record" in line and "delete it" in line

    compared = geoseg("runs", "compare", str(runs / "20260101T000002Z-odd-00000002.json"),
                      str(record), "--dir", str(runs))

    assert compared.returncode == 2, compared.stderr
    [line] = compared.stderr.strip().splitlines()
    assert line.startswith("error: run ") and "'job' is a string, not an object" in line


def _unblock(fifo) -> None:
    """Give a reader stuck opening ``fifo`` (the code before the fix) its end of file."""
    import contextlib
    import os

    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_runs_skips_a_huge_file_a_fifo_and_a_folder_named_json_unread(tmp_path):
    """A 3 GiB (sparse) ``.json`` in the runs folder was read whole (6.5 GB of memory) and a FIFO
    named ``x.json`` hung ``geoseg runs``: each is measured first, as ``geoseg report`` measures
    a record, and skipped with a note naming it, the other runs listed."""
    import logging
    import os
    import threading
    import tracemalloc

    from geoseg.report.runs import list_runs

    runs = tmp_path / "runs"
    threshold_run(tmp_path, "real", size=64, chunk=32, seed=3)
    [record] = runs.glob("*.json")
    with open(runs / "huge.json", "wb") as f:
        f.truncate(256 * 2**20)  # over GEOSEG_MAX_METADATA_BYTES (64 MiB); sparse: no disk used
    os.mkfifo(runs / "fifo.json")
    (runs / "folder.json").mkdir()
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda entry: said.append(entry.getMessage())
    logger = logging.getLogger("geoseg.report")
    logger.addHandler(handler)
    found: list = []

    def listing() -> None:
        tracemalloc.start()
        try:
            found.append(list_runs(str(runs)))
            found.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    worker = threading.Thread(target=listing, daemon=True)
    try:
        worker.start()
        worker.join(30)
    finally:
        logger.removeHandler(handler)
        if worker.is_alive():
            _unblock(runs / "fifo.json")
    assert not worker.is_alive(), "geoseg runs waited on a FIFO"
    listed, peak = found
    assert [where for where, _ in listed] == [str(record)]
    assert peak < 16 * 2**20, peak
    notes = {name: [line for line in said if f"skipped {runs / name}:" in line]
             for name in ("huge.json", "fifo.json", "folder.json")}
    assert all(len(lines) == 1 for lines in notes.values()), said
    assert "holds 256 MiB or more" in notes["huge.json"][0], notes
    assert "GEOSEG_MAX_METADATA_BYTES" in notes["huge.json"][0], notes
    assert "a FIFO (named pipe), not a file" in notes["fifo.json"][0], notes
    assert "cannot be read" in notes["folder.json"][0], notes
    assert all("delete it" in lines[0] for lines in notes.values()), notes


def test_report_of_a_huge_file_says_it_is_too_large_not_that_it_is_not_json(tmp_path):
    from geoseg.report.html import load_record

    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(256 * 2**20)  # over GEOSEG_MAX_METADATA_BYTES (64 MiB); sparse: no disk used
    with pytest.raises(GeosegError) as refused:
        load_record(str(huge))
    assert "not JSON" not in str(refused.value)
    assert "GEOSEG_MAX_METADATA_BYTES" in str(refused.value), str(refused.value)
