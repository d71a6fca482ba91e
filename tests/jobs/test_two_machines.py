"""Two machines without a shared disk: a job whose workers see only S3.

Each Dask worker runs in a network namespace of its own, on a private link-local LAN with the
host (see ``tests/jobs/netns.py``), and in a mount namespace where the host's temporary folders
(this test's files, the input and the model among them) are hidden by an empty tmpfs. The S3
server (moto) and the scheduler listen on the host's address on that LAN only; the client is
this process. The job reads its input and model from S3 and writes its output there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from distributed import Client, get_task_stream

import geoseg
from geoseg.jobs import JobSpec, run
from geoseg.jobs.status import verify_output
from tests.conftest import SHARED_DATA, job_dict, textured_image, write_geotiff
from tests.jobs import netns

DASK = str(Path(sys.executable).with_name("dask"))


def _hidden_folders(basetemp: Path) -> list[str]:
    """The host's temporary folders (the test's files are in one of them) and the shared data."""
    hidden: list[str] = []
    for path in sorted({tempfile.gettempdir(), "/tmp", str(basetemp), str(SHARED_DATA)}):
        if os.path.isdir(path) and not any(Path(path).is_relative_to(h) for h in hidden):
            hidden.append(path)
    return hidden


def _start_s3(host: str) -> tuple[object, dict]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    endpoint = "http://{}:{}".format(*server.get_host_and_port())
    options = {"key": "two-machines-key", "secret": "two-machines-secret-value",
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=options["key"],
                 aws_secret_access_key=options["secret"]).create_bucket(Bucket="geoseg")
    return server, options


def _start_scheduler(host: str, folder: Path) -> tuple[subprocess.Popen, str]:
    file = folder / "scheduler.json"
    process = subprocess.Popen([DASK, "scheduler", "--host", host, "--port", "0", "--no-dashboard",
                                "--scheduler-file", str(file)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not file.exists() or not file.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler did not start on {host} (exit code {process.poll()})")
        time.sleep(0.1)
    return process, json.loads(file.read_text())["address"]


@pytest.fixture
def two_machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Scheduler and S3 on the host's LAN address; one worker per namespace, blind to /tmp."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("two-machines")
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    with netns.private_lan(2) as lan:
        server, options = _start_s3(lan.host)
        scheduler = None
        try:
            scheduler, address = _start_scheduler(lan.host, folder)
            for i, own in enumerate(lan.addresses):
                lan.spawn(i, [DASK, "worker", address, "--host", own, "--name", f"machine-{i}",
                              "--nthreads", "1", "--no-nanny", "--no-dashboard", "--local-directory", "/tmp/dask"],
                          hide=_hidden_folders(tmp_path_factory.getbasetemp()), env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with Client(address, timeout=30) as client:
                client.wait_for_workers(2, timeout=90)
                yield {"lan": lan, "s3": options, "address": address, "client": client}
        finally:
            lan.end_processes(also=[scheduler] if scheduler else [])
            server.stop()


def upload(local: Path, url: str, options: dict) -> str:
    fsspec.filesystem("s3", skip_instance_cache=True, **options).put(str(local), url)
    return url


@pytest.mark.timeout(60)
def test_a_private_lan_hides_the_host_disk_and_leaves_nothing_behind(tmp_path, tmp_path_factory):
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    secret_file = tmp_path / "on-the-host-only.txt"
    secret_file.write_text("host disk")
    probe = f"test -e {secret_file} && echo seen || echo hidden; ls /tmp | wc -l; sleep 60"
    with pytest.raises(RuntimeError, match="body failed"), netns.private_lan(2) as lan:
        names, links = list(lan.namespaces), [*lan.links, lan.bridge]
        process = lan.spawn(1, ["sh", "-c", probe], hide=_hidden_folders(tmp_path_factory.getbasetemp()),
                            stdout=subprocess.PIPE, text=True)
        assert [process.stdout.readline().strip() for _ in range(2)] == ["hidden", "0"]
        assert subprocess.run(["ip", "-n", names[1], "route", "show", "default"], capture_output=True,
                              text=True, check=True).stdout == ""  # nowhere to go but the LAN
        raise RuntimeError("body failed")
    assert process.poll() is not None
    assert not set(names) & set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                               text=True, check=True).stdout.split())
    for link in links:
        assert subprocess.run(["ip", "link", "show", link], capture_output=True, check=False).returncode != 0
    assert secret_file.read_text() == "host disk"  # the tmpfs hid it in that namespace only


@pytest.mark.slow  # 30-55 s on two busy cores: four processes import torch and geoseg
@pytest.mark.timeout(180)
def test_workers_without_a_shared_disk_read_and_write_only_s3(tmp_path, model_path, two_machines):
    client, lan, options = two_machines["client"], two_machines["lan"], two_machines["s3"]
    workers = client.scheduler_info()["workers"]
    assert sorted(w["host"] for w in workers.values()) == sorted(lan.addresses)  # in the namespaces

    image = textured_image(192, 192, seed=14)
    local_input = write_geotiff(tmp_path / "scene.tif", image)
    spec = job_dict(upload(Path(local_input), "s3://geoseg/in/scene.tif", options),
                    upload(Path(model_path), "s3://geoseg/models/unet.safetensors", options),
                    "s3://geoseg/out/mask.zarr")
    for section in ("input", "model", "output"):
        spec[section]["storage_options"] = options
    # what the host wrote is on the host's disk only: the workers see neither input nor model
    for path in (local_input, model_path):
        assert os.path.exists(path)
        assert client.run(os.path.exists, path) == dict.fromkeys(workers, False)

    with get_task_stream(client) as stream:
        report = run(JobSpec.from_dict(spec), scheduler=two_machines["address"])
    assert report.n_tasks == 9

    out = zarr.open_group("s3://geoseg/out/mask.zarr", mode="r", storage_options=options)
    expected = geoseg.load_model(model_path).predict_image(image).argmax(0)
    np.testing.assert_array_equal(out["classes"][...], expected)
    assert out.attrs["geoseg"]["status"] == "complete"
    assert verify_output("s3://geoseg/out/mask.zarr", options).ok
    ran_on = {record["worker"] for record in stream.data if "segment_to_store" in str(record["key"])}
    assert ran_on == set(workers), f"tasks ran on {sorted(ran_on)}, expected both workers"
