"""Web servers that answer a format probe or a metadata read with more, or more slowly, than
asked: one that ignores ``Range`` and sends an endless body filled the memory (fsspec's
``cat_file`` reads the whole answer), one that trickles a byte at a time under a huge
``Content-Length`` held the probe for ever. Each such read now stops at its byte limit and
its deadline (``remote.read_start``), and an image whose server sends it whole and unsized is
refused before anything reads it (``remote.check_ranges``)."""

from __future__ import annotations

import http.server
import re
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import fsspec
import imageio.v3 as iio
import numpy as np
import pytest

import geoseg
from geoseg.errors import (
    BudgetError,
    GeosegError,
    RangeRequestsError,
    StorageUnavailableError,
)
from geoseg.io import remote
from geoseg.io.readers import probe

PNG = b"\x89PNG\r\n\x1a\n" + bytes(4088)  # a signature, then anything: nothing decodes it
ZARR_JSON = b'{"zarr_format": 3, "node_type": "array", "attributes": {"a": "'
ENDLESS = 64 * 2**20  # "endless": far more than any probe may read, little enough for the old code
ZEROS = bytes(2**20)
# a real PNG of noise, larger than the blocks a reader fetches (it reads the rest by ranges)
NOISE_PNG = iio.imwrite("<bytes>", np.random.default_rng(0).integers(0, 256, (300, 300, 3),
                                                                     dtype=np.uint8), extension=".png")
DRIP_PAUSE = 0.2


class HostileHandler(http.server.BaseHTTPRequestHandler):
    """``/missing/...``: 404. ``/ranged/...``: ``PNG``, ranges answered. ``/whole/...``: ``Range``
    ignored, ``NOISE_PNG`` whole with its size. ``/endless/...``: ``Range`` ignored, no
    ``Content-Length``, the file's first bytes and then ``ENDLESS`` bytes of zeros.
    ``/drip/...``: ``Content-Length`` 10**12, the first bytes, then a byte every
    ``DRIP_PAUSE`` s until the test ends."""

    protocol_version = "HTTP/1.0"  # an unsized body ends when the connection does
    stop = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        try:
            self._answer(body=True)
        except OSError:  # the client dropped the connection: what a bounded read does
            pass

    def _answer(self, body: bool) -> None:
        start = ZARR_JSON if self.path.endswith("zarr.json") else PNG
        if self.path.startswith("/missing/"):
            self.send_response(404)
            self.end_headers()
        elif self.path.startswith("/ranged/"):
            self._ranged(body)
        elif self.path.startswith("/whole/"):  # Range ignored, the size declared
            self.send_response(200)
            self.send_header("Content-Length", str(len(NOISE_PNG)))
            self.end_headers()
            if body:
                self.wfile.write(NOISE_PNG)
        elif self.path.startswith("/endless/"):
            self.send_response(200)
            self.end_headers()
            if body:
                self.wfile.write(start)
                for _ in range(ENDLESS // len(ZEROS)):
                    self.wfile.write(ZEROS)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            if body:
                self.wfile.write(start[:8])
                self.wfile.flush()
                while not self.stop.wait(DRIP_PAUSE):
                    self.wfile.write(b"\0")
                    self.wfile.flush()

    def _ranged(self, body: bool) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        first, last = (int(match[1]), min(int(match[2]), len(PNG) - 1)) if match else (0, len(PNG) - 1)
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(last + 1 - first))
        self.end_headers()
        if body:
            self.wfile.write(PNG[first : last + 1])


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in (("GEOSEG_READ_TIMEOUT", "1"), ("GEOSEG_CONNECT_TIMEOUT", "1"),
                        ("GEOSEG_RETRIES", "1"), ("GEOSEG_RETRY_DELAY", "0.01"),
                        ("GEOSEG_MAX_METADATA_BYTES", str(2**20))):
        monkeypatch.setenv(name, value)
    HostileHandler.stop.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    HostileHandler.stop.set()
    httpd.shutdown()
    httpd.server_close()


