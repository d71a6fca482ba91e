"""``geoseg batch`` stopped by SIGTERM mid-run writes its HTML index beside its JSON report, as
every batch does: the index is where an operator looks for what was left."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.jobs.test_batch_interrupts import _slow_method, batch_process, reports, write_batch

__all__ = ["_slow_method"]  # its autouse fixture registers the slow method here too


def test_sigterm_mid_run_writes_the_html_index_beside_the_report(tmp_path):
    spec = write_batch(tmp_path)
    with batch_process(spec, {"GEOSEG_RUNS_DIR": str(tmp_path / "runs")}) as batch:
        batch.wait_for("job started", count=2)
        batch.proc.send_signal(signal.SIGTERM)
        code = batch.finish()

    lines = "\n".join(batch.lines)
    assert code == 143, lines
    [report] = reports(tmp_path)
    assert report["interrupted"] == "SIGTERM"
    [index] = [line.split(": ", 1)[1] for line in batch.lines if line.startswith("html report: ")]
    page = Path(index).read_text()
    assert Path(index).parent == tmp_path / "out"
    assert "not-started" in page and "interrupted" in page
    assert lines.index("html report: ") < lines.index("interrupted (SIGTERM): ")  # the last word
