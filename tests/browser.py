"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

Standard library only: no webdriver, no websocket client, no downloaded browser. Chromium reads
NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4. Every wait is on a reply
or an event (``Page.loadEventFired``), with a timeout, never a sleep.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from typing import Any, Optional

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Flags per /work/.library/env/machines/python.md: no sandbox as root, and no background traffic
# (the machine's closed network refuses it, many connections at a time).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are numbered 100 and up, so the child's dup2 onto 3 and 4 never hits itself
    (dup2(3, 3) would keep the close-on-exec flag and the browser would find no fd 3)."""
    read_end, write_end = os.pipe()
    high = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (read_end, write_end))
    os.close(read_end)
    os.close(write_end)
    return high[0], high[1]


def find_chromium() -> Optional[str]:
    """The first Chromium-family browser on PATH (or /usr/bin/chromium), else None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless browser with one page; ``close()`` ends the process."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="beaker-mssql-chromium-")
        to_browser_r, self._to_browser = _high_pipe()
        self._from_browser, from_browser_w = _high_pipe()

        def wire_fds() -> None:  # in the child: fd 3 = commands in, fd 4 = replies out
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # fds 3 and 4 exist only in the child (dup2 there); Python's own descriptors are
            # close-on-exec by default, so nothing else leaks into the browser.
            close_fds=False,
            preexec_fn=wire_fds,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1000, "height": 1200, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        box = self._replies.get(message["id"])
                    if box is not None:
                        box.put(message)
                else:
                    self._events.put(message)

    def call(self, method: str, params: Optional[dict[str, Any]] = None, session: bool = False) -> Any:
        """Send one command and wait for its reply; a protocol error raises RuntimeError."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            box: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[ident] = box
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = box.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply to {method} within {self.timeout} s") from None
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _drain_events(self) -> None:
        while True:
            try:
                self._events.get_nowait()
            except queue.Empty:
                return

    def wait_for_load(self) -> None:
        """Wait for this page's next ``Page.loadEventFired``."""
        while True:
            try:
                event = self._events.get(timeout=self.timeout)
            except queue.Empty:
                raise TimeoutError(f"the page did not finish loading within {self.timeout} s") from None
            if event.get("method") == "Page.loadEventFired" and event.get("sessionId") == self.session:
                return

    def goto(self, url: str) -> None:
        self._drain_events()
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for_load()

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self, element_id: str) -> Optional[str]:
        """The text of ``#element_id``, or None if the page has no such element."""
        return self.evaluate(  # type: ignore[no-any-return]
            f"(e => e ? e.textContent : null)(document.getElementById({json.dumps(element_id)}))"
        )

    def submit(self, script: str) -> None:
        """Run ``script`` (which fills in and submits a form) and wait for the page it leads to."""
        self._drain_events()
        self.evaluate(script)
        self.wait_for_load()

    def screenshot(self) -> bytes:
        params = {"format": "png", "captureBeyondViewport": True}
        data = self.call("Page.captureScreenshot", params, session=True)
        return base64.b64decode(data["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # already gone: fall through to the kill
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
