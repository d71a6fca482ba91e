"""MLflow tracking against hostile or failing tracking servers: a small fake of MLflow's REST
API on 127.0.0.1 (the few endpoints a run uses), one that closes every connection, and one
that goes away after the compute. Credentials in the tracking URI never reach stdout, errors or
records; a server failing after the compute leaves the output and its record complete."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geoseg.errors import TrackingError
from geoseg.jobs import JobSpec, run, tracking
from geoseg.jobs.status import output_status
from tests.conftest import job_dict, textured_image, write_zarr

pytest.importorskip("mlflow")

SECRET = "S3CRETTOKEN"


class FakeMlflow(http.server.ThreadingHTTPServer):
    """The REST endpoints an MLflow client uses to log one run; ``refuse`` makes every call but
    the experiment's look-up answer 403 (a token that expired during the compute)."""

    daemon_threads = True

    def __init__(self, artifacts: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.artifacts, self.refuse, self.calls = artifacts, False, []
        self.runs: dict[str, dict] = {}

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeMlflow

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size) or b"{}")
        path = self.path.split("?", 1)[0]
        self.server.calls.append(path)
        code, said = 200, {}
        if path.endswith("/experiments/get-by-name"):
            said = {"experiment": {"experiment_id": "1", "name": "geoseg",
                                   "lifecycle_stage": "active"}}
        elif self.server.refuse:
            code, said = 403, {"error_code": "PERMISSION_DENIED", "message": "token expired"}
        elif path.endswith("/runs/create"):
            run_id = f"run{len(self.server.runs)}"
            info = {"run_id": run_id, "run_uuid": run_id, "experiment_id": "1",
                    "run_name": body.get("run_name", ""), "status": "RUNNING",
                    "lifecycle_stage": "active",
                    "artifact_uri": (self.server.artifacts / run_id).as_uri()}
            self.server.runs[run_id] = info
            said = {"run": {"info": info, "data": {}}}
        elif path.endswith("/runs/get"):
            run_id = self.path.split("run_id=", 1)[1].split("&", 1)[0]
            said = {"run": {"info": self.server.runs[run_id], "data": {}}}
        elif path.endswith("/runs/update"):
            info = self.server.runs[body["run_id"]]
            info["status"] = body.get("status", info["status"])
            said = {"run_info": info}
        data = json.dumps(said).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def fake(tmp_path) -> Iterator[FakeMlflow]:
    server = FakeMlflow(tmp_path / "artifacts")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def closing_server() -> Iterator[int]:
    """A port whose server accepts each connection, reads the request and closes it unanswered."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(1)
                    with contextlib.suppress(OSError):
                        conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


def record(status: str | None = None) -> dict:
    return {"started": "2026-01-02T03:04:05+00:00", "finished": "2026-01-02T03:05:05+00:00",
            "job": {"name": "sec"}, "resolved": {"tile": [64, 64]}, "job_identity": "abc",
            "model": {"name": "m", "sha256": "f" * 64}, "geoseg_version": "0", "pixels": 4,
            "output": {"url": "out.zarr"}, "run_record": "runs/r.json",
            "timings": {"total_s": 1.0, "compute_s": 0.5}, "throughput_mpx_per_s": 0.1,
            "chunks": {"computed": 1, "skipped_as_done": 0}, "class_counts": {"water": 4},
            **({"status": status, "error": "interrupted (SIGINT)"} if status else {})}


@pytest.mark.parametrize("status", [None, "interrupted", "failed"])
def test_mlflow_prints_no_run_url_holding_the_tracking_uris_credentials(fake, capfd, status):
    """MLflow wrote "View run sec at: http://alice:S3CRETTOKEN@..." to stdout as each run
    ended (FINISHED, KILLED or FAILED), breaking a JSON log stream too."""
    uri = f"http://alice:{SECRET}@127.0.0.1:{fake.port}"
    spec = JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"),
                              "tracking": {"mlflow": {"tracking_uri": uri}}})
    tracker = tracking.open_tracker(spec)
    tracker.start(record(status))
    tracker.finish(record(status))
    assert fake.runs[tracker.run_id]["status"] == tracking.ENDED.get(status, "FINISHED")
    out, err = capfd.readouterr()
    assert SECRET not in out + err and "alice" not in out + err
    assert "View run" not in out  # stdout is the command's own


def test_an_error_never_shows_the_tracking_uris_query_however_the_transport_quotes_it(
        monkeypatch, caplog):
    """urllib3 names the path and query apart from the host ("url: /?token=S3CRETTOKEN/api/
    2.0/..."), which replacing the whole URI did not catch; its warning of each retry (printed
    by Python when no handler is set) too."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the test's own bounds
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    caplog.set_level("WARNING", logger="urllib3")
    with closing_server() as port:
        uri = f"http://127.0.0.1:{port}/?token={SECRET}"
        spec = JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"),
                                  "tracking": {"mlflow": {"tracking_uri": uri}}})
        with pytest.raises(TrackingError) as caught:
            tracking.open_tracker(spec)
    said = str(caught.value)
    assert SECRET not in said and "token=" not in said, said
    assert "Retrying" in caplog.text and SECRET not in caplog.text, caplog.text
    assert f"MLflow at http://127.0.0.1:{port}/" in said and "nothing was computed" in said


