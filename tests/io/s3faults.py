"""A fault-injecting HTTP proxy on 127.0.0.1, for tests of how geoseg meets a failing store.

:class:`FaultProxy` stands in front of a real S3 endpoint (moto's server from the ``s3_server``
fixture) and forwards every request unchanged (the ``Host`` header too, so signatures hold),
except those a rule matches: ``proxy.inject("503", method="GET", path=r"/c/0/1$", times=2)``
makes the next two GETs whose path matches answer 503. Actions:

- ``"503"``: HTTP 503 with S3's ``ServiceUnavailable`` error body;
- ``"slowdown"``: HTTP 503 with S3's ``SlowDown`` throttling body;
- ``"reset"``: the connection is reset (TCP RST) before any answer;
- ``"403"``: HTTP 403 ``AccessDenied``;
- ``"hang"``: no answer for ``seconds``, then the connection is closed.

``proxy.log`` lists ``(method, path, action)`` for every request (``"forward"`` when passed on),
so a test can count the faults served and the attempts made.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

ACTIONS = ("503", "slowdown", "reset", "403", "hang")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "expect",
              "upgrade", "te", "trailer"}
ERRORS = {
    "503": (503, "ServiceUnavailable", "Please reduce your request rate."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
}


@dataclass
class Rule:
    """Answer the next ``times`` requests matching ``method`` and ``path`` with ``action``."""

    action: str
    method: str | None
    path: re.Pattern[str]
    times: int
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.times > 0 and (self.method is None or self.method == method)
                and self.path.search(path) is not None)


class FaultProxy:
    """A threaded proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def options(self, s3_options: dict[str, Any]) -> dict[str, Any]:
        """``s3_options`` (the fixture's storage options) with this proxy as the endpoint."""
        client = {**s3_options.get("client_kwargs", {}), "endpoint_url": self.url}
        return {**s3_options, "client_kwargs": client}

    def inject(self, action: str, *, method: str | None = None, path: str = "",
               times: int = 1, seconds: float = 60.0) -> Rule:
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}; expected one of {ACTIONS}")
        rule = Rule(action, method, re.compile(path), times, seconds)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()

    def count(self, action: str, method: str | None = None, path: str = "") -> int:
        """Requests answered with ``action`` (``"forward"``: passed on) matching the filters."""
        pattern = re.compile(path)
        with self.lock:
            return sum(1 for m, p, a in self.log if a == action and (method in (None, m))
                       and pattern.search(p))

    def decide(self, method: str, path: str) -> Rule | None:
        with self.lock:
            rule = next((r for r in self.rules if r.matches(method, path)), None)
            if rule is not None:
                rule.times -= 1
            self.log.append((method, path, rule.action if rule else "forward"))
            return rule

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # hanging handlers return at once
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a reset or a client that gave up: expected here


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients pool connections

        def do_any(self) -> None:
            body = self._body()
            rule = proxy.decide(self.command, self.path)
            if rule is None:
                self._forward(body)
            elif rule.action == "reset":
                self._reset()
            elif rule.action == "hang":
                proxy.stopping.wait(rule.seconds)
                self._reset()
            else:
                self._error(*ERRORS[rule.action])

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = do_any

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._chunked()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _chunked(self) -> bytes:
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)

        def _forward(self, body: bytes) -> None:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
            finally:
                conn.close()
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            length = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            data = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message><RequestId>fault</RequestId></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _reset(self) -> None:
            """Close with SO_LINGER 0: the peer sees a TCP reset, not an orderly end."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def finish(self) -> None:
            try:
                super().finish()
            except (OSError, ValueError):
                pass  # the connection was reset on purpose

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
