"""Credentials written into an object store's URL (``s3://KEY:SECRET@bucket/path``) are refused,
as an input and as an output, with the URL shown without them and where credentials go instead.

s3fs takes no credentials from a URL: it sent the user info as part of the bucket name, and the
error said the input was corrupt (or, for an output, was botocore's internal
``ParamValidationError``). ``http(s)://user:password@host`` is basic authentication, which
fsspec's HTTP client sends: it keeps working.
"""

from __future__ import annotations

import base64
import functools
import threading
from pathlib import Path

import fsspec
import numpy as np
import pytest
import yaml

import geoseg
from geoseg.errors import ModelFileError, OutputLocationError, StorageAccessError
from geoseg.io.allow import check_output_url
from geoseg.models import save_model
from tests.cli import geoseg as geoseg_cli
from tests.conftest import job_dict, random_unet, textured_image, write_geotiff, write_zarr
from tests.io.test_remote import CountingServer, RangeHandler

KEY, SECRET = "AKIDINURL0001", "URL-SECRET-zz9+plural-Z"
SLASHED = "URL-SECRET-zz9/plural+Z"  # with '/', as AWS secrets may be: a spec refuses it unparsed
IN_URL = f"s3://{KEY}:{SECRET}@geoseg/creds/in.zarr"
OUT_URL = f"s3://{KEY}:{SECRET}@geoseg/creds/out.zarr"


def write_job(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def assert_refused(result, what: str, url: str) -> None:
    """Exit 2, one message naming the URL without its credentials and where they go instead,
    and the secret (or the key) nowhere in what the command printed."""
    printed = result.stdout + result.stderr
    assert result.returncode == 2, printed
    assert f"{what} {url}: received a URL with credentials in it" in printed, printed
    assert "storage_options (key and secret" in printed and "AWS_ACCESS_KEY_ID" in printed
    assert "ParamValidationError" not in printed and "corrupt" not in printed
    assert SECRET not in printed and KEY not in printed


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_input_url_with_credentials_is_refused(command, s3_server, tmp_path, model_path):
    endpoint = {"client_kwargs": s3_server["client_kwargs"]}  # the endpoint; no key or secret
    data = job_dict(IN_URL, model_path, str(tmp_path / "out.zarr"))
    data["input"]["storage_options"] = endpoint
    result = geoseg_cli(command, write_job(tmp_path, data))
    assert_refused(result, "input.url", "s3://geoseg/creds/in.zarr")  # when the spec is read
    assert not (tmp_path / "out.zarr").exists()
    if command == "validate":  # what the message says to do works: the keys in storage_options
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_server)
        fs.put(write_zarr(tmp_path / "in.zarr", textured_image(64, 64)), "geoseg/creds/in.zarr",
               recursive=True)
        data["input"] = {"url": "s3://geoseg/creds/in.zarr", "storage_options": s3_server}
        fixed = geoseg_cli("validate", write_job(tmp_path, data))
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_output_url_with_credentials_is_refused(command, s3_server, tmp_path, model_path):
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64))
    data = job_dict(src, model_path, OUT_URL)
    data["output"]["storage_options"] = {"client_kwargs": s3_server["client_kwargs"]}
    result = geoseg_cli(command, write_job(tmp_path, data))
    assert_refused(result, "output.url", "s3://geoseg/creds/out.zarr")  # when the spec is read
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_server)
    assert not fs.exists("geoseg/creds/out.zarr")


def test_a_run_with_credentials_in_both_urls_prints_no_secret(s3_server, tmp_path, model_path):
    """In a process of its own: nothing the process prints (log lines included) has them. In
    Python, a list of input URLs is checked URL by URL."""
    data = job_dict(IN_URL, model_path, OUT_URL)
    data["input"]["storage_options"] = {"client_kwargs": s3_server["client_kwargs"]}
    result = geoseg_cli("run", write_job(tmp_path, data), own_process=True)
    assert_refused(result, "input.url", "s3://geoseg/creds/in.zarr")  # the spec's check, first
    slashed = f"s3://{KEY}:{SLASHED}@geoseg/creds/in.zarr"
    with pytest.raises(StorageAccessError) as info:
        geoseg.open_raster([slashed], storage_options=data["input"]["storage_options"])
    assert "Input s3://geoseg/creds/in.zarr: received a URL with credentials" in str(info.value)
    for secret in (KEY, SLASHED, *SLASHED.split("/")):
        assert secret not in str(info.value)
    with pytest.raises(OutputLocationError, match="Output s3://geoseg/creds/out.zarr: received a "
                                                  "URL with credentials.*Nothing was written"):
        check_output_url(OUT_URL)  # as the Python API's outputs, exports and convert check it


