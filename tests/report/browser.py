"""Headless Chromium driven over the Chrome DevTools protocol (loopback only), for tests.

Chromium listens on 127.0.0.1 on a port it picks (``--remote-debugging-port=0``, written to
``DevToolsActivePort`` in its profile folder); tornado (a dependency of distributed) speaks
the WebSocket. No other network: the page under test is a local file.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


@contextmanager
def chromium(url: str, profile: Path, *, width: int = 1200, height: int = 2400) -> Iterator[Page]:
    """A headless Chromium showing ``url`` (loaded); killed (its process group) on exit."""
    binary = find_chromium()
    args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "about:blank"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        page = Page(_page_socket(profile, process))
        page.open(url)
        yield page
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _page_socket(profile: Path, process: subprocess.Popen, timeout: float = 30) -> str:
    """The WebSocket URL of the browser's first page, once it is listening."""
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with code {process.returncode} at start")
        if marker.exists() and marker.read_text().strip():
            port = int(marker.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise TimeoutError(f"chromium did not open its DevTools port within {timeout} s")


class Page:
    """One page's DevTools session: evaluate JavaScript, take a screenshot."""

    def __init__(self, socket_url: str) -> None:
        self.socket_url = socket_url
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return asyncio.run(self._call(method, params))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        from tornado.websocket import websocket_connect

        connection = await websocket_connect(self.socket_url, max_message_size=256 * 2**20)
        try:
            ident = next(self.ids)
            await connection.write_message(json.dumps({"id": ident, "method": method,
                                                       "params": params}))
            while True:
                message = json.loads(await asyncio.wait_for(connection.read_message(), 60))
                if message.get("id") == ident:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message["result"]
        finally:
            connection.close()

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 30) -> None:
        """Go to ``url`` and wait until it has loaded."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        done = f"document.readyState === 'complete' && location.href === {json.dumps(url)}"
        while not self.evaluate(done):
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not finish loading")
            time.sleep(0.2)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png",
                                          captureBeyondViewport=True)["data"])
