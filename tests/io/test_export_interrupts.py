"""``geoseg export`` stopped once its file is in place says it was written, not that a rerun
finishes it (a rerun refuses the file as existing)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
import rasterio

from tests.cli import geoseg
from tests.io.test_export_cog import finished_output


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers are set in the main thread only")
def test_sigterm_once_the_cog_is_in_place_says_it_was_written(tmp_path, monkeypatch):
    """It said "terminated (SIGTERM); run the command again to finish it", and the rerun was
    refused: out.tif already exists."""
    from geoseg import cli
    from geoseg.io import files

    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    dest = tmp_path / "out.tif"
    publish = files._publish

    def then_terminated(*args, **kwargs):
        publish(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the COG in place, its scratch folder not removed

    monkeypatch.setattr(files, "_publish", then_terminated)
    monkeypatch.setattr(cli, "exit_within", lambda code: None)  # no forced exit of pytest
    done = geoseg("export", out, "--cog", str(dest))
    assert done.returncode == 143, done.stderr
    assert f"wrote {dest}; terminated (SIGTERM) after it was complete" in done.stderr
    assert "run the command again" not in done.stderr
    with rasterio.open(dest) as written:
        assert (written.read(1) == 1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "out.zarr"]  # no scratch


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers are set in the main thread only")
def test_sigterm_while_the_cog_is_written_still_says_to_run_again(tmp_path, monkeypatch):
    from geoseg import cli
    from geoseg.io.exports import cog

    out = finished_output(tmp_path / "out.zarr", np.ones((50, 50), np.uint8), ["a", "b"])
    tiled = cog.write_tiled

    def terminated_while_writing(*args, **kwargs):
        tiled(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cog, "write_tiled", terminated_while_writing)
    monkeypatch.setattr(cli, "exit_within", lambda code: None)
    done = geoseg("export", out, "--cog", str(tmp_path / "out.tif"))
    assert done.returncode == 143, done.stderr
    assert "terminated (SIGTERM); run the command again to finish it" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
