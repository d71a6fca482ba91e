"""An output store that vanishes mid-run: the task's clear error is the one shown, not the
raw botocore error of releasing the lease there (``internal error: EndpointConnectionError``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import boto3
import pytest

from geoseg.errors import GeosegError, StorageUnavailableError
from geoseg.jobs.lease import taken

SECRET = "VANISHING-SECRET-789"


@pytest.fixture
def vanishing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, dict]]:
    """A moto server of its own (the test stops it), and storage options for it."""
    from moto.server import ThreadedMotoServer

    for name, value in (("GEOSEG_RETRIES", "0"), ("GEOSEG_CONNECT_TIMEOUT", "1"),
                        ("GEOSEG_READ_TIMEOUT", "1")):
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"key": "vanishing-key", "secret": SECRET,
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id=options["key"],
                 aws_secret_access_key=SECRET).create_bucket(Bucket="vanishing")
    running = [True]

    def stop() -> None:
        if running[0]:
            server.stop()
            running[0] = False

    yield stop, options
    stop()


def test_the_task_error_is_kept_when_releasing_fails_too(vanishing, caplog):
    stop, options = vanishing
    failure = StorageUnavailableError("Writing s3://vanishing/out.zarr failed: the store is gone")
    with (caplog.at_level(logging.WARNING, logger="geoseg"),
          pytest.raises(StorageUnavailableError) as caught,
          taken("s3://vanishing/out.zarr", options, seconds=60, refused="not run")):
        stop()
        raise failure
    assert caught.value is failure
    assert "the lease on s3://vanishing/out.zarr could not be released" in caplog.text
    assert SECRET not in caplog.text


def test_a_release_failing_on_its_own_is_a_storage_error(vanishing):
    stop, options = vanishing
    with (pytest.raises(GeosegError) as caught,
          taken("s3://vanishing/alone.zarr", options, seconds=60, refused="not run")):
        stop()
    said = str(caught.value)
    assert isinstance(caught.value, StorageUnavailableError), repr(caught.value)
    assert "Releasing the lease s3://vanishing/alone.zarr.lease failed" in said, said
    assert SECRET not in said and caught.value.__cause__ is None
