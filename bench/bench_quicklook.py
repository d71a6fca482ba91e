"""Quicklook of a 20k x 20k output: peak memory and time.

Writes a geoseg output of ``--size`` x ``--size`` class ids (1024-pixel chunks) and a
three-band input of the same size (cheap patterns, compressed), then builds the quicklook PNG
in a fresh process and reports its time and peak RSS, beside the RSS of that process once its
imports are done. The full raster would be size^2 bytes of classes plus 3 size^2 of bands.

    python bench/bench_quicklook.py                 # 20000 x 20000, in a temporary folder
    python bench/bench_quicklook.py --size 4096 --keep /tmp/ql
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

CHUNK = 1024


def _pattern(r0: int, c0: int, rows: int, cols: int, band: int) -> np.ndarray:
    y, x = np.ogrid[r0:r0 + rows, c0:c0 + cols]
    return ((x // 37 + y // 53 + band * 40) % 200 + (x * y % 7)).astype(np.uint8)


def make(folder: Path, size: int) -> str:
    """The input (``image.zarr``) and the output (``out.zarr``) a run would leave."""
    from geoseg.io.georef import GeoRef
    from geoseg.io.output import create_output

    image = zarr.open_group(str(folder / "image.zarr"), mode="w")
    bands = image.create_array("image", shape=(3, size, size), dtype="uint8",
                               chunks=(3, CHUNK, CHUNK), dimension_names=["band", "y", "x"])
    names = ["water", "vegetation", "bare_soil", "road", "building"]
    target = create_output(str(folder / "out.zarr"), shape=(size, size), chunks=(CHUNK, CHUNK),
                           georef=GeoRef.from_crs("EPSG:32618", (10, 0, 5e5, 0, -10, 4.5e6)),
                           class_names=names, class_dtype="uint8", nodata_class=255,
                           attrs={"class_colors": [[30, 90, 200], [40, 160, 40], [200, 170, 100],
                                                   [90, 90, 90], [220, 30, 30]],
                                  "provenance": {"job": {"input": {
                                      "url": str(folder / "image.zarr"), "variable": "image"}}}})
    classes = target.open_group()["classes"]
    for r0 in range(0, size, CHUNK):
        for c0 in range(0, size, CHUNK):
            rows, cols = min(CHUNK, size - r0), min(CHUNK, size - c0)
            block = np.stack([_pattern(r0, c0, rows, cols, b) for b in range(3)])
            bands[:, r0:r0 + rows, c0:c0 + cols] = block
            classes[r0:r0 + rows, c0:c0 + cols] = (block[0] // 41).astype(np.uint8)
    return str(folder / "out.zarr")


def measure(output: str, png: str) -> dict[str, float]:
    """Build the quicklook here; time and peak RSS (this process)."""
    import matplotlib  # noqa: F401 - imported before the baseline, as the build needs it

    from geoseg.report.quicklook import write_quicklook

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    write_quicklook(output, png)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1),
            "rss_after_imports_mib": round(baseline, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--keep", type=Path, help="folder to write into and keep")
    parser.add_argument("--measure", nargs=2, metavar=("OUTPUT", "PNG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        output = make(folder, args.size)
        made = time.perf_counter() - t0
        png = str(folder / "quicklook.png")
        done = subprocess.run([sys.executable, __file__, "--measure", output, png],
                              capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        full = args.size * args.size * 4 / 2**20
        print(f"{args.size} x {args.size} output ({full:.0f} MiB of classes and bands if read "
              f"whole), written in {made:.0f} s")
        print(f"quicklook: {figures['seconds']} s, peak RSS {figures['peak_rss_mib']} MiB "
              f"({figures['rss_after_imports_mib']} MiB after imports); {png}")


if __name__ == "__main__":
    main()
