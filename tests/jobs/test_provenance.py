"""Run records: resolved settings, identities, git state, scores against a reference, runs folder,
and no credentials anywhere a run leaves a trace."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path

import boto3
import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score

import geoseg
from geoseg import config, logs
from geoseg.core import redact
from geoseg.errors import EvaluationError, RasterNotFoundError
from geoseg.io.readers import open_source
from geoseg.jobs import JobSpec, prepare, provenance, run
from tests.conftest import job_dict, textured_image, write_geotiff, write_zarr

N_CLASSES = 4
LABEL_NODATA = 9
RECORD_NAME = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9._-]+-[0-9a-f]{8}\.json$")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    image = textured_image(150, 130, seed=21)
    image[:, :9, :] = 0  # no data in the input: class 255 in the output, never scored
    return image


def labels_for(image: np.ndarray) -> np.ndarray:
    """Class ids 0..3 from the first band, with the label nodata value and an unknown id 7."""
    labels = (image[0] // 64).astype(np.uint8)
    labels[40:50, :] = LABEL_NODATA
    labels[60:62, 10:90] = 7
    return labels


def write_labels(url: str, labels: np.ndarray, **kwargs: object) -> str:
    arr = zarr.create_array(url, shape=labels.shape, chunks=(50, 50), dtype=labels.dtype,
                            dimension_names=["y", "x"], attributes={"nodata": LABEL_NODATA},
                            **kwargs)
    arr[:] = labels
    return url


def expected_scores(truth: np.ndarray, pred: np.ndarray,
                    ignore: list[int]) -> tuple[np.ndarray, list]:
    """scikit-learn's confusion matrix and IoU over the pixels that should count: valid output,
    labels neither nodata nor ignored nor outside the model's classes. An ignored label is no
    class to score (NaN), though predicting it is wrong on the other classes' pixels."""
    keep = (pred != 255) & (truth != LABEL_NODATA) & ~np.isin(truth, ignore) & (truth < N_CLASSES)
    labels = list(range(N_CLASSES))
    confusion = sk_confusion(truth[keep], pred[keep], labels=labels)
    iou = jaccard_score(truth[keep], pred[keep], labels=labels, average=None, zero_division=0)
    seen = set(truth[keep].tolist()) | set(pred[keep].tolist())
    return confusion, [v if c in seen and c not in ignore else np.nan
                       for c, v in zip(labels, iou.tolist())]


