"""MLflow tracking: a real job logged to a local sqlite store, read back with MlflowClient."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import geoseg
from geoseg.errors import TrackingError
from geoseg.jobs import JobSpec, run, tracking
from tests.conftest import job_dict, textured_image, write_zarr

MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient


@pytest.fixture()
def store(tmp_path, monkeypatch) -> str:
    """A local sqlite tracking store; artifacts go under the test's folder (MLflow's ./mlruns)."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(96, 80, seed=8)


def write_labels(url: str, labels: np.ndarray, **kwargs: object) -> str:
    arr = zarr.create_array(url, shape=labels.shape, chunks=(64, 64), dtype="uint8",
                            dimension_names=["y", "x"], **kwargs)
    arr[:] = labels
    return url


def only_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_a_job_logs_params_metrics_tags_and_its_record_to_mlflow(tmp_path, image, model_path, store,
                                                                 cluster_address):
    src = write_zarr(tmp_path / "in.zarr", image)
    labels = write_labels(str(tmp_path / "labels.zarr"), (image[1] // 64).astype(np.uint8))
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"), tile=None)
    data.update(name="tracked", runs_dir=str(tmp_path / "runs"),
                evaluate={"reference": {"url": labels}},
                tracking={"mlflow": {"tracking_uri": store, "experiment": "geoseg-tests"}})
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)
    record = json.loads(Path(report.record_url).read_text())

    client, logged = only_run(store, "geoseg-tests")
    assert logged.info.status == "FINISHED" and logged.info.run_name == "tracked"
    assert record["tracking"]["mlflow"]["run_id"] == logged.info.run_id
    params = logged.data.params
    assert params["job.input.url"] == src and params["job.output.chunks"] == "[64, 64]"
    assert params["job.name"] == "tracked" and params["job.inference.tile"] == "null"
    assert params["resolved.tile"] == json.dumps(record["resolved"]["tile"])
    assert params["resolved.batch_size"] == str(record["resolved"]["batch_size"])
    assert params["resolved.blend"] == "crop"

    metrics = logged.data.metrics
    evaluation = record["evaluation"]
    assert metrics["throughput_mpx_per_s"] == pytest.approx(record["throughput_mpx_per_s"])
    assert metrics["seconds_total"] == pytest.approx(record["timings"]["total_s"])
    assert metrics["seconds_model_load"] == pytest.approx(record["timings"]["model_load_s"])
    stages = record["timings"]["task_stage_sums_s"]
    assert metrics["seconds_infer"] == pytest.approx(stages["infer"])
    assert metrics["pixels"] == 96 * 80 and metrics["chunks_computed"] == record["chunks"]["computed"] == 1
    assert metrics["miou"] == pytest.approx(evaluation["miou"])
    for name, iou in evaluation["iou"].items():
        assert (f"iou/{name}" in metrics) == (iou is not None)
    fractions = [metrics[f"class_fraction/{name}"] for name in record["class_counts"]]
    assert sum(fractions) == pytest.approx(1.0)

    tags = logged.data.tags
    assert tags["geoseg.model_sha256"] == geoseg.load_model(model_path).info.sha256
    assert tags["geoseg.job_identity"] == record["job_identity"]
    assert tags["geoseg.run_record"] == report.record_url

    assert [a.path for a in client.list_artifacts(logged.info.run_id)] == ["run-record.json"]
    artifact = client.download_artifacts(logged.info.run_id, "run-record.json", str(tmp_path))
    assert json.loads(Path(artifact).read_text()) == record


def test_mlflow_tracking_uri_in_the_environment_alone_turns_logging_on(
        tmp_path, image, model_path, store, cluster_address, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    src = write_zarr(tmp_path / "in.zarr", image[:, :40, :40])
    report = run(JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "out.zarr"))),
                 scheduler=cluster_address)
    _, logged = only_run(store, "geoseg")
    assert logged.info.run_id == report.provenance["tracking"]["mlflow"]["run_id"]
    assert "evaluation" not in report.provenance and "miou" not in logged.data.metrics


