"""A fit on a 20k x 20k raster that is never materialized: peak memory stays at a few chunks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, resource, time
import dask
from tests.methods.rasters import lazy_raster
from geoseg.methods import fit_threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
raster = lazy_raster(20_000, 2048)
start = time.perf_counter()
with dask.config.set(scheduler="threads", num_workers=2):
    otsu = fit_threshold(raster, "otsu")
print(json.dumps({"threshold": otsu.thresholds[0], "seconds": time.perf_counter() - start,
                  "rss_before_fit_mb": before / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
RASTER_MB = 20_000 * 20_000 * 4 / 2**20  # float32; the fit's float64 features would be twice that


@pytest.mark.slow
def test_otsu_fit_of_a_20k_raster_has_bounded_peak_memory():
    """Run in a fresh process so that ru_maxrss is this fit's peak (about a minute on 2 cores)."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"20k x 20k float32 raster ({RASTER_MB:.0f} MiB if loaded): "
        f"Otsu fit in {result['seconds']:.1f} s, "
        f"peak RSS {result['peak_rss_mb']:.0f} MiB (process before the fit: "
        f"{result['rss_before_fit_mb']:.0f} MiB)"
    )
    assert 0.45 < result["threshold"] < 0.55  # levels 0.3 and 0.7
    assert result["peak_rss_mb"] < 1024 < RASTER_MB
