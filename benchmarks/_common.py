"""Shared pieces of the benchmarks: the machine description and a stand-in in its own process.

The stand-in runs in a child process (multiprocessing, spawn) so that its CPU time and its GIL are
not the client's: ``time.process_time()`` in the benchmark then measures only the Beaker + backend
+ pymssql side, and threads in the client do not compete with the server's threads for one GIL.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
import threading
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from typing import Any, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def machine_info() -> dict[str, str]:
    """nproc, CPU model, Python version and the date: the context every figure needs."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import pymssql

        pymssql_version = str(pymssql.__version__)
    except Exception:  # the figures still make sense without it
        pymssql_version = "?"
    try:
        import beaker

        beaker_version = str(beaker.__version__)
    except Exception:
        beaker_version = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "pymssql": pymssql_version,
        "beaker": beaker_version,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


_GC: dict[str, float] = {"collections": 0, "max_pause_ms": 0.0, "total_ms": 0.0}


def _gc_watch() -> None:
    """In the stand-in process: time every garbage collection from now on (pauses stall all threads)."""
    import gc
    import time as _time

    _GC.update(collections=0, max_pause_ms=0.0, total_ms=0.0)
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = _time.perf_counter()
        else:
            pause = (_time.perf_counter() - started[0]) * 1e3
            _GC["collections"] += 1
            _GC["total_ms"] += pause
            _GC["max_pause_ms"] = max(_GC["max_pause_ms"], pause)

    if not any(getattr(cb, "__name__", "") == "callback" for cb in gc.callbacks):
        gc.callbacks.append(callback)


def _serve(conn: Connection, kwargs: dict[str, Any]) -> None:
    """Child process: run one SQLServerStandIn and answer commands from the parent until 'stop'."""
    from beaker_mssql.testing import SQLServerStandIn
    from beaker_mssql.testing.server import STANDALONE_SWITCH_INTERVAL

    # As `beaker-mssql standin` does in its own process: see server.STANDALONE_SWITCH_INTERVAL.
    sys.setswitchinterval(STANDALONE_SWITCH_INTERVAL)

    server = SQLServerStandIn(**kwargs)
    server.start()
    conn.send(
        {
            "url": server.url,
            "host": server.host,
            "port": server.port,
            "database": server.database,
            "user": server.user,
            "password": server.password,
        }
    )
    try:
        while True:
            try:
                cmd, args = conn.recv()
            except EOFError:
                return
            try:
                if cmd == "stop":
                    conn.send(("ok", None))
                    return
                if cmd == "stats":
                    result: Any = server.stats()
                elif cmd == "reset_stats":
                    result = server.reset_stats()
                elif cmd == "execute":
                    result = server.execute(*args)
                elif cmd == "faults":
                    method, fargs, fkwargs = args
                    result = getattr(server.faults, method)(*fargs, **fkwargs)
                elif cmd == "clock_advance":
                    result = server.clock.advance(*args)
                elif cmd == "sql_log":
                    result = list(server.sql_log)
                elif cmd == "set_log_sql":
                    server.log_sql = bool(args[0])
                    result = None
                elif cmd == "gc_watch":
                    result = _gc_watch()
                elif cmd == "gc_freeze":
                    import gc

                    gc.collect()
                    gc.freeze()
                    result = gc.get_freeze_count()
                elif cmd == "gc_report":
                    result = dict(_GC)
                elif cmd == "cpu":
                    result = tuple(os.times())
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                conn.send(("ok", result))
            except Exception as exc:  # report, keep serving
                conn.send(("error", repr(exc)))
    finally:
        server.stop()