def test_missing_mlflow_fails_before_anything_is_computed(tmp_path, image, model_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without it raises
    src = write_zarr(tmp_path / "in.zarr", image)
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data["tracking"] = {"mlflow": {"tracking_uri": "sqlite:///x.db"}}
    hint = r"mlflow is not installed.*pip install 'geoseg\[mlflow\]'"
    with pytest.raises(TrackingError, match=hint):
        run(JobSpec.from_dict(data))
    assert not (tmp_path / "out.zarr").exists()


def test_an_unusable_tracking_uri_fails_before_compute_without_showing_its_credentials(
        tmp_path, image, model_path):
    src = write_zarr(tmp_path / "in.zarr", image)
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data["tracking"] = {"mlflow": {"tracking_uri": "nosuchscheme://user:pa55word@host/x"}}
    with pytest.raises(TrackingError, match="MLflow at nosuchscheme://host/x: could not") as caught:
        run(JobSpec.from_dict(data))
    said = str(caught.value)
    assert "pa55word" not in said and "nothing was computed or written" in said
    assert not (tmp_path / "out.zarr").exists()


def test_an_s3_job_logs_no_credential_to_mlflow(tmp_path, image, model_path, s3_server, store,
                                                cluster_address):
    src = "s3://geoseg/tracked/in.zarr"
    arr = zarr.create_array(src, shape=image.shape, chunks=(3, 64, 64), dtype="uint8",
                            storage_options=s3_server)
    arr[:] = image
    data = job_dict(src, model_path, "s3://geoseg/tracked/out.zarr")
    data["input"]["storage_options"] = data["output"]["storage_options"] = s3_server
    data["tracking"] = {"mlflow": {"tracking_uri": store}}
    run(JobSpec.from_dict(data), scheduler=cluster_address)

    client, logged = only_run(store, "geoseg")
    artifact = client.download_artifacts(logged.info.run_id, "run-record.json", str(tmp_path))
    logged_text = json.dumps([logged.data.params, logged.data.tags, logged.data.metrics])
    logged_text += Path(artifact).read_text()
    assert logged.data.params["job.input.storage_options"] == "<3 option(s) hidden>"
    for secret in (s3_server["secret"], s3_server["key"]):
        assert secret not in logged_text


def test_a_failure_while_logging_marks_the_run_failed_and_says_the_output_is_complete(store):
    spec = JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"),
                              "tracking": {"mlflow": {"tracking_uri": store}}})
    tracker = tracking.open_tracker(spec)
    record = {"started": "2026-01-02T03:04:05+00:00", "finished": "2026-01-02T03:05:05+00:00",
              "job": {"name": "mine"}, "resolved": {"tile": [64, 64]}, "job_identity": "abc",
              "model": {"name": "m", "sha256": "f" * 64}, "geoseg_version": "0", "pixels": 4,
              "output": {"url": "out.zarr"}, "run_record": "runs/r.json",
              "timings": {"total_s": 1.0, "compute_s": 0.5, "task_stage_sums_s": {"read": 0.1}},
              "chunks": {"computed": 1, "skipped_as_done": 0}, "throughput_mpx_per_s": 0.1,
              "class_counts": {"water": 4}}
    run_id = tracker.start(record)["run_id"]
    tracker.client.log_param(run_id, "job.name", "someone else's")  # MLflow params never change
    with pytest.raises(TrackingError, match=r"logging run .* failed .*The output and its run "
                                            r"record \(runs/r.json\) are complete"):
        tracker.finish(record)
    assert MlflowClient(store).get_run(run_id).info.status == "FAILED"


def test_a_run_that_fails_is_logged_failed_with_its_error_and_record(tmp_path, image, model_path,
                                                                      store):
    """A failed run was recorded in the runs folder only: MLflow, where a team looks at the
    night's runs, showed nothing of it."""
    src = write_zarr(tmp_path / "in.zarr", image)
    (Path(src) / "c" / "0" / "1" / "1").write_bytes(b"not zstd")  # the last of 2 x 2
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data.update(name="broken", runs_dir=str(tmp_path / "runs"),
                tracking={"mlflow": {"tracking_uri": store}})
    with pytest.raises(geoseg.errors.GeosegError, match="cannot decode"):
        run(JobSpec.from_dict(data))
    [saved] = (tmp_path / "runs").glob("*.json")
    record = json.loads(saved.read_text())
    client, logged = only_run(store, "geoseg")
    assert record["status"] == "failed" and logged.info.status == "FAILED"
    assert record["tracking"]["mlflow"]["run_id"] == logged.info.run_id
    assert logged.info.run_name == "broken" and logged.data.params["job.name"] == "broken"
    assert logged.data.tags["geoseg.error"] == record["error"]
    assert "cannot decode" in record["error"]
    assert logged.data.tags["geoseg.run_record"] == str(saved)
    assert logged.data.metrics["chunks_computed"] == record["chunks"]["computed"]
    artifact = client.download_artifacts(logged.info.run_id, "run-record.json", str(tmp_path))
    assert json.loads(Path(artifact).read_text()) == record