def test_record_has_resolved_settings_identities_git_scores_and_a_runs_file(
        tmp_path, image, model_path, cluster_address):
    src = write_zarr(tmp_path / "in.zarr", image, nodata=0)
    truth = labels_for(image)
    reference = write_labels(str(tmp_path / "labels.zarr"), truth)
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data.update(name="scored run", runs_dir=str(tmp_path / "runs"), inference={"batch_size": 2, "tile": 64},
                evaluate={"reference": {"url": reference}, "ignore": [3]})
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)

    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    stored = out.attrs["geoseg"]["provenance"]
    pred = out["classes"][:]
    record_file = Path(report.record_url)
    assert record_file.parent == tmp_path / "runs" and RECORD_NAME.match(record_file.name)
    saved = json.loads(record_file.read_text())
    # the runs folder's record alone keeps the per-region figures (the run report's maps)
    assert len(saved.pop("regions")) == report.n_tasks and "regions" not in stored
    assert saved == stored
    assert stored == {k: v for k, v in json.loads(json.dumps(report.provenance)).items()
                      if k != "regions"}
    assert stored["run_record"] == str(record_file)

    model = geoseg.load_model(model_path)
    stride = 2 ** 3  # a depth-3 U-Net
    assert stored["resolved"] == {
        "tile": [min(config.tile_size(), 64)] * 2, "halo": [-(-h // stride) * stride for h in model.halo],
        "stride": [stride] * 2, "batch_size": 2, "blend": "crop", "overlap": 0.0,
        "chunks": [64, 64], "task_region": [64, 64],
        "nodata_class": 255, "class_dtype": "uint8", "device": [config.device()],
        "torch_threads": config.torch_threads() or None}
    assert {k: stored["chunks"][k] for k in ("total", "computed", "skipped_as_done")} == {
        "total": 9, "computed": 9, "skipped_as_done": 0}
    assert stored["model"]["sha256"] == model.info.sha256
    assert set(stored["timings"]["task_stage_sums_s"]) == {"read", "infer", "write", "score"}
    assert sum(stored["class_counts"].values()) == int((pred != 255).sum()) < pred.size

    meta = tmp_path / "in.zarr" / "zarr.json"
    identity = stored["input"]["identity"]
    assert identity["object"] == "zarr.json" and identity["size"] == meta.stat().st_size
    assert float(identity["mtime"]) == meta.stat().st_mtime
    assert stored["git"] == git_of_package()

    scores = stored["evaluation"]
    confusion, iou = expected_scores(truth, pred, ignore=[3])
    np.testing.assert_array_equal(scores["confusion"], confusion)
    assert scores["pixels_scored"] == confusion.sum() > 0
    assert scores["ignored_labels"] == [3, LABEL_NODATA]
    for name, mine, theirs in zip(scores["classes"], scores["iou"].values(), iou):
        assert (mine is None) == np.isnan(theirs), name
        if mine is not None:
            assert mine == pytest.approx(theirs, abs=1e-6)
    assert scores["miou"] == pytest.approx(np.nanmean(iou), abs=1e-6)


def git_of_package() -> dict | None:
    """What ``git`` itself says about the checkout holding the geoseg package, if it is one."""
    root = Path(geoseg.__file__).resolve().parents[1]
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], check=False,
                         capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
        return None
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True)
    diff = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--quiet"], check=False)
    return {"commit": head.stdout.strip(), "dirty": diff.returncode != 0}


def test_a_resumed_run_scores_the_chunks_an_earlier_run_wrote(tmp_path, image, model_path,
                                                              cluster_address):
    src = write_zarr(tmp_path / "in.zarr", image, nodata=0)
    truth = labels_for(image)
    reference = write_labels(str(tmp_path / "labels.zarr"), truth)
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    run(JobSpec.from_dict(data), scheduler=cluster_address)
    manifest = zarr.open_group(str(tmp_path / "out.zarr"), mode="r+")["manifest_done"]
    manifest[0, 0] = manifest[2, 1] = False  # as if a killed run had not finished these two

    data["evaluate"] = {"reference": {"url": reference}}  # scoring does not change the job
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)
    assert (report.n_tasks, report.skipped) == (2, 7)
    pred = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][:]
    confusion, _ = expected_scores(truth, pred, ignore=[])
    np.testing.assert_array_equal(report.provenance["evaluation"]["confusion"], confusion)