def bounded(seconds: float, call: Callable[[], object]) -> tuple[object, float, int]:
    """What ``call()`` returned or raised, the seconds it took and the peak bytes Python
    allocated meanwhile (every thread: fsspec reads in its own). Fails the test past
    ``seconds`` (the call is then left in a daemon thread: the old code never returned)."""
    caught: list[object] = []

    def target() -> None:
        try:
            caught.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    tracemalloc.start()
    t0 = time.monotonic()
    try:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(seconds)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught, f"still reading after {seconds} s"
    return caught[0], time.monotonic() - t0, peak


def test_a_probe_of_an_endless_answer_reads_its_bytes_only(server):
    """The old probe read all 64 MiB of a body the server would not end (endlessly, outside
    a test)."""
    with probe.sharing():
        head, _, peak = bounded(30, lambda: probe.head(f"{server}/endless/a.png", {}))
    assert head == PNG[: probe.HEAD_BYTES]
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated for a {remote.READ_BLOCK} B probe"


def test_zarr_metadata_of_an_endless_answer_is_read_to_its_limit(server):
    url = f"{server}/endless/s.zarr"
    caught, _, peak = bounded(30, lambda: probe.read_json(url, {}, "zarr.json"))
    assert isinstance(caught, BudgetError), repr(caught)
    assert "GEOSEG_MAX_METADATA_BYTES" in str(caught) and f"{url}/zarr.json" in str(caught)
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated for 1 MiB + 1 B of metadata"


def test_an_endless_unsized_image_is_refused_unread(server):
    """A PNG is read whole anyway, but an answer of no declared size may never end."""
    url = f"{server}/endless/a.png"
    with pytest.raises(RangeRequestsError):  # once untraced: the readers' imports take MiBs
        geoseg.open_raster(url)
    caught, _, peak = bounded(30, lambda: geoseg.open_raster(url))
    assert isinstance(caught, RangeRequestsError), repr(caught)
    assert url in str(caught) and "no Content-Length" in str(caught)
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


def test_an_image_on_a_server_ignoring_range_is_named_as_such_not_as_undecodable(server):
    """A sized PNG sent whole where a range was asked for was "imageio cannot decode it
    (ValueError: ... doesn't appear to support range requests)": the file is fine, the server
    is what geoseg cannot read from."""
    url = f"{server}/whole/a.png"
    with pytest.raises(RangeRequestsError) as caught:
        geoseg.open_raster(url)
    assert "sends whole files only" in str(caught.value) and url in str(caught.value)
    assert "cannot decode" not in str(caught.value)


@pytest.mark.parametrize("name", ["a.png", "s.zarr"])
def test_a_trickled_probe_fails_at_its_deadline(server, name):
    """A byte every 0.2 s under a declared 10**12: each byte reset the socket's read timeout,
    and the declared size gave the answer days. A probe's deadline is 2 * GEOSEG_READ_TIMEOUT
    and a second for each MiB come and one more, as far as the size asked for: 2 s here for a
    file's first 16 KiB, 3 s for a store's metadata (up to 1 MiB)."""
    url = f"{server}/drip/{name}"
    with pytest.raises(GeosegError):  # the readers' imports (seconds on a busy machine), untimed
        geoseg.open_raster(f"{server}/missing/{name}")
    caught, seconds, _ = bounded(30, lambda: geoseg.open_raster(url))
    assert isinstance(caught, StorageUnavailableError), repr(caught)
    assert url in str(caught) and "GEOSEG_READ_TIMEOUT" in str(caught)
    assert re.search(r"in [23]\.\d s, past the deadline", str(caught)), str(caught)
    assert seconds < 2 * 1 + 1 + 8, seconds  # the deadline; the HEAD and range checks before


def test_a_range_answering_server_gives_exactly_the_bytes_asked_for(server):
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    assert remote.read_start(fs, f"{server}/ranged/a.png", 100) == PNG[:100]
    assert remote.read_start(fs, f"{server}/ranged/a.png", 10**6) == PNG  # a shorter file: all
    with pytest.raises(FileNotFoundError):  # a 404, as fsspec's cat_file said it
        remote.read_start(fs, f"{server}/missing/a.png", 100)
