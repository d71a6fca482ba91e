"""The README's first command: `geoseg demo` end to end on its default local cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import zarr
from sklearn.metrics import confusion_matrix, jaccard_score

from geoseg.instances import panoptic_quality
from tests.cli import geoseg as in_this_process


def geoseg(*args: str, runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], check=False, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "GEOSEG_RUNS_DIR": str(runs)})


def test_demo_segments_a_scene_and_reports_its_miou(tmp_path):
    out, runs = tmp_path / "demo", tmp_path / "runs"
    result = geoseg("demo", "--size", "512", "--out", str(out), runs=runs)
    assert result.returncode == 0, result.stderr
    printed = float(re.search(r"mIoU against ground truth: ([0-9.]+)", result.stderr + result.stdout).group(1))
    scene = zarr.open_group(str(out / "scene.zarr"), mode="r")
    mask = zarr.open_group(str(out / "mask.zarr"), mode="r")
    truth, pred = scene["labels"][...].ravel(), mask["classes"][...].ravel()
    present = np.union1d(np.unique(truth), np.unique(pred))
    miou = jaccard_score(truth, pred, labels=present, average="macro")  # an independent scorer
    assert printed == round(miou, 3)
    assert miou > 0.9  # the bundled model scores 0.978 on this unseen 512 x 512 scene
    assert dict(mask["spatial_ref"].attrs) == dict(scene["spatial_ref"].attrs)
    assert len(list(runs.glob("*-demo-*.json"))) == 2  # the semantic and the instance job's records
    assert len(list(runs.glob("*-demo-*.html"))) == 2  # and their reports
    record = next(p for p in runs.glob("*-demo-*.json") if json.loads(p.read_text()).get("evaluation"))
    evaluation = json.loads(record.read_text())["evaluation"]
    assert round(evaluation["miou"], 3) == printed  # the report's scores are the printed ones
    assert np.array_equal(evaluation["confusion"],
                          confusion_matrix(truth, pred, labels=range(len(evaluation["confusion"]))))
    assert "confusion" in record.with_suffix(".html").read_text().lower()

    said = " ".join((result.stderr + result.stdout).split())
    pq = float(re.search(r"buildings, instance model: panoptic quality ([0-9.]+)", said).group(1))
    plain = float(re.search(r"components of the U-Net's buildings: panoptic quality ([0-9.]+)",
                            said).group(1))
    instances = zarr.open_group(str(out / "instances.zarr"), mode="r")["instances"][...]
    score = panoptic_quality(scene["instances"][...], instances)[1]
    assert pq == round(score.pq, 3) and pq > 0.8 > plain  # what the boundary class buys
    polygons = gpd.read_parquet(out / "instances.zarr" / "polygons.parquet")
    assert sorted(polygons["id"]) == list(range(1, int(instances.max()) + 1))

    # nothing overwritten silently (in this process: the refusal comes before any import of note)
    again = in_this_process("demo", "--size", "512", "--out", str(out), env={"GEOSEG_RUNS_DIR": str(runs)})
    assert again.returncode != 0 and "already exists; pass --overwrite" in " ".join(again.stderr.split())
    np.testing.assert_array_equal(zarr.open_group(str(out / "mask.zarr"), mode="r")["classes"][...].ravel(),
                                  pred)


def test_a_demo_scene_past_the_memory_budget_is_refused_before_it_is_made(tmp_path):
    from geoseg.demo import check_scene_size

    for size in ("99999999999", "100000"):  # the first fails fast on a demo without the check
        result = in_this_process("demo", "--size", size, "--out", str(tmp_path / "demo"))
        said = " ".join(result.stderr.split())
        assert result.returncode == 2, said
        assert f"--size {size} makes a {size} x {size} scene held in memory" in said
        assert "the limit is 2.15e9 (GEOSEG_MAX_WINDOW_BYTES). Give a smaller --size" in said
        assert not (tmp_path / "demo").exists()
    check_scene_size(4096)  # the default fits
