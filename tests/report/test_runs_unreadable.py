"""A runs folder with files that are not run records geoseg can list: ``geoseg runs`` lists the
others and names each such file in a warning; ``geoseg runs compare`` refuses one by name."""

from __future__ import annotations

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
                                            "nesting is 102 levels deep"),
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
