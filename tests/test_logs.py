"""Logs as text or JSON lines, progress (chunks, Mpx/s, ETA), the dashboard link; never secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
import zarr
from distributed import Client, LocalCluster
from rich.console import Console

from geoseg import logs
from geoseg.cli import JobProgress
from geoseg.errors import SettingError
from tests.cli import geoseg as in_this_process
from tests.conftest import job_dict, textured_image, write_zarr


def geoseg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command in a process of its own: for the tests whose assertions cover every line it
    prints (see tests/cli.py); the others run it here, with ``in_this_process``."""
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], check=False,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def collected():
    handler, logger = Collect(), logging.getLogger("geoseg.jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("geoseg.jobs", logging.INFO, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_json_lines_carry_time_level_logger_message_and_fields_with_secrets_hidden():
    line = logs.JsonFormatter().format(record("job started", job="demo", chunks_total=16,
                                              storage_options={"secret": "s3cr3t"}, token="t0k"))
    data = json.loads(line)
    assert "\n" not in line
    assert {k: data[k] for k in ("level", "logger", "message", "job", "chunks_total")} == {
        "level": "INFO", "logger": "geoseg.jobs", "message": "job started", "job": "demo",
        "chunks_total": 16}
    assert data["time"].endswith("+00:00") and "T" in data["time"]
    assert data["storage_options"] == data["token"] == "<hidden>" and "s3cr3t" not in line
    text = logs.TextFormatter().format(record("job started", job="demo"))
    assert text.endswith("INFO    job started (job=demo)")


@pytest.fixture()
def restore_logging():
    names = ("geoseg", *logs.FOREIGN)
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in names}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
    logging.captureWarnings(False)


def test_json_setup_makes_dask_records_and_warnings_json_lines_too(capsys, restore_logging):
    logs.setup("json")
    logging.getLogger("geoseg.jobs").info("job started", extra={"job": "x"})
    logging.getLogger("distributed.scheduler").warning("lost a worker")
    warnings.warn("port 8787 is taken, using another", UserWarning, stacklevel=1)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("geoseg.jobs", "INFO"), ("distributed.scheduler", "WARNING"), ("py.warnings", "WARNING")]
    assert "port 8787 is taken" in lines[2]["message"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_warnings_and_dask_records_are_scrubbed_of_credentials_in_either_format(
        capsys, restore_logging, fmt):
    """zarr's warning quoted an HTTP input's URL with its user info and signed query: JSON lines
    were scrubbed, the text format printed it as it came."""
    logs.setup(fmt)
    url = "http://user:PASSX2@127.0.0.1:8766/in.zarr?sig=SIGQ9"
    warnings.warn(f"Both zarr.json and .zarray exist at <FsspecStore({url})>", UserWarning,
                  stacklevel=1)
    logging.getLogger("distributed.worker").warning(f"failed to read {url}")
    said = capsys.readouterr().err
    assert "127.0.0.1:8766/in.zarr" in said and said.count("WARNING") == 2, said
    assert "PASSX2" not in said and "SIGQ9" not in said, said


def test_log_format_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.delenv("GEOSEG_LOG_FORMAT", raising=False)
    assert logs.log_format() == "text"
    monkeypatch.setenv("GEOSEG_LOG_FORMAT", "JSON")
    assert logs.log_format() == "json" and logs.log_format("text") == "text"
    monkeypatch.setenv("GEOSEG_LOG_FORMAT", "xml")
    expected = "GEOSEG_LOG_FORMAT: received 'xml'; expected one of text, json"
    with pytest.raises(SettingError, match=expected):
        logs.log_format()


def test_progress_records_every_tenth_of_the_chunks_with_rate_and_eta(collected):
    progress = logs.ProgressLog()
    progress.start(25)
    for _ in range(25):
        time.sleep(0.01)  # at least 30 ms for the first 3 chunks: an ETA of at least 0.2 s
        progress.done(SimpleNamespace(pixels=1_000_000))
    done = [r.chunks_done for r in collected]
    assert done == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]
    assert all(r.chunks_total == 25 and r.mpx_per_s > 0 for r in collected)
    assert [r.eta_s for r in collected][-1] == 0 and collected[0].eta_s > 0


