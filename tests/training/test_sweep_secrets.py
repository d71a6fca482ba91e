"""A sweep over URLs that carry credentials (a presigned URL's signature, a password) shows
each in public form only: in sweep.json, table.txt, every file of its trials and what it prints."""

from __future__ import annotations

import functools
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.cli import geoseg
from tests.training.conftest import tiny_spec, zarr_pair

DEMO = Path(__file__).resolve().parents[2] / "geoseg" / "models" / "bundled" / "demo-unet.safetensors"
KEY_ID, SIGNATURE = "AKIASWEEPTEST0000001", "SiGnAtUrE0123456789abcXYZ"
USER, PASSWORD = "sweepuser7", "SweepPassw0rd42"
SECRETS = (KEY_ID, SIGNATURE, USER, PASSWORD)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """No request lines on stderr."""


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[int]:
    """A real HTTP server of the bundled demo model, as base.safetensors; yields its port."""
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(DEMO, folder / "base.safetensors")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_sweep_over_urls_with_credentials_records_and_prints_them_public(
        tmp_path, scene_zarr, cluster_address, model_server):
    served = f"http://127.0.0.1:{model_server}/base.safetensors"
    closed = f"http://127.0.0.1:{_closed_port()}/base.safetensors"
    presigned = f"{served}?AWSAccessKeyId={KEY_ID}&Signature={SIGNATURE}&Expires=1796684772"
    password = f"http://{USER}:{PASSWORD}@127.0.0.1:{model_server}/base.safetensors"
    unreachable = f"http://{USER}:{PASSWORD}@{closed.split('://')[1]}?Signature={SIGNATURE}"
    base = tiny_spec([zarr_pair(scene_zarr)], tmp_path / "unused", training__epochs=1,
                     model={"architecture": "unet", "config": {"depth": 3, "width": 16}})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "secret-sweep", "base": base,
                                    "parameters": {"model.init": [presigned, password, unreachable]},
                                    "output": {"dir": str(tmp_path / "sweep")}}))

    done = geoseg("sweep", str(path), "--scheduler", cluster_address, own_process=True)
    printed = done.stdout + done.stderr
    assert done.returncode == 1, printed  # the unreachable URL's trial failed
    files = [p for p in (tmp_path / "sweep").rglob("*") if p.is_file()]
    leaks = [(secret, where) for secret in SECRETS
             for where, text in [("printed", printed.encode()), *((p.name, p.read_bytes()) for p in files)]
             if secret.encode() in text]
    assert not leaks

    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert summary["spec"]["parameters"]["model.init"] == [served, served, closed]
    by_name = {t["name"]: t for t in summary["trials"]}
    assert [by_name[f"secret-sweep-00{i}"]["params"]["model.init"] for i in range(3)] == [
        served, served, closed]
    assert [by_name[f"secret-sweep-00{i}"]["status"] for i in range(3)] == ["complete", "complete",
                                                                             "failed"]
    table = (tmp_path / "sweep" / "table.txt").read_text()
    assert table.count(served) == 2 and closed in table and table.strip() in printed


def test_a_whole_section_swept_as_one_parameter_shows_no_storage_option():
    """``parameters: {model: [{init: s3://..., storage_options: {key: ..., secret: ...}}]}``:
    only options named as secrets were hidden, the key id and short ones shown."""
    from geoseg.training.sweeps import public_params

    section = {"architecture": "unet", "init": "s3://models/m.safetensors?X-Amz-Signature=sig123456",
               "storage_options": {"key": "AKIAKEYIDLEAK01", "secret": "SuperSecret9", "token": "tok"}}
    shown = repr(public_params({"model": section, "training.lr": 0.01}))
    for secret in ("AKIAKEYIDLEAK01", "SuperSecret9", "tok'", "sig123456"):
        assert secret not in shown, shown
    assert "s3://models/m.safetensors" in shown and "0.01" in shown, shown