@pytest.mark.parametrize("uri", [f"http://alice:{SECRET}@127.0.0.1:1/x",
                                 f"http://127.0.0.1:1/?token={SECRET}&user=me",
                                 f"http://127.0.0.1:1/?{SECRET}"])
def test_every_part_of_the_tracking_uri_that_may_hold_a_secret_is_hidden(uri):
    said = tracking._scrub(f"url: /?token={SECRET}/api/2.0 and /?{SECRET}/api, user "
                           f"alice:{SECRET}, at {uri}/api/2.0/mlflow/runs/create", uri)
    assert SECRET not in said, said


def _job(tmp_path: Path, model: str, uri: str) -> dict:
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64, seed=2))
    data = job_dict(src, model, str(tmp_path / "out.zarr"))
    data.update(name="sec", runs_dir=str(tmp_path / "runs"),
                tracking={"mlflow": {"tracking_uri": uri}})
    return data


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*.json"))]


def test_an_mlflow_failure_after_the_compute_leaves_the_output_and_its_record_complete(
        tmp_path, fake, model_path, cluster_address):
    """The output was left "running" (then "interrupted" by geoseg status), no record was
    written, and the error said the output was complete. A rerun logs it, as the error says."""
    uri = f"http://alice:{SECRET}@127.0.0.1:{fake.port}"
    data = _job(tmp_path, model_path, uri)

    def expire(_: int) -> None:
        fake.refuse = True  # the token expired during the compute

    with pytest.raises(TrackingError) as caught:
        run(JobSpec.from_dict(data), scheduler=cluster_address, on_start=expire)
    said = str(caught.value)
    [saved] = _records(tmp_path)
    assert "token expired" in said and SECRET not in said
    assert f"the output and its run record ({saved['run_record']}) are complete" in said
    assert "run the job again" in said
    assert output_status(str(tmp_path / "out.zarr")).status == "complete"
    assert saved["status"] == "complete" and saved["chunks"]["computed"] == 1
    assert "token expired" in saved["tracking"]["mlflow"]["error"]
    assert SECRET not in json.dumps(saved)

    fake.refuse = False  # MLflow answers again: the rerun the error names logs the run
    report = run(JobSpec.from_dict(data), scheduler=cluster_address)
    logged = report.provenance["tracking"]["mlflow"]
    assert fake.runs[logged["run_id"]]["status"] == "FINISHED" and "error" not in logged
    assert report.n_tasks == 0 and report.skipped == 1
    assert output_status(str(tmp_path / "out.zarr")).status == "complete"


def test_a_tracking_server_gone_after_the_compute_is_given_up_at_once(tmp_path, fake, model_path,
                                                                     cluster_address):
    """MLflow's retries, with their back-off, spent about four minutes after the compute."""
    data = _job(tmp_path, model_path, f"http://127.0.0.1:{fake.port}/?token={SECRET}")

    def gone(_: int) -> None:
        fake.shutdown()
        fake.server_close()

    began = time.monotonic()
    with pytest.raises(TrackingError) as caught:
        run(JobSpec.from_dict(data), scheduler=cluster_address, on_start=gone)
    assert time.monotonic() - began < 60
    said = str(caught.value)
    assert "could not connect" in said and SECRET not in said
    assert output_status(str(tmp_path / "out.zarr")).status == "complete"
    [saved] = _records(tmp_path)
    assert saved["status"] == "complete" and "could not connect" in saved["tracking"]["mlflow"]["error"]