def test_progress_bar_shows_chunks_rate_and_eta():
    progress = JobProgress(Console(file=io.StringIO()))
    progress.start(4)
    for _ in range(3):
        progress.done(SimpleNamespace(pixels=2_000_000))
    progress.bar.stop()
    screen = Console(file=io.StringIO(), width=200)
    screen.print(progress.bar.get_renderable())
    shown = screen.file.getvalue()
    assert "3/4" in shown and "Mpx/s" in shown and "ETA 0:00:0" in shown


def test_dashboard_link_of_an_existing_scheduler_and_of_a_local_cluster(cluster_address):
    with Client(cluster_address) as client:
        port = client.scheduler_info(n_workers=0)["services"]["dashboard"]
        link = logs.dashboard_link(client)
    assert link is not None and link.startswith("http") and f":{port}/" in link
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        has_bokeh = logs._has_bokeh()
        assert (logs.dashboard_link(client) is not None) == has_bokeh


@pytest.fixture()
def s3_job(tmp_path, model_path, s3_server):
    src = "s3://geoseg/logs/in.zarr"
    image = textured_image(100, 70, seed=3)
    arr = zarr.create_array(src, shape=image.shape, chunks=(3, 64, 64), dtype="uint8",
                            storage_options=s3_server)
    arr[:] = image
    data = job_dict(src, model_path, "s3://geoseg/logs/out.zarr", chunks=[32, 32])
    data["input"]["storage_options"] = data["output"]["storage_options"] = s3_server
    data["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_geoseg_log_format_json_writes_only_json_lines_and_no_secret(s3_job, s3_server,
                                                                     cluster_address):
    result = geoseg("--log-format", "json", "run", s3_job, "--scheduler", cluster_address)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    by_message = {line["message"]: line for line in lines}
    started, finished = by_message["job started"], by_message["job finished"]
    assert started["output"] == "s3://geoseg/logs/out.zarr" and started["chunks_total"] == 12
    assert finished["chunks_done"] == 12 and os.path.exists(finished["run_record"])
    progress = [line for line in lines if line["message"] == "progress"]
    assert progress[-1]["chunks_done"] == 12 and progress[-1]["eta_s"] == 0
    assert all({"time", "level", "logger", "mpx_per_s"} <= set(p) for p in progress)
    assert any(line["message"].startswith("dashboard: http") for line in lines)
    for secret in (s3_server["secret"], s3_server["key"]):
        assert secret not in result.stderr + result.stdout


def test_default_logs_are_readable_text_with_the_dashboard_and_the_run_record(tmp_path, model_path,
                                                                             cluster_address):
    src = write_zarr(tmp_path / "in.zarr", textured_image(40, 40))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(src, model_path, str(tmp_path / "out.zarr"))))
    result = in_this_process("run", str(job), "--scheduler", cluster_address,
                             env={"GEOSEG_LOG_FORMAT": ""})
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "INFO job started (job=segmentation" in said and "dashboard: http" in said
    assert "run record: " in said and not result.stderr.lstrip().startswith("{")


def test_errors_are_json_lines_too_and_a_bad_format_is_refused(tmp_path):
    result = geoseg("run", str(tmp_path / "missing.yaml"), env={"GEOSEG_LOG_FORMAT": "json"})
    assert result.returncode == 2
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if x.strip()]
    assert line["level"] == "ERROR" and line["message"].startswith("No job spec at")
    assert line["error"] == "JobSpecError"
    refused = in_this_process("--log-format", "xml", "validate", str(tmp_path / "missing.yaml"))
    assert refused.returncode == 2
    assert "--log-format: received 'xml'; expected one of text, json" in refused.stderr


def _abandon(error: BaseException) -> None:
    """A future that gets ``error`` and that nobody awaits: asyncio logs it when collected."""
    import asyncio
    import gc

    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        future.set_exception(error)
        del future
        gc.collect()
    finally:
        loop.close()


def test_a_closed_clusters_abandoned_timeout_is_not_printed_and_other_errors_are(caplog):
    """A Dask comm's timed wait that ran out after the cluster closed is noise on stderr once
    the job has reported; any other exception nobody retrieved still shows."""
    from distributed.client import AllExit  # a gather's inner wait, abandoned on Ctrl-C

    logs.quiet_cluster_shutdown()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _abandon(TimeoutError("Timeout"))
        _abandon(AllExit())
        _abandon(ValueError("a real fault"))
    said = [(r.getMessage(), r.exc_info[1]) for r in caplog.records if r.name == "asyncio"]
    assert len(said) == 1 and isinstance(said[0][1], ValueError), said
    assert said[0][0].startswith("Future exception was never retrieved")


