"""``geoseg convert`` stopped by a signal says what a rerun does: it starts over."""

from __future__ import annotations

from geoseg.core.interrupts import Terminated
from tests.cli import geoseg
from tests.conftest import textured_image, write_geotiff


def test_an_interrupted_convert_says_a_rerun_starts_over_not_that_it_finishes(tmp_path,
                                                                               monkeypatch):
    """It said "run the command again to finish it", though convert keeps nothing to resume."""
    from geoseg import cli
    from geoseg.io import convert

    def terminated(*args, **kwargs):
        raise Terminated("received signal SIGTERM")

    monkeypatch.setattr(convert, "convert", terminated)
    monkeypatch.setattr(cli, "exit_within", lambda code: None)  # no forced exit of pytest
    tif = write_geotiff(tmp_path / "in.tif", textured_image(16, 16))
    done = geoseg("convert", str(tif), str(tmp_path / "out.zarr"))
    assert done.returncode == 143, done.stderr
    assert ("terminated (SIGTERM); the part-written output was removed; a rerun converts from "
            "the start") in done.stderr
