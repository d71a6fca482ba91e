"""A web server that ignores Range requests is refused before a GeoTIFF is opened, after a
few bytes: not after downloading the whole file (which ``info`` then went on to read)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import geoseg
from geoseg.errors import RangeRequestsError
from tests.io.test_remote import CountingServer, serving, write_big_geotiff


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www-ranges")
    write_big_geotiff(root / "big.tif")  # 12 MiB
    return root


class SmallBuffers(CountingServer):
    """A server whose sockets buffer little of what it sends: what it counts as sent is what
    the client took, give or take its own receive buffer (loopback buffers grow to MiBs)."""

    def get_request(self) -> tuple[socket.socket, object]:
        conn, address = super().get_request()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**16)
        return conn, address


@pytest.fixture
def no_ranges(www: Path) -> Iterator[CountingServer]:
    server = SmallBuffers(www)
    server.ranges = False
    with serving(server):
        yield server


LITTLE = 2**20  # what a refusal may cost at most: a few requests' headers and socket buffers


def test_open_raster_refuses_after_a_few_bytes(no_ranges, www):
    with pytest.raises(RangeRequestsError, match="sends whole files only"):
        geoseg.open_raster(f"{no_ranges.url}/big.tif")
    size = (www / "big.tif").stat().st_size
    assert no_ranges.bytes_sent < LITTLE < size, no_ranges.bytes_sent


def test_validate_refuses_after_a_few_bytes(no_ranges, www, tmp_path):
    """Opening a tiled GeoTIFF reads only its start, which such a server sends too: validate
    passed it once, and the run failed at its first window; then it refused it only after the
    whole file had come."""
    from tests.cli import geoseg as command

    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({
        "input": {"url": f"{no_ranges.url}/big.tif"},
        "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
        "output": {"url": str(tmp_path / "out.zarr")}}))
    said = command("validate", str(job))
    assert said.returncode == 2, said.stderr
    assert "input.url: " in said.stderr and "sends whole files only" in " ".join(said.stderr.split())
    assert no_ranges.bytes_sent < LITTLE, (no_ranges.bytes_sent, no_ranges.paths)


def test_a_server_with_ranges_is_asked_for_a_few_bytes_only(www):
    server = CountingServer(www)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        raster = geoseg.open_raster(f"{server.url}/big.tif", chunks=256)
        assert raster.shape == (3, 2048, 2048)
    finally:
        server.shutdown()
        server.server_close()