@pytest.mark.parametrize("case, message", [
    ("shape", r"not on the pixel grid of the input .*\(shape \(150, 120\) against \(150, 130\)\)"),
    ("bands", "has 3 bands; expected one band of class ids"),
    ("dtype", "holds float32 values; expected integer class ids"),
    ("transform", r"not on the pixel grid of the input .*\(transform .* against .*\)"),
    ("crs", r"not on the pixel grid of the input .*\(CRS EPSG:32634 against EPSG:\d+\)"),
])
def test_a_reference_that_cannot_score_the_output_fails_before_anything_is_written(
        tmp_path, image, model_path, case, message):
    src = write_geotiff(tmp_path / "in.tif", image)
    labels = labels_for(image)
    if case == "shape":
        reference = write_labels(str(tmp_path / "labels.zarr"), labels[:, :120])
    elif case == "bands":
        reference = write_zarr(tmp_path / "labels.zarr", image)
    elif case == "dtype":
        reference = write_labels(str(tmp_path / "labels.zarr"), labels.astype(np.float32))
    else:
        reference = write_geotiff(tmp_path / "labels.tif", image[:1].copy())
        with rasterio.open(reference, "r+") as tif:
            if case == "crs":  # the same numbers in another zone
                tif.crs = rasterio.crs.CRS.from_epsg(32634)
            else:
                tif.transform = tif.transform @ Affine.translation(5, 0)
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data["evaluate"] = {"reference": {"url": reference}}
    with pytest.raises(EvaluationError, match=f"evaluate.reference: .*{message}"):
        prepare(JobSpec.from_dict(data))
    with pytest.raises(EvaluationError):
        run(JobSpec.from_dict(data))  # before any cluster starts
    assert not (tmp_path / "out.zarr").exists()

    data["evaluate"] = {"reference": {"url": str(tmp_path / "missing.zarr")}}
    with pytest.raises(RasterNotFoundError, match="evaluate.reference.url: No raster at"):
        prepare(JobSpec.from_dict(data))


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_follows_the_checkout_and_is_none_elsewhere(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    assert provenance.git_state(repo) == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "untracked.txt").write_text("not part of the source")
    assert provenance.git_state(repo)["dirty"] is False
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert provenance.git_state(repo)["dirty"] is True
    assert provenance.git_state(repo / "pkg") is None  # inside a checkout, but not its top
    assert provenance.git_state(tmp_path) is None  # no checkout at all
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git program
    assert provenance.git_state(repo) is None


def test_runs_folder_comes_from_the_spec_the_environment_or_the_user_data_folder(
        tmp_path, monkeypatch):
    spec = JobSpec.from_dict(job_dict("in.zarr", "m.safetensors", "out.zarr"))
    monkeypatch.setenv("GEOSEG_RUNS_DIR", str(tmp_path / "env-runs"))
    assert provenance.runs_dir(spec) == str(tmp_path / "env-runs")
    with_dir = JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"),
                                  "runs_dir": str(tmp_path / "spec-runs")})
    assert provenance.runs_dir(with_dir) == str(tmp_path / "spec-runs")
    monkeypatch.delenv("GEOSEG_RUNS_DIR")
    monkeypatch.chdir(tmp_path / "..")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert provenance.runs_dir(spec) == str(tmp_path / "data" / "geoseg" / "runs")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert provenance.runs_dir(spec) == str(tmp_path / ".local" / "share" / "geoseg" / "runs")

    record = {"job": {"name": "same name / twice"}, "value": np.int64(3)}
    first = provenance.save_record(dict(record), provenance.runs_dir(spec))
    second = provenance.save_record(dict(record), provenance.runs_dir(spec))
    assert first != second and Path(first).parent == tmp_path / ".local" / "share" / "geoseg" / "runs"
    assert not (tmp_path / ".." / "geoseg-runs").exists()
    assert all(RECORD_NAME.match(Path(p).name) and "same-name-twice" in p for p in (first, second))
    assert json.loads(Path(first).read_text())["value"] == 3


@pytest.fixture()
def json_logs():
    """JSON log lines for one test; every logger setup() touches is restored afterwards."""
    names = ("geoseg", *logs.FOREIGN)
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in names}
    logs.setup("json")
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
    logging.captureWarnings(False)


