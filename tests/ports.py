"""Loopback ports for servers the tests start in other processes, and for nothing at all."""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts (or for a refused
    connection). Chosen below the kernel's ephemeral range: a port that a bind to port 0 gave
    (every dask worker and scheduler, every outgoing connection) could be taken by another
    such bind between this check and the server's own."""
    low = _ephemeral_start()
    chooser = random.SystemRandom()
    for _ in range(200):
        port = chooser.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use: another
                continue
            return port
    with socket.socket() as s:  # all tried were taken: an ephemeral one, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_start() -> int:
    try:
        return int(RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default, and below macOS's 49152
