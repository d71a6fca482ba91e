"""The report says what a run found: pixels per class, and its objects with their sizes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from scipy import ndimage

from geoseg.report.html import load_record, record_of, render_report
from tests.cli import geoseg
from tests.conftest import write_geotiff


def _rows(page: str, table: str) -> list[list[str]]:
    """The body rows of the page's table with id ``table``, as text."""
    body = re.search(rf'<table id="{table}">(.*?)</table>', page).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)][1:]


@pytest.mark.timeout(120)
def test_the_report_counts_each_class_and_sizes_the_objects_as_scipy_does(tmp_path):
    """An inspection team's headline, how many defects and how large, was only in the raw
    record; the page now shows it, per class."""
    rng = np.random.default_rng(4)
    image = ndimage.gaussian_filter(rng.random((160, 200)), 3)
    image = ((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
    threshold = int(np.percentile(image, 85))
    write_geotiff(tmp_path / "part.tif", image[None], nodata=None)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "inspect", "input": {"url": str(tmp_path / "part.tif")},
        "model": {"method": "threshold", "params": {"thresholds": [threshold],
                                                     "class_names": ["surface", "defect"]}},
        "output": {"url": str(tmp_path / "out.zarr"), "chunks": [64, 64]},
        "instances": {"method": "components", "classes": ["defect"], "connectivity": 2},
        "cluster": {"kind": "threads"}, "runs_dir": str(tmp_path / "runs")}))
    done = geoseg("run", str(spec))
    assert done.returncode == 0, done.stderr
    page = render_report(load_record(record_of(str(tmp_path / "out.zarr"))))

    defect = image > threshold
    assert _rows(page, "classes-table") == [
        ["surface", str(int((~defect).sum())), f"{(~defect).mean():.2%}"],
        ["defect", str(int(defect.sum())), f"{defect.mean():.2%}"]]
    labels, count = ndimage.label(defect, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel())[1:]
    assert count > 20 and _rows(page, "objects-table") == [["objects (instances)", str(count)]]
    assert _rows(page, "object-sizes-table") == [
        ["defect", str(count), str(int(areas.sum())), f"{float(np.median(areas)):.4f}",
         str(int(areas.max()))]]

    # a table of other rows than the record counts is not read: a few KB of parquet may hold
    # 1e8 rows (40M rows took 2.9 GB); the count from the record stands alone
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 1000 * count
    pq.write_table(pa.table({"class": np.ones(rows, np.int64), "area_px": np.ones(rows, np.int64)}),
                   tmp_path / "out.zarr" / "instances.parquet")
    page = render_report(load_record(record_of(str(tmp_path / "out.zarr"))))
    assert _rows(page, "objects-table") == [["objects (instances)", str(count)]]
    assert 'id="object-sizes-table"' not in page


def test_a_run_that_ended_early_counts_nothing_and_says_nothing_of_counts():
    """A failed or interrupted run's record holds no pixel counts: no empty table, no note."""
    from geoseg.report.html import results_section

    record = {"status": "failed", "chunks": {"total": 8, "computed": 3, "skipped_as_done": 2},
              "output": {"url": "/nowhere/out.zarr"}}
    assert results_section(record, {}, False) == ""