def test_the_process_environment_and_stdout_are_restored_after_each_mlflow_call(fake):
    import os
    import sys

    before, out = dict(os.environ), sys.stdout
    spec = JobSpec.from_dict({**job_dict("in.zarr", "m.safetensors", "out.zarr"),
                              "tracking": {"mlflow": {"tracking_uri":
                                                      f"http://127.0.0.1:{fake.port}"}}})
    tracker = tracking.open_tracker(spec)
    tracker.start(record())
    tracker.finish(record())
    assert dict(os.environ) == before and sys.stdout is out


def test_another_threads_output_is_never_taken_for_mlflows(fake, capfd):
    """Standard output was swapped for the whole process during each MLflow call: a batch
    thread's print went to the log as "mlflow: ...", and stdout could stay swapped for good."""
    import sys

    out = sys.stdout
    inside, printed = threading.Event(), threading.Event()

    def mlflow_call() -> None:
        with tracking._quiet(f"http://127.0.0.1:{fake.port}"):
            inside.set()
            printed.wait(5)

    thread = threading.Thread(target=mlflow_call)
    thread.start()
    inside.wait(5)
    print("result of another job: 42")
    printed.set()
    thread.join()
    assert "result of another job: 42" in capfd.readouterr().out and sys.stdout is out


def test_an_interrupt_while_logging_ends_the_mlflow_run_and_the_record_says_so(
        tmp_path, fake, model_path, monkeypatch):
    """The MLflow run was left RUNNING for ever, and the record named it with no error."""
    data = _job(tmp_path, model_path, f"http://127.0.0.1:{fake.port}")

    def stopped(self, record) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking.MlflowTracker, "finish", stopped)
    with pytest.raises(KeyboardInterrupt):
        run(JobSpec.from_dict(data), scheduler="threads")
    [saved] = _records(tmp_path)
    logged = saved["tracking"]["mlflow"]
    assert "interrupted while logging to MLflow" in logged["error"]
    assert fake.runs[logged["run_id"]]["status"] == "KILLED"
    assert output_status(str(tmp_path / "out.zarr")).status == "complete"


def test_validate_refuses_a_database_store_whose_driver_is_not_installed(tmp_path, model_path):
    """`geoseg validate` said ok to a postgresql:// store without its driver, the run then
    failed on it: the driver is loaded (nothing connected to or created) and its absence named."""
    import importlib.util

    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed here: its absence cannot be shown")
    uri = "postgresql+pg8000://mluser:PgPassw0rd99@127.0.0.1:1/mlflow"
    job = _job(tmp_path, model_path, uri)
    with pytest.raises(TrackingError) as caught:
        tracking.check_tracking(JobSpec.model_validate(job))
    said = str(caught.value)
    assert "the database driver cannot be loaded" in said and "pg8000" in said, said
    assert "PgPassw0rd99" not in said and "mluser" not in said, said
    sqlite = f"sqlite:///{tmp_path / 'm' / 'mlflow.db'}"  # a store the run creates: left alone
    job["tracking"] = {"mlflow": {"tracking_uri": sqlite}}
    assert "the run creates" in tracking.check_tracking(JobSpec.model_validate(job))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("uri, said", [("sqlite:///{folder}/trk.db?timeout=abc", "convert string"),
                                       ("SQLite:///{folder}/trk.db", "SQLite")])
def test_validate_names_a_database_uri_sqlalchemy_cannot_use(tmp_path, model_path, uri, said):
    """A query value the driver cannot take was an internal error of validate (run said it
    clearly), an upper-case scheme a missing driver to install."""
    job = _job(tmp_path, model_path, uri.format(folder=tmp_path))
    with pytest.raises(TrackingError) as caught:
        tracking.check_tracking(JobSpec.model_validate(job))
    message = str(caught.value)
    assert "SQLAlchemy cannot use this database URI" in message and said in message, message
    assert "Install the driver" not in message, message