REPORTED = "s3://AKIA:SuperSecret123@bucket/x.zarr"  # as exploratory testing found it
READERS = {  # every command reading a URL it is given: OUTPUT, PRED, REF, MASK, RUN, --dir
    "status": ["status", REPORTED],
    "verify": ["verify", REPORTED],
    "verify --repair": ["verify", REPORTED, "--repair"],
    "eval PRED": ["eval", REPORTED, "some/out.zarr"],
    "eval REF": ["eval", "some/out.zarr", REPORTED],
    "quicklook": ["quicklook", REPORTED, "q.png"],
    "instances": ["instances", REPORTED, "--out", "o.zarr"],
    "export": ["export", REPORTED, "--cog", "z.tif"],
    "report": ["report", REPORTED],
    "runs": ["runs", "--dir", REPORTED],
    "runs compare": ["runs", "compare", "1", "2", "--dir", REPORTED],
}


@pytest.mark.parametrize("args", READERS.values(), ids=READERS.keys())
def test_a_url_a_command_reads_with_credentials_is_refused(args, tmp_path):
    """s3fs sent the user info as part of the bucket name, and botocore's ParamValidationError
    came out as an internal error (exit 1) quoting the bucket name, secret and all."""
    result = geoseg_cli(*args, cwd=tmp_path)
    printed = result.stdout + result.stderr
    assert result.returncode == 2, printed
    assert "Traceback" not in printed and "internal error" not in printed, printed
    assert "s3://bucket/x.zarr: received a URL with credentials in it" in printed, printed
    assert "AWS_ACCESS_KEY_ID" in printed, printed  # where credentials go instead
    assert "SuperSecret123" not in result.stdout and "SuperSecret123" not in result.stderr
    assert "AKIA" not in printed, printed
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder named after the URL


WRITTEN = {  # every option naming a file a command writes or reads besides its OUTPUT
    "--cog": ["export", "some/out.zarr", "--cog", REPORTED],
    "--ome-zarr": ["export", "some/out.zarr", "--ome-zarr", REPORTED],
    "--nifti": ["export", "some/out.zarr", "--nifti", REPORTED],
    "--scores": ["report", "some/run.json", "--scores", REPORTED],
    "--out": ["report", "some/run.json", "--out", REPORTED],
    "--out ": ["instances", "some/mask.zarr", "--out", REPORTED],
    "--image": ["quicklook", "some/out.zarr", "q.png", "--image", REPORTED],
}


@pytest.mark.parametrize("named, args", WRITTEN.items(), ids=WRITTEN.keys())
def test_an_option_url_with_credentials_is_refused_naming_the_option(named, args, tmp_path):
    """``export --ome-zarr`` reached botocore, whose ParamValidationError printed the secret as
    an internal error; ``report --scores``, read as a path, printed ``s3:/KEY:SECRET@...``."""
    result = geoseg_cli(*args, cwd=tmp_path)
    printed = result.stdout + result.stderr
    assert result.returncode == 2, printed
    assert f"{named.strip()} s3://bucket/x.zarr: received a URL with credentials in it" in printed
    assert "SuperSecret123" not in printed and "AKIA" not in printed, printed
    assert list(tmp_path.iterdir()) == []


def test_a_model_url_with_credentials_is_refused(tmp_path):
    model = f"s3://{KEY}:{SECRET}@geoseg/creds/m.safetensors"
    with pytest.raises(ModelFileError) as info:
        geoseg.load_model(model)
    said = str(info.value)
    assert said.startswith("Model file s3://geoseg/creds/m.safetensors: received a URL with "
                           "credentials") and SECRET not in said and KEY not in said
    with pytest.raises(ModelFileError, match="Model file s3://geoseg/creds/m.safetensors: "):
        save_model(random_unet(), model)


class BasicAuthHandler(RangeHandler):
    """The test server's files, to requests with the one user and password only (else 401)."""

    expected = "Basic " + base64.b64encode(b"alice:pa55-w0rd-XYZ").decode()

    def _serve(self, body: bool) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_error(401)
            return
        super()._serve(body)


def test_http_basic_auth_in_the_url_still_works(tmp_path):
    image = textured_image(64, 64)
    write_geotiff(tmp_path / "scene.tif", image)
    server = CountingServer(tmp_path)
    server.RequestHandlerClass = functools.partial(BasicAuthHandler, directory=str(tmp_path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        raster = geoseg.open_raster(f"http://alice:pa55-w0rd-XYZ@127.0.0.1:{port}/scene.tif")
        np.testing.assert_array_equal(raster.values, image)
        with pytest.raises(StorageAccessError, match="access denied"):
            geoseg.open_raster(f"http://127.0.0.1:{port}/scene.tif")
    finally:
        server.shutdown()
        server.server_close()