class StandInProcess:
    """A SQLServerStandIn in a child process with a small RPC: stats(), reset_stats(), execute()."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._lock = threading.Lock()
        self._proc: Optional[multiprocessing.process.BaseProcess] = None
        self._conn: Optional[Connection] = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> StandInProcess:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._kwargs), daemon=True)
        self._proc.start()
        if not parent.poll(60):
            raise RuntimeError("the stand-in child process did not start within 60 s")
        self.info = parent.recv()
        self._conn = parent
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call("stop")
        except Exception:
            pass
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.terminate()

    @property
    def url(self) -> str:
        return str(self.info["url"])

    def _call(self, cmd: str, *args: Any) -> Any:
        assert self._conn is not None
        with self._lock:
            self._conn.send((cmd, args))
            status, result = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"stand-in child: {cmd} failed: {result}")
        return result

    def stats(self) -> dict[str, Any]:
        return dict(self._call("stats"))

    def reset_stats(self) -> None:
        self._call("reset_stats")

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self._call("execute", sql) or [])

    def faults(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("faults", (method, args, kwargs))

    def clock_advance(self, seconds: float) -> None:
        self._call("clock_advance", seconds)

    def sql_log(self) -> list[str]:
        return list(self._call("sql_log"))

    def set_log_sql(self, on: bool) -> None:
        self._call("set_log_sql", on)

    def gc_watch(self) -> None:
        self._call("gc_watch")

    def gc_freeze(self) -> int:
        """Move every object the stand-in holds now (e.g. a freshly loaded table) out of the collector's
        sight, so later collections do not walk it; returns how many objects were frozen."""
        return int(self._call("gc_freeze"))

    def gc_report(self) -> dict[str, float]:
        return dict(self._call("gc_report"))

    def child_cpu(self) -> float:
        """User + system CPU seconds the stand-in process has used so far."""
        t = self._call("cpu")
        return float(t[0] + t[1])


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


# -- a tiny WSGI app and a cookie-keeping client (what a browser does) --------------------------------
def session_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """/new and /write store a value; /read only reads; /delete deletes; /plain never loads a session."""
    path = environ.get("PATH_INFO", "/")
    body = "plain"
    if path != "/plain":
        session = environ["beaker.session"]
        if path in ("/write", "/new"):
            session["value"] = environ.get("QUERY_STRING", "") or "v"
            session["n"] = int(session.get("n", 0)) + 1
            session.save()
            body = "ok"
        elif path == "/mine":
            # One key per writer ("/mine?t3=17"): concurrent writers of one session must not erase
            # each other's keys (the write path merges top-level keys).
            name, _, value = environ.get("QUERY_STRING", "").partition("=")
            session[name] = value
            session.save()
            body = "ok"
        elif path == "/read":
            body = str(session.get("value"))
        elif path == "/delete":
            session.delete()
            body = "deleted"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode("utf-8")]


class Client:
    """Direct WSGI calls with a cookie jar of one cookie."""

    def __init__(self, app: Any, cookie: Optional[str] = None) -> None:
        self.app = app
        self.cookie = cookie

    def get(self, path: str, extra: Optional[dict[str, Any]] = None) -> str:
        """One request; ``extra`` is added to the WSGI environ (hooks for the conflict benchmark)."""
        from wsgiref.util import setup_testing_defaults

        environ: dict[str, Any] = dict(extra or {})
        setup_testing_defaults(environ)
        environ["PATH_INFO"], _, environ["QUERY_STRING"] = path.partition("?")
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        headers: list[tuple[str, str]] = []

        def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            if not status.startswith("200"):
                raise RuntimeError(status)
            headers.extend(hdrs)

        body = b"".join(self.app(environ, start_response)).decode("utf-8")
        for name, value in headers:
            if name.lower() == "set-cookie":
                self.cookie = value.split(";", 1)[0]
        return body


def exchanges(stats: dict[str, Any]) -> int:
    """Network exchanges the stand-in answered: batches (``requests``) plus ATTENTIONs (cancels).

    An attention is a message of its own that the client waits on (the server's DONE(ATTN)); on a
    real network it costs a round trip just like a batch, so counting only batches hides it.
    """
    return int(stats["requests"]) + int(stats["attentions"])


class BatchKinds:
    """Names each logged batch after the store statement it was built from (exact template match).

    The templates are the package's own (``beaker_mssql.sql``); the values pymssql interpolated for
    ``%(name)s`` are matched by a lazy wildcard, so a batch is named only if it *is* that statement.
    """

    LABELS = (
        ("get", "load"),
        ("save_update", "conditional UPDATE"),
        ("save_insert", "insert/revive"),
        ("set", "unconditional upsert"),
        ("touch", "touch"),
        ("destroy", "delete"),
        ("getapplock", "app lock"),
        ("releaseapplock", "app lock release"),
    )

    def __init__(self, url: str, table: str) -> None:
        import re

        from beaker_mssql.config import parse_settings
        from beaker_mssql.sql import statements_for

        statements = statements_for(parse_settings({"url": url, "table": table}).table)
        placeholder = re.compile(r"%\(\w+\)s")
        self._patterns = []
        for field, label in self.LABELS:
            template = str(getattr(statements, field))
            pieces = [re.escape(piece) for piece in placeholder.split(template)]
            self._patterns.append((re.compile(".*?".join(pieces), re.DOTALL), label))

    def classify(self, batch: str) -> str:
        for pattern, label in self._patterns:
            if pattern.fullmatch(batch):
                return label
        return "other: " + " ".join(batch.split())[:40]

    def count(self, batches: list[str], per: float = 1.0) -> dict[str, float]:
        """{label: how many / per}, in first-seen order."""
        kinds: dict[str, float] = {}
        for batch in batches:
            label = self.classify(batch)
            kinds[label] = kinds.get(label, 0.0) + 1.0
        return {k: v / per for k, v in kinds.items()}


def new_table(url: str, prefix: str = "bench") -> str:
    """Create a fresh sessions table through the store's own DDL; returns its quoted name."""
    import uuid

    from beaker_mssql.store import MSSQLStore

    table = f"[dbo].[{prefix}_{uuid.uuid4().hex[:8]}]"
    with MSSQLStore(url=url, table=table) as store:
        store.create_table()
    return table


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


class Section:
    """One part of RESULTS.md: a title, the command that produced it, markdown text and raw figures."""

    def __init__(self, title: str, command: str, body: str, figures: dict[str, Any]) -> None:
        self.title = title
        self.command = command
        self.body = body
        self.figures = figures

    def markdown(self) -> str:
        return f"## {self.title}\n\nCommand: `{self.command}`\n\n{self.body.rstrip()}\n"
