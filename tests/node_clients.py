"""The real Node clients (connect-mssql-v2 over mssql/tedious) as the Python tests drive them.

``node_modules()`` installs the pinned packages of tests/node/package-lock.json with ``npm ci`` into
``.cache/node`` (once; ``make node-clients`` does the same) and skips with a reason where node or npm
is missing. ``NodeStore`` runs tests/node/store_driver.js: one JSON command per line in, one answer
per line out; every answer is waited for on a queue with a deadline, so a client that hangs fails
the test instead of stalling the run.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = Path(__file__).resolve().parent / "node"
CACHE = ROOT / ".cache" / "node"
ANSWER_TIMEOUT = 60.0  # seconds; only reached when a client hangs (a failure)

_install_lock = threading.Lock()


def node_modules() -> Path:
    """``.cache/node/node_modules`` with the pinned packages installed; skips without node/npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Node client tests (CI installs them)")
    with _install_lock:
        lock = (NODE_DIR / "package-lock.json").read_bytes()
        stamp = CACHE / ".installed-lock"
        modules = CACHE / "node_modules"
        if not (stamp.exists() and stamp.read_bytes() == lock and modules.is_dir()):
            CACHE.mkdir(parents=True, exist_ok=True)
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(NODE_DIR / name, CACHE / name)
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE,
                                    capture_output=True, text=True, timeout=600, check=False)
            if result.returncode != 0:
                pytest.fail(f"npm ci in {CACHE} failed (the npm registry must be reachable):\n"
                            f"{result.stderr}")
            stamp.write_bytes(lock)
        return modules


def node_config(server: Any, encrypt: bool = False) -> dict[str, Any]:
    """The mssql/tedious connection config for ``server`` (stand-in or real)."""
    return {
        "server": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
        "options": {"encrypt": encrypt, "trustServerCertificate": True, "serverName": "localhost"},
        "connectionTimeout": 15000,
        "requestTimeout": 15000,
        "pool": {"max": 2},
    }


class NodeError(Exception):
    """A store call that Node answered with an error (message and SQL Server error number)."""

    def __init__(self, message: str, number: Optional[int]) -> None:
        super().__init__(message)
        self.number = number


class NodeStore:
    """One node process holding a connect-mssql-v2 MSSQLStore on ``table``."""

    def __init__(self, server: Any, table: str, encrypt: bool = False, **options: Any) -> None:
        modules = node_modules()
        setup = {"config": node_config(server, encrypt), "options": {"table": table, **options}}
        env = dict(os.environ, NODE_PATH=str(modules), NODE_NO_WARNINGS="1")
        self._proc = subprocess.Popen(
            ["node", str(NODE_DIR / "store_driver.js")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(setup) + "\n")  # stdin, not argv: no password in `ps`
        self._proc.stdin.flush()
        self._answers: queue.Queue[Optional[str]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def call(self, op: str, **args: Any) -> Any:
        """Run one store method in Node; its result, or NodeError."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self._proc.stdin.flush()
        try:
            line = self._answers.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            self.close()
            raise AssertionError(f"node did not answer {op!r} within {ANSWER_TIMEOUT} s") from None
        if line is None:
            stderr = self._proc.stderr.read() if self._proc.stderr else ""
            raise AssertionError(f"node exited while running {op!r}: {stderr}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise NodeError(answer["error"], answer.get("number"))
        return answer["result"]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._reader.join(10)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