def _fail_in_a_callback(coroutine: Any) -> None:
    """Run ``coroutine`` as a tornado loop's callback, as Dask runs a cluster's background start
    of its workers; tornado logs its exception ("Exception in callback")."""
    import asyncio

    from tornado.ioloop import IOLoop

    async def main() -> None:
        IOLoop.current().add_callback(coroutine)
        await asyncio.sleep(0.05)

    asyncio.run(main())


class _Cluster:
    """A stand-in for distributed's SpecCluster, whose background start of workers tornado runs
    as a callback; ``broken`` fails it as a nanny that could not start does."""

    async def _correct_state_internal(self) -> None:  # SpecCluster's, by name
        try:
            raise RuntimeError("Nanny failed to start worker process")
        except RuntimeError as exc:
            raise RuntimeError("Nanny failed to start.") from exc


def test_a_worker_start_cut_short_by_an_interrupt_is_not_printed_and_other_failures_are(caplog):
    """Closing a cluster that Ctrl-C or SIGTERM interrupted while a worker process started fails
    the cluster's background start ("Nanny failed to start"), which tornado printed with its
    traceback after the command said it was interrupted. Another cluster's failed start (a
    later one in a notebook) and any other callback's failure still show."""
    closed, later = _Cluster(), _Cluster()

    async def another_callback() -> None:
        raise RuntimeError("a real fault")

    logs.quiet_cancelled_start(closed)
    with caplog.at_level(logging.ERROR, logger="tornado.application"):
        _fail_in_a_callback(closed._correct_state_internal)
        _fail_in_a_callback(later._correct_state_internal)
        _fail_in_a_callback(another_callback)
    said = [str(r.exc_info[1]) for r in caplog.records if r.name == "tornado.application"]
    assert said == ["Nanny failed to start.", "a real fault"], said


def test_an_exception_raised_from_itself_is_logged_not_looped_over(caplog):
    """The filters walk an exception's causes: one raised ``from`` itself made a loop."""
    logs.quiet_cancelled_start(_Cluster())
    logs.quiet_scheduler_loss()
    error = RuntimeError("its own cause")
    error.__cause__ = error
    try:
        with caplog.at_level(logging.ERROR):
            for name in ("tornado.application", "distributed.client"):
                logging.getLogger(name).error("failed", exc_info=(RuntimeError, error, None))
    finally:
        logs.quiet_scheduler_loss(False)
    assert len([r for r in caplog.records if r.getMessage() == "failed"]) == 2


INTERRUPTED_SYNC = """
import asyncio, sys, threading, time
from distributed.utils import LoopRunner, sync
from geoseg import logs

logs.setup(quiet_tasks=sys.argv[1] == "quiet")
runner = LoopRunner(asynchronous=False)
runner.start()
wait, main = threading.Event.wait, threading.get_ident()

def interrupted_once(self, timeout=None):  # Ctrl-C landing as the call begins
    if threading.get_ident() == main and threading.Event.wait is interrupted_once:
        threading.Event.wait = wait
        raise KeyboardInterrupt
    return wait(self, timeout)

threading.Event.wait = interrupted_once
runner.loop.add_callback(time.sleep, 0.3)  # the loop busy: the cancel is queued before the call
try:
    sync(runner.loop, asyncio.sleep, 0.1)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
time.sleep(0.3)  # distributed's cancel has run on the loop
runner.stop()
"""


def test_a_client_call_interrupted_as_it_begins_prints_no_traceback():
    """distributed cancels the interrupted call on its loop, where it meets a future it never
    made: tornado logged that NameError with its traceback under a run's "interrupted"."""
    def said(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", INTERRUPTED_SYNC, mode], capture_output=True,
                              text=True, timeout=60, check=True)
        assert "interrupted" in done.stderr, done.stderr
        return done.stderr

    if "NameError" not in said("debug"):  # --debug keeps every record of distributed's
        pytest.skip("distributed no longer meets a future it never made: the filter can go")
    quiet = said("quiet")
    assert "Traceback" not in quiet and "NameError" not in quiet, quiet


def test_text_lines_escape_control_characters_in_fields_as_in_messages():
    """A field (a URL, a name) with escape codes reached the terminal raw in the text format."""
    line = logs.TextFormatter().format(record("job started", input="in\x1b[2J\x1b[31m.zarr\nforged"))
    assert "\x1b" not in line and "\n" not in line
    assert "input=in\\x1b[2J\\x1b[31m.zarr\\x0aforged" in line
