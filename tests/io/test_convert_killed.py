"""A ``geoseg convert`` killed where it cannot clean up (SIGKILL, the kernel's out-of-memory
killer, a machine stopped) leaves a group marked ``converting`` with chunks missing. Read as an
input, its missing chunks were the fill value: a job on it wrote a "complete" mask of 78% no
data, and a second convert copied it, silently. Such a group is refused, saying what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
import zarr

from tests.cli import geoseg
from tests.conftest import write_geotiff
from tests.test_errors_cli import assert_clean

UNFINISHED = "geoseg convert has not finished writing it"


def killed_conversion(tmp_path: Path) -> Path:
    """A conversion SIGKILLed once it has written its first chunks, not all of them."""
    image = np.random.default_rng(0).integers(0, 255, (3, 2048, 2048), dtype=np.uint8)
    tif = write_geotiff(tmp_path / "in.tif", image)
    out = tmp_path / "c.zarr"
    convert = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "convert", str(tif), str(out),
                                "--chunks", "64"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _some_chunk(out):
        assert convert.poll() is None and time.monotonic() < deadline, "convert ended early"
        time.sleep(0.01)
    os.kill(convert.pid, signal.SIGKILL)
    convert.wait()
    assert zarr.open_group(str(out), mode="r").attrs["geoseg"]["status"] == "converting"
    return out


def _some_chunk(out: Path) -> bool:
    chunks = out / "raster" / "c"
    return chunks.exists() and any(p.is_file() for p in chunks.rglob("*"))


def test_a_killed_conversion_is_refused_as_an_input_of_a_job_and_of_convert(tmp_path):
    out = killed_conversion(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"input": {"url": str(out)},
                                   "model": {"method": "otsu", "params": {"feature": 1}},
                                   "output": {"url": str(tmp_path / "mask.zarr")}}))
    assert_clean(geoseg("validate", str(job)), 2, UNFINISHED)
    again = geoseg("convert", str(out), str(tmp_path / "c2.zarr"))
    assert_clean(again, 2, "run geoseg convert again with --overwrite")
    assert not (tmp_path / "mask.zarr").exists() and not (tmp_path / "c2.zarr").exists()