def test_an_s3_job_leaves_no_credential_in_record_output_runs_folder_or_logs(
        tmp_path, image, model_path, s3_server, cluster_address, capsys, json_logs):
    src, labels_url, out_url = ("s3://geoseg/prov/in.zarr", "s3://geoseg/prov/labels.zarr",
                                "s3://geoseg/prov/out.zarr")
    arr = zarr.create_array(src, shape=image.shape, chunks=(3, 64, 64), dtype="uint8",
                            storage_options=s3_server)
    arr[:] = image
    write_labels(labels_url, labels_for(image), storage_options=s3_server)
    data = job_dict(src, model_path, out_url)
    data["input"]["storage_options"] = data["output"]["storage_options"] = s3_server
    data.update(runs_dir=str(tmp_path / "runs"),
                evaluate={"reference": {"url": labels_url, "storage_options": s3_server}})
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)

    said = capsys.readouterr()
    out = zarr.open_group(out_url, mode="r", storage_options=s3_server)
    traces = {"report": json.dumps(report.provenance),
              "output attrs": json.dumps(out.attrs.asdict()),
              "runs folder": "".join(p.read_text() for p in (tmp_path / "runs").iterdir()),
              "logs": said.err + said.out}
    assert "job finished" in said.err and report.provenance["evaluation"]["pixels_scored"] > 0
    for where, text in traces.items():
        for secret in (s3_server["secret"], s3_server["key"]):
            assert secret not in text, f"{where} holds a credential"

    s3 = boto3.client("s3", endpoint_url=s3_server["client_kwargs"]["endpoint_url"],
                      region_name="us-east-1", aws_access_key_id=s3_server["key"],
                      aws_secret_access_key=s3_server["secret"])
    head = s3.head_object(Bucket="geoseg", Key="prov/in.zarr/zarr.json")
    identity = report.provenance["input"]["identity"]
    assert identity["ETag"] == head["ETag"] and identity["size"] == head["ContentLength"]


def test_identity_of_a_geotiff_is_its_size_and_mtime(tmp_path, image):
    path = write_geotiff(tmp_path / "in.tif", image)
    identity = provenance.identity(open_source(path))
    assert identity["object"] is None and identity["size"] == os.path.getsize(path)
    assert float(identity["mtime"]) == os.stat(path).st_mtime


def test_credentials_named_in_the_cluster_section_reach_no_record_output_or_log(
        tmp_path, image, model_path, cluster_address, capsys):
    """Worker credentials given by name (a Kubernetes env entry, an export in a job script's
    prologue) are hidden like storage options; the rest of those settings stays on record."""
    key, token = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", "ghp_16C7e42F292c6912E7710c8"
    data = job_dict(write_zarr(tmp_path / "in.zarr", image), model_path, str(tmp_path / "out.zarr"))
    data.update(runs_dir=str(tmp_path / "runs"), cluster={
        "kubernetes": {"env": {"AWS_SECRET_ACCESS_KEY": key, "OMP_NUM_THREADS": "1"}},
        "jobqueue": {"job_script_prologue": ["source .venv/bin/activate", f'export API_TOKEN="{token}"']}})
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)
    said = capsys.readouterr()
    traces = {"report": json.dumps(report.provenance),
              "output attrs": json.dumps(zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs.asdict()),
              "runs folder": "".join(p.read_text() for p in (tmp_path / "runs").iterdir()),
              "logs": said.err + said.out}
    for where, text in traces.items():
        assert key not in text and token not in text, f"{where} holds a credential"
    cluster = report.provenance["job"]["cluster"]
    assert cluster["kubernetes"]["env"] == {"AWS_SECRET_ACCESS_KEY": "<hidden>", "OMP_NUM_THREADS": "1"}
    assert cluster["jobqueue"]["job_script_prologue"] == ["source .venv/bin/activate",
                                                          "export API_TOKEN=<hidden>"]
    assert {key, token} <= redact.secrets_in(data)  # what the spec loader has every message hide


def test_a_boolean_reference_scores_as_classes_0_and_1(tmp_path, image, model_path):
    """geoseg eval took a boolean mask; a job's evaluate.reference refused it."""
    src = write_zarr(tmp_path / "in.zarr", image)
    truth = image[0] > 128
    reference = str(tmp_path / "truth.zarr")
    zarr.create_array(reference, shape=truth.shape, chunks=(50, 50), dtype=bool,
                      dimension_names=["y", "x"])[...] = truth
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data["evaluate"] = {"reference": {"url": reference}}
    report = run(JobSpec.from_dict(data), cluster="threads")
    pred = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][:]
    keep = pred != 255
    expected = sk_confusion(truth[keep].astype(int), pred[keep], labels=list(range(N_CLASSES)))
    np.testing.assert_array_equal(report.provenance["evaluation"]["confusion"], expected)
