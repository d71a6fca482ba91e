"""Real storage faults injected at a loopback S3 server (moto behind :class:`FaultProxy`):
transient ones (503, SlowDown, a reset connection, a request that hangs) are retried on reads
and on writes and change nothing in what is read or written; permanent ones (403, a missing
bucket, a refused connection) fail in seconds with a geoseg error, without retrying."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
import yaml
import zarr

from geoseg.errors import (
    BucketNotFoundError,
    StorageAccessError,
    StorageUnavailableError,
)
from geoseg.io import open_source
from geoseg.io.output import OutputTarget
from tests.conftest import job_dict, textured_image, write_zarr
from tests.ports import free_port

pytestmark = pytest.mark.timeout(90)
CHUNK = r"/c/0/1/1$"  # one chunk of a (band, y, x) Zarr array, its second row and column
WINDOW = (slice(0, 130), slice(0, 120))
CORNER = (slice(0, 64), slice(0, 64))  # one chunk
TRANSIENT = ["503", "slowdown", "reset"]
# In a row, enough to get past the libraries to geoseg's own loop: botocore makes two attempts,
# and aiohttp retries a request once when a reused connection is reset.
TIMES = {"503": 3, "slowdown": 3, "reset": 5}


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("GEOSEG_RETRY_DELAY", "0.05")


def upload(local: Path, url: str, options: dict) -> str:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    for file in (f for f in local.rglob("*") if f.is_file()):
        fs.put_file(str(file), f"{url}/{file.relative_to(local).as_posix()}")
    return url


@pytest.fixture()
def scene(s3_server, tmp_path) -> tuple[str, np.ndarray]:
    """A 130 x 120 three-band Zarr array on S3 in 64 x 64 chunks, and its pixels."""
    image = textured_image(130, 120)
    local = Path(write_zarr(tmp_path / "scene.zarr", image))
    return upload(local, f"s3://geoseg/faults/{tmp_path.name}/scene.zarr", s3_server), image


@pytest.fixture()
def output(s3_server, tmp_path) -> str:
    """An empty Zarr group on S3 with a 130 x 120 uint8 array ``x`` in 64 x 64 chunks."""
    url = f"s3://geoseg/faults/{tmp_path.name}/out.zarr"
    group = zarr.open_group(url, mode="w", storage_options=s3_server)
    group.create_array("x", shape=(130, 120), chunks=(64, 64), dtype="uint8", fill_value=0)
    return url


def stored(url: str, options: dict) -> np.ndarray:
    return zarr.open_group(url, mode="r", storage_options=options)["x"][...]


# --- transient faults are retried --------------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_faults_on_reads_are_retried(s3_server, proxy, scene, fault):
    url, image = scene
    proxy.inject(fault, method="GET", path=CHUNK, times=TIMES[fault])
    got = open_source(url, proxy.options(s3_server)).read(WINDOW)
    assert np.array_equal(got, image)
    assert proxy.count(fault, "GET", CHUNK) == TIMES[fault]


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_faults_on_writes_are_retried(s3_server, proxy, output, fault):
    data = textured_image(130, 120, bands=1)[0]
    proxy.inject(fault, method="PUT", path=r"/x/c/1/1$", times=TIMES[fault])
    OutputTarget(output, proxy.options(s3_server)).write("x", WINDOW, data)
    assert np.array_equal(stored(output, s3_server), data)
    assert proxy.count(fault, "PUT") == TIMES[fault]


# --- hanging requests time out ---------------------------------------------------------------


def test_a_hanging_read_times_out_and_is_retried(s3_server, proxy, scene, monkeypatch):
    monkeypatch.setenv("GEOSEG_READ_TIMEOUT", "1")
    url, image = scene
    source = open_source(url, proxy.options(s3_server))
    proxy.inject("hang", method="GET", path=CHUNK, times=3, seconds=60)
    started = time.monotonic()
    assert np.array_equal(source.read(WINDOW), image)
    assert time.monotonic() - started < 15  # three 1 s timeouts and the backoff, not 60 s
    assert proxy.count("hang") == 3


def test_a_hanging_write_times_out_and_is_retried(s3_server, proxy, output, monkeypatch):
    monkeypatch.setenv("GEOSEG_READ_TIMEOUT", "1")
    data = textured_image(130, 120, bands=1)[0]
    proxy.inject("hang", method="PUT", path=r"/x/c/0/1$", times=3, seconds=60)
    started = time.monotonic()
    OutputTarget(output, proxy.options(s3_server)).write("x", WINDOW, data)
    assert time.monotonic() - started < 15
    assert np.array_equal(stored(output, s3_server), data)


def test_a_server_that_never_answers_fails_in_bounded_time(s3_server, proxy, scene, monkeypatch):
    monkeypatch.setenv("GEOSEG_READ_TIMEOUT", "1")
    monkeypatch.setenv("GEOSEG_RETRIES", "1")
    url, _ = scene
    source = open_source(url, proxy.options(s3_server))
    proxy.inject("hang", method="GET", path=CHUNK, times=100, seconds=60)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"failed 2 time\(s\) in .* transient"):
        source.read(WINDOW)
    assert time.monotonic() - started < 15  # (1 + 1 retry) x 2 attempts x 1 s, and backoff
    assert proxy.count("hang") == 4


# --- permanent faults fail at once -------------------------------------------------------------


def test_access_denied_on_a_read_is_not_retried(s3_server, proxy, scene):
    url, _ = scene
    source = open_source(url, proxy.options(s3_server))
    proxy.inject("403", method="GET", path=CHUNK, times=100)
    with pytest.raises(StorageAccessError, match=r"Reading s3://geoseg/faults/.* access denied") as info:
        source.read(WINDOW)
    assert proxy.count("403") == 1
    assert s3_server["secret"] not in str(info.value) and info.value.__cause__ is None


def test_access_denied_on_a_write_is_not_retried(s3_server, proxy, output):
    proxy.inject("403", method="PUT", path=r"/x/c/", times=100)
    with pytest.raises(StorageAccessError, match=r"Writing s3://geoseg/faults/.* access denied"):
        OutputTarget(output, proxy.options(s3_server)).write("x", CORNER, np.ones((64, 64)))
    assert proxy.count("403") == 1


def test_a_missing_bucket_fails_in_seconds(s3_server, proxy):
    started = time.monotonic()
    with pytest.raises(BucketNotFoundError, match="the bucket 'no-such-faults' does not exist"):
        open_source("s3://no-such-faults/scene.zarr", proxy.options(s3_server))
    assert time.monotonic() - started < 10
    assert proxy.log and len(set(proxy.log)) == len(proxy.log)  # probes, each once: no retry


def test_a_refused_connection_fails_in_seconds_naming_the_endpoint(s3_server, monkeypatch):
    monkeypatch.setenv("GEOSEG_RETRY_DELAY", "2")  # retrying would take 2 + 4 + 8 + 16 s
    port = free_port()
    options = {**s3_server, "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    for attempt in (lambda: open_source("s3://geoseg/scene.zarr", options),
                    lambda: OutputTarget("s3://geoseg/out.zarr", options).write(
                        "x", WINDOW, np.ones((130, 120)))):
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as info:
            attempt()
        assert time.monotonic() - started < 6
        message = str(info.value)
        assert f"the storage server at 127.0.0.1:{port} refused the connection" in message
        assert "client_kwargs.endpoint_url" in message and "did not retry" in message
        assert s3_server["secret"] not in message


def test_timeouts_are_checked_settings(monkeypatch):
    from geoseg.errors import SettingError

    monkeypatch.setenv("GEOSEG_READ_TIMEOUT", "0")
    with pytest.raises(SettingError, match=r"GEOSEG_READ_TIMEOUT: received '0'; expected a "
                                           r"number > 0 \(seconds"):
        fsspec.filesystem("s3", skip_instance_cache=True)


# --- whole jobs --------------------------------------------------------------------------------


def geoseg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], check=False,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "1000", **(env or {})})


def s3_job(tmp_path: Path, scene: str, model: str, options: dict, out: str = "out.zarr") -> dict:
    data = job_dict(scene, model, f"s3://geoseg/faults/{tmp_path.name}/{out}")
    data["input"]["storage_options"] = data["output"]["storage_options"] = options
    data["runs_dir"] = str(tmp_path / "runs")
    return data


@pytest.mark.timeout(180)
def test_a_job_through_transient_faults_writes_what_a_clean_run_writes(
        s3_server, proxy, scene, tmp_path, model_path):
    from geoseg.jobs import JobSpec, run

    url, _ = scene
    clean = s3_job(tmp_path, url, model_path, s3_server, "clean.zarr")
    run(JobSpec.from_dict(clean))  # a small job: threads in this process
    proxy.inject("503", method="GET", path=f"scene.zarr{CHUNK}", times=3)
    proxy.inject("slowdown", method="GET", path=r"scene.zarr/c/0/0/1$", times=3)
    proxy.inject("reset", method="PUT", path=r"out.zarr/classes/c/1/0$", times=5)
    proxy.inject("503", method="PUT", path=r"out.zarr/classes/c/0/1$", times=3)
    run(JobSpec.from_dict(s3_job(tmp_path, url, model_path, proxy.options(s3_server))))
    assert [proxy.count(a) for a in ("503", "slowdown", "reset")] == [6, 3, 5]
    folder = f"s3://geoseg/faults/{tmp_path.name}"
    got, want = (zarr.open_group(f"{folder}/{name}", mode="r", storage_options=s3_server)
                 for name in ("out.zarr", "clean.zarr"))
    assert np.array_equal(got["classes"][...], want["classes"][...])


@pytest.mark.slow  # a geoseg process: about 20 s, torch's import most of it
@pytest.mark.timeout(180)
def test_a_job_denied_its_writes_fails_cleanly_and_fast(s3_server, proxy, scene, tmp_path,
                                                       model_path):
    proxy.inject("403", method="PUT", path=r"out.zarr/classes/c/", times=1000)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(s3_job(tmp_path, scene[0], model_path,
                                         proxy.options(s3_server))))
    result = geoseg("run", str(job), env={"GEOSEG_RETRY_DELAY": "2"})
    output = result.stdout + result.stderr
    assert result.returncode in (1, 2), output
    assert "Traceback" not in output and "Compute Failed" not in output, output
    assert "error: output classes chunk" in output and "access denied" in output, output
    assert s3_server["secret"] not in output, output
    assert 1 <= proxy.count("403") <= 6  # each of the 6 chunks' tasks at most once, no retries


@pytest.mark.timeout(120)
def test_a_job_whose_store_refuses_connections_fails_in_seconds(s3_server, scene, tmp_path,
                                                               model_path):
    options = {**s3_server, "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"}}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(s3_job(tmp_path, scene[0], model_path, options)))
    started = time.monotonic()
    result = geoseg("run", str(job), env={"GEOSEG_RETRY_DELAY": "60"})
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode in (1, 2) and "Traceback" not in output, output
    assert "refused the connection" in output and s3_server["secret"] not in output, output
    # one retry alone would wait 60 s; the interpreter and torch start in the rest (about 10 s
    # idle, 35 s on two cores under four test processes)
    assert seconds < 60, seconds