def test_an_interrupted_run_ends_killed_in_mlflow(store):
    spec = JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"),
                              "tracking": {"mlflow": {"tracking_uri": store}}})
    tracker = tracking.open_tracker(spec)
    record = {"status": "interrupted", "error": "interrupted (SIGINT)",
              "started": "2026-01-02T03:04:05+00:00", "finished": "2026-01-02T03:05:05+00:00",
              "job": {"name": "mine"}, "job_identity": "abc", "geoseg_version": "0",
              "model": {"name": "m", "sha256": "f" * 64}, "output": {"url": "out.zarr"},
              "timings": {"total_s": 1.0, "compute_s": None}, "pixels": None,
              "chunks": {"computed": 3, "skipped_as_done": 1}, "throughput_mpx_per_s": None}
    run_id = tracker.start(record)["run_id"]
    tracker.finish(record)
    logged = MlflowClient(store).get_run(run_id)
    assert logged.info.status == "KILLED" and logged.data.tags["geoseg.error"] == record["error"]
    assert logged.data.metrics == {"seconds_total": 1.0, "chunks_computed": 3.0,
                                   "chunks_skipped": 1.0}


def test_a_failed_run_whose_record_cannot_be_written_still_ends_in_mlflow(
        tmp_path, image, model_path, store, monkeypatch):
    """The MLflow run stayed RUNNING when the runs folder failed as well."""
    from geoseg.jobs import provenance

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    src = write_zarr(tmp_path / "in.zarr", image)
    (Path(src) / "c" / "0" / "1" / "1").write_bytes(b"not zstd")
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data.update(name="broken", tracking={"mlflow": {"tracking_uri": store}})
    monkeypatch.setattr(provenance, "save_record", full)
    with pytest.raises(geoseg.errors.GeosegError, match="cannot decode"):
        run(JobSpec.from_dict(data))
    _, logged = only_run(store, "geoseg")
    assert logged.info.status == "FAILED" and "cannot decode" in logged.data.tags["geoseg.error"]


def _validate(tmp_path, image, model_path, tracking_uri: str, env: dict | None = None):
    import yaml

    from tests.cli import geoseg as cli

    src = write_zarr(tmp_path / "in.zarr", image)
    data = job_dict(src, model_path, str(tmp_path / "out.zarr"))
    data["tracking"] = {"mlflow": {"tracking_uri": tracking_uri}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    result = cli("validate", str(tmp_path / "job.yaml"), env=env)
    return result, " ".join((result.stdout + result.stderr).split())


def test_validate_says_where_a_job_logs_and_creates_no_store(tmp_path, image, model_path):
    result, said = _validate(tmp_path, image, model_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.returncode == 0, said
    assert f"tracking: MLflow at sqlite:///{tmp_path / 'mlflow.db'}, experiment 'geoseg'" in said
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out.zarr").exists()


def test_validate_refuses_tracking_where_mlflow_is_missing(tmp_path, image, model_path,
                                                           monkeypatch):
    """validate said ok; the run then failed, having opened its input and model."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    result, said = _validate(tmp_path, image, model_path, "sqlite:///x.db")
    assert result.returncode != 0 and "Traceback" not in said
    assert "mlflow is not installed" in said and "pip install 'geoseg[mlflow]'" in said


def test_validate_refuses_a_tracking_server_that_does_not_answer(tmp_path, image, model_path):
    """Refused at once: MLflow's own retries, with their back-off, took four minutes."""
    from tests.ports import free_port

    port = free_port()  # nothing listens there
    result, said = _validate(tmp_path, image, model_path, f"http://user:pa55word@127.0.0.1:{port}")
    assert result.returncode != 0 and "Traceback" not in said, said
    assert (f"MLflow at http://127.0.0.1:{port}: could not connect to 127.0.0.1:{port} within "
            "10 s (Connection refused)") in said
    assert "pa55word" not in said and "nothing was computed or written" in said
