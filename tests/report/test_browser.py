"""The run report as a browser shows it: headless Chromium, checked through DevTools."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from geoseg.report.html import write_report
from tests.report.browser import chromium, find_chromium

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (make browser installs Debian's chromium as root; "
           "elsewhere: apt-get install chromium)")


@pytest.mark.timeout(120)
def test_chromium_shows_the_metrics_table_and_the_quicklook(finished_run, tmp_path):
    page_file = write_report(finished_run.record_url, str(tmp_path / "report.html"))
    with chromium(f"file://{page_file}", tmp_path / "profile") as page:
        text = page.evaluate("document.body.innerText")
        table = page.evaluate("document.getElementById('metrics-table').innerText")
        width = page.evaluate("document.getElementById('quicklook').naturalWidth")
        broken = page.evaluate("[...document.images].filter(i => !i.complete || "
                               "i.naturalWidth === 0).length")
        shot = page.screenshot()
    assert "Metrics" in text and "Provenance" in text
    for name in ("water", "vegetation", "building", "IoU", "Dice"):
        assert name in table
    miou = finished_run.provenance["evaluation"]["miou"]
    assert f"{miou:.4f}" in text  # the run's mIoU as the page shows it
    assert width > 0 and broken == 0
    picture = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    assert picture.shape[0] > 500
    # distinct colours, each packed into one integer (np.unique over rows sorts for a minute)
    packed = (picture[..., 0].astype(np.uint32) << 16) | (picture[..., 1].astype(np.uint32) << 8) \
        | picture[..., 2]
    colours = np.count_nonzero(np.bincount(packed.ravel(), minlength=1 << 24))
    assert colours > 100, "the screenshot is blank"
    assert (picture < 250).any(axis=2).mean() > 0.05  # more than a white page with some text
