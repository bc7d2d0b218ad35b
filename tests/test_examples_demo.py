"""examples/demo.py (what `make demo` runs) as a real process: serves the Pyramid example over HTTP
with the stand-in, masks the password, and keeps sessions across a restart of the demo."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    """One run of the demo process."""

    def __init__(self, port: int, data_file: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "BEAKER_MSSQL_URL"}
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMO), "--port", str(port), "--data-file", str(data_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.wait_until_listening()

    def wait_until_listening(self, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"demo exited early ({self.proc.returncode}):\n{out}\n{err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        pytest.fail("demo did not start listening")

    def stop(self) -> tuple[str, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def visits(opener: urllib.request.OpenerDirector, port: int) -> int:
    with opener.open(f"http://127.0.0.1:{port}/", timeout=30) as response:
        page = response.read().decode()
    match = re.search(r"id='visits'>(\d+)<", page)
    assert match, page
    return int(match.group(1))


def test_demo_serves_masks_the_password_and_keeps_sessions_across_restarts(tmp_path):
    data_file = tmp_path / "var" / "demo-standin.json"
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    port = free_port()

    demo = Demo(port, data_file)
    try:
        assert visits(browser, port) == 1
        assert visits(browser, port) == 2
        out, err = demo.stop()
    finally:
        demo.kill()
    assert "Traceback" not in err
    database_line = next(line for line in out.splitlines() if line.startswith("database: "))
    pattern = r"database: mssql://sa:\*\*\*@127\.0\.0\.1:\d+/test \(the SQL Server stand-in"
    assert re.match(pattern, database_line), database_line
    assert f"http://127.0.0.1:{port}/" in out
    assert data_file.exists()  # the stand-in wrote its data on the way out

    demo = Demo(port, data_file)  # same data file: the session is still there
    try:
        assert visits(browser, port) == 3
        demo.stop()
    finally:
        demo.kill()
