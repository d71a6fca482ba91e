"""A batch's ``wait`` is bounded as its ``lease_seconds`` is: finite, a week at most."""

from __future__ import annotations

import pytest

from geoseg.errors import BatchSpecError
from geoseg.jobs.batch_spec import load_batch

BATCH = ("inputs: {urls: [in.zarr]}\njob: {model: {path: builtin:demo-unet}}\n"
         "output: {url_template: 'out/{stem}.zarr'}\n")


@pytest.mark.parametrize(("value", "received"), [(".inf", "inf (float)"), (".nan", "nan (float)"),
                                                 ("1e400", "inf (float)"),
                                                 ("604801", "604801 (int)"), ("-1", "-1 (int)")])
def test_a_wait_past_a_week_or_not_finite_is_refused(tmp_path, value, received):
    path = tmp_path / "batch.yaml"
    path.write_text(BATCH + f"wait: {value}\n")
    with pytest.raises(BatchSpecError) as caught:
        load_batch(path)
    assert (f"wait: received {received}; expected seconds from 0 to 604800 (a week, as for "
            "lease_seconds); 0 reports a leased output and goes on.") in str(caught.value)


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("30", 30.0), ("1e3", 1000.0),
                                                ("604800", 604800.0)])
def test_a_wait_of_at_most_a_week_is_taken(tmp_path, value, seconds):
    path = tmp_path / "batch.yaml"
    path.write_text(BATCH + f"wait: {value}\n")
    assert load_batch(path).wait == seconds
