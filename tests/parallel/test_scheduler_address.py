"""``--cluster`` pointed at a port that is not a Dask scheduler's (an HTTP server: the dashboard's
8787 for the scheduler's 8786, a proxy that answers at once): one clear error, in bounded time."""

from __future__ import annotations

import subprocess
import sys
import time

import dask
import pytest

from geoseg.errors import ClusterConfigError
from geoseg.parallel.cluster import connected
from tests.ports import free_port

EAGER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"HTTP/1.1 400 Bad Request\\r\\nconnection: close\\r\\ncontent-length: 0\\r\\n\\r\\n")
    c.close()
"""
QUIET = """
import http.server, sys
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
print("ready", flush=True)
server.serve_forever()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", [EAGER, QUIET], ids=["answers-http-at-once", "waits-for-a-request"])
def test_an_http_port_is_named_as_no_scheduler_in_bounded_time(server):
    import distributed  # noqa: F401 - its config defaults first, as dask.config.set needs them

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", server, str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        started = time.monotonic()
        with pytest.raises(ClusterConfigError) as caught, \
                dask.config.set({"distributed.comm.timeouts.connect": "3s"}), \
                connected(f"tcp://127.0.0.1:{port}"):
            pass
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait(30)
    message = str(caught.value)
    assert message.startswith(f"Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"), message
    assert "8787 by default" in message and "MemoryError: " not in message, message
    assert took < 15, took
