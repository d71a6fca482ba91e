"""A web server trickling its answer a byte at a time held a read for ever: each byte reset
the socket's read timeout. Each HTTP request now has a deadline (``remote.http_deadline``)."""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator

import fsspec
import pytest

import geoseg
from geoseg.errors import GeosegError
from geoseg.io import remote

BODY = b"II*\x00" + bytes(4092)
STEADY = 8 * 2**20


class TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Any path: ``BODY`` (or the range asked for), one byte every 0.3 s; under ``/steady/``
    a larger body at a steady, modest rate."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        if self.path.startswith("/steady/"):
            self._steady(body)
            return
        if self.path.startswith("/chunked/"):
            self._chunked(body, steady=not self.path.startswith("/chunked/trickle"))
            return
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        stop = min(int(match.group(2)) + 1, len(BODY)) if match and match.group(2) else len(BODY)
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(BODY)}")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        for i in range(start, stop if body else start):
            try:
                self.wfile.write(BODY[i : i + 1])
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.3)


    def _steady(self, body: bool) -> None:
        """``STEADY`` bytes at about 2 MiB/s: slow, but a working server."""
        self.send_response(200)
        self.send_header("Content-Length", str(STEADY))
        self.end_headers()
        for _ in range(STEADY // 2**16 if body else 0):
            self.wfile.write(bytes(2**16))
            time.sleep(1 / 32)


    def _chunked(self, body: bool, steady: bool) -> None:
        """No Content-Length (chunked transfer): ``STEADY`` bytes at about 2 MiB/s, or a byte
        every 0.3 s."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pieces = (STEADY // 2**16 if steady else 4096) if body else 0
        size, pause = (2**16, 1 / 32) if steady else (1, 0.3)
        try:
            for _ in range(pieces):
                self.wfile.write(b"%x\r\n%s\r\n" % (size, bytes(size)))
                self.wfile.flush()
                time.sleep(pause)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            return


@pytest.fixture
def trickle(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in (("GEOSEG_READ_TIMEOUT", "1"), ("GEOSEG_CONNECT_TIMEOUT", "1"),
                        ("GEOSEG_RETRIES", "1"), ("GEOSEG_RETRY_DELAY", "0.01")):
        monkeypatch.setenv(name, value)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TrickleHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def within(seconds: float, call) -> BaseException | None:
    """What ``call()`` raised, failing the test if it took longer than ``seconds`` (it is left
    running in a daemon thread then: the old code never returned)."""
    caught: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            caught.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert caught, f"still reading after {seconds} s"
    return caught[0]


def test_one_request_ends_at_its_deadline(trickle):
    assert remote.http_deadline(1) == 2 and remote.http_deadline(20, 500 * 2**20) == 540
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    t0 = time.monotonic()
    caught = within(20, lambda: fs.cat_file(f"{trickle}/a.bin"))  # 4 KiB: 20 minutes trickled
    assert caught is not None and time.monotonic() - t0 < 2 + 4096 / 2**20 + 3, caught


def test_open_raster_gives_up_within_the_documented_bound(trickle):
    t0 = time.monotonic()
    caught = within(30, lambda: geoseg.open_raster(f"{trickle}/scene.tif"))
    assert isinstance(caught, GeosegError), repr(caught)
    assert f"{trickle}/scene.tif" in str(caught)
    assert time.monotonic() - t0 < (1 + 1) * (1 + 2) + 5  # (retries + 1) deadlines, and slack


def test_a_large_answer_at_a_modest_rate_is_read_whole(trickle):
    """8 MiB at about 2 MiB/s takes longer than ``2 * GEOSEG_READ_TIMEOUT`` (2 s here), but
    its declared size gives it the time (:func:`remote.http_deadline`)."""
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    assert len(fs.cat_file(f"{trickle}/steady/big.bin")) == STEADY


def test_a_chunked_answer_is_held_to_what_it_has_sent(trickle):
    """A body of no declared size had 2 * GEOSEG_READ_TIMEOUT in all, however fast it came:
    8 MiB chunked at about 2 MiB/s failed after 2 s. It is now given the time what has come so
    far allows (and a MiB more), so a steady stream is read whole and a trickle still stops."""
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    assert len(fs.cat_file(f"{trickle}/chunked/steady.bin")) == STEADY
    t0 = time.monotonic()
    caught = within(20, lambda: fs.cat_file(f"{trickle}/chunked/trickle.bin"))
    assert caught is not None and time.monotonic() - t0 < 2 + 1 + 3, caught
