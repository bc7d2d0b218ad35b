"""``make demo``: the Pyramid example on http://127.0.0.1:6543 with its sessions in SQL Server.

With ``BEAKER_MSSQL_URL`` set it uses that server; otherwise it starts the SQL Server stand-in with
its data in ``var/demo-standin.json``, so sessions survive a restart of the demo. The tables are
created if needed. Ctrl-C stops it. ``python examples/demo.py --port 6544`` picks another port.

Below the example's own page the demo shows what the package does: this session's row as stored
(sid, expiry on the database clock, the JSON in the ``session`` column), the database clock, the
round trips a page load costs, and (stand-in only) a button that moves the database clock past the
row's ttl, so the session expires by the server's clock while you watch.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import signal
import sys
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Union

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import pyramid_app  # noqa: E402  (needs the sys.path entry above)

from beaker_mssql.diagnostics import mask_url  # noqa: E402
from beaker_mssql.testing import SQLServerStandIn  # noqa: E402
from beaker_mssql.testing.server import RealServer  # noqa: E402

DEFAULT_DATA_FILE = ROOT / "var" / "demo-standin.json"
CLOCK_PATH = "/demo/clock-forward"
StartResponse = Callable[..., Any]


class Inspector:
    """Reads the session's row straight from the table and counts the stand-in's exchanges.

    Reads go through the stand-in's in-process back door (invisible to its counters) or, on a real
    server, a separate connection: the panel never changes what it measures.
    """

    def __init__(self, server: Union[SQLServerStandIn, RealServer], table: str, ttl: int) -> None:
        self.server = server
        self.standin = server if isinstance(server, SQLServerStandIn) else None
        self.table = table
        self.ttl = ttl
        self.lock = threading.Lock()
        self.previous: Optional[dict[str, int]] = None  # the last completed page load's cost
        self.moved = 0  # seconds the demo moved the stand-in's clock

    # -- counters --------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        if self.standin is None:
            return {}
        stats = self.standin.stats()
        return {key: int(stats[key]) for key in ("requests", "attentions", "logins")}

    def middleware(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """Measure every page load (the save runs after the view, so only the whole request tells)."""

        def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == CLOCK_PATH and environ.get("REQUEST_METHOD") == "POST":
                return self.move_clock(start_response)
            before = self.counters()
            environ["demo.counters_before"] = before
            body = b"".join(app(environ, start_response))
            after = self.counters()
            if before and environ.get("PATH_INFO") == "/":
                with self.lock:
                    self.previous = {key: after[key] - before[key] for key in after}
            return [body]

        return wrapped

    def move_clock(self, start_response: StartResponse) -> Iterable[bytes]:
        """Move the stand-in's clock past the ttl: the next load finds the row expired."""
        if self.standin is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only the stand-in's clock can be moved\n"]
        seconds = self.ttl + 60
        self.standin.clock.advance(seconds)
        with self.lock:
            self.moved += seconds
        start_response("303 See Other", [("Location", "/?clock=moved"), ("Content-Length", "0")])
        return [b""]

    # -- the panel -------------------------------------------------------------------------------
    def row(self, sid: str) -> tuple[Optional[tuple[Any, ...]], datetime]:
        literal = "N'" + sid.replace("'", "''") + "'"
        rows = self.server.execute(
            f"SELECT [sid], [session], [expires], DATEDIFF(second, GETUTCDATE(), [expires]) "  # noqa: S608
            f"FROM {self.table} WHERE [sid] = {literal}"
        )
        now = self.server.execute("SELECT GETUTCDATE()")[0][0]
        return (rows[0] if rows else None), now

    def __call__(self, request: Any) -> str:
        session = request.session
        sid = str(session.id)
        row, now = self.row(sid)
        e = html.escape
        parts = ["<section id='inspector'><h2>What is stored in SQL Server</h2>"]
        if request.GET.get("clock") == "moved":
            parts.append(
                f"<p id='expired-note' class='warn'>The database clock moved {self.ttl + 60} s forward, "
                f"past the row's ttl ({self.ttl} s). The row of your previous session is expired on the "
                "server's clock, so Beaker found no session: this is a new one (visits start again, "
                "you are logged out). The application host's clock played no part.</p>"
            )
        parts.append("<dl>")
        parts.append(f"<dt>table</dt><dd>{e(self.table)}</dd>")
        parts.append(f"<dt>sid (your cookie's id)</dt><dd id='row-sid'>{e(sid)}</dd>")
        if row is None:
            parts.append(
                "<dt>row</dt><dd id='row-missing'>not stored yet: Beaker writes the row when this "
                "request ends. Reload to see it.</dd>"
            )
        else:
            left = int(row[3])
            state = (
                f"{left} s left"
                if left > 0
                else f"expired {-left} s ago: the app no longer loads this row, and this request's save "
                "replaces it (a sweep deletes rows nobody saves again)"
            )
            parts.append(f"<dt>expires (database clock, UTC)</dt><dd id='row-expires'>{e(str(row[2]))}</dd>")
            parts.append(f"<dt>time left</dt><dd id='row-left'>{e(state)}</dd>")
        parts.append(f"<dt>database clock (GETUTCDATE())</dt><dd id='db-clock'>{e(str(now))}</dd>")
        parts.append("</dl>")
        if row is not None:
            try:
                shown = json.dumps(json.loads(str(row[1])), indent=2, sort_keys=True)
            except ValueError:
                shown = str(row[1])
            parts.append(
                "<p>The <code>session</code> column, as loaded at the start of this request "
                f"(<code>session.data_serializer = json</code>):</p><pre id='row-json'>{e(shown)}</pre>"
            )
        parts.append(self._exchanges(request))
        parts.append(self._clock_control())
        parts.append(self._operate())
        parts.append("</section>")
        return "".join(parts)

    def _exchanges(self, request: Any) -> str:
        if self.standin is None:
            return "<p class='note'>Exchange counters come from the stand-in (none for a real server).</p>"
        before = request.environ.get("demo.counters_before") or {}
        now = self.counters()
        so_far = now.get("requests", 0) - before.get("requests", 0)
        with self.lock:
            previous = dict(self.previous) if self.previous else None
        text = (
            f"<p>Exchanges with the database for this request so far: <b id='cost-now'>{so_far}</b> "
            "request(s) (loading the session); the save follows when the page is sent.</p>"
        )
        if previous is not None:
            text += (
                "<p>The previous page load, complete: "
                f"<b id='cost-previous'>{previous['requests']}</b> request(s), "
                f"{previous['attentions']} attention(s) (cancels), {previous['logins']} new login(s). "
                "One round trip loads the session, one saves it.</p>"
            )
        return text

    def _clock_control(self) -> str:
        if self.standin is None:
            return ""
        moved = f" (moved {self.moved} s so far)" if self.moved else ""
        return (
            f"<form id='clock' method='post' action='{CLOCK_PATH}'><p>Expiry uses the database's clock, "
            f"never the web server's. <button id='clock-forward' type='submit'>Move the database clock "
            f"{self.ttl + 60} s forward</button>{html.escape(moved)}</p></form>"
        )

    def _operate(self) -> str:
        restart = (
            "<p>Stop the demo (Ctrl-C) and run <code>make demo</code> again: you are still logged in, "
            "because the session is a row in the database, not in this process.</p>"
        )
        if self.standin is None:
            return restart
        command = f"beaker-mssql stats --url '{self.standin.url}' --table {self.table}"
        return restart + (
            "<p>Look at the table from a shell (the password is the demo stand-in's own, generated at "
            f"start-up, <em>demo only</em>):</p><pre id='stats-command'>{html.escape(command)}</pre>"
        )


def _make_server(app: Any, host: str, port: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """Bind now (so a busy port is reported before anything says "serving"); (serve, close)."""
    try:
        import waitress
    except ImportError:
        from wsgiref.simple_server import make_server

        httpd = make_server(host, port, app)
        return httpd.serve_forever, httpd.server_close
    server = waitress.create_server(app, host=host, port=port, threads=4)
    return server.run, server.close


def run(url: Optional[str], host: str, port: int, data_file: Path) -> int:
    standin: Optional[SQLServerStandIn] = None
    if url:
        source = "BEAKER_MSSQL_URL"
    else:
        data_file.parent.mkdir(parents=True, exist_ok=True)
        standin = SQLServerStandIn(data_file=str(data_file)).start()
        url = standin.url
        source = f"the SQL Server stand-in, data in {data_file}"
    try:
        settings = pyramid_app.load_settings()
        settings["session.url"] = url
        settings["cache.url"] = url
        settings["session.create_table"] = "true"  # create both tables if needed
        settings["cache.short_term.create_table"] = "true"
        try:
            app = pyramid_app.main({}, **settings)
        except Exception as exc:
            where = "BEAKER_MSSQL_URL" if standin is None else "the stand-in"
            reason = mask_url(" ".join(str(exc).split()))
            print(f"demo: cannot start with {where}: {reason}", file=sys.stderr)
            return 1
        server = standin or RealServer(url)
        inspector = Inspector(server, settings["session.table"], int(settings["session.ttl"]))
        app.registry[pyramid_app.INSPECTOR] = inspector
        try:
            serve, close = _make_server(inspector.middleware(app), host, port)
        except OSError as exc:
            print(
                f"demo: cannot listen on {host}:{port} ({exc.strerror or exc}); is another demo running? "
                f"Pick another port: python examples/demo.py --port {port + 1}  "
                f"(or make demo DEMO_ARGS='--port {port + 1}')",
                file=sys.stderr,
            )
            return 1
        print(f"database: {mask_url(url)} ({source})", flush=True)
        print(
            f"tables: sessions {settings['session.table']}, cache {settings['cache.short_term.table']}",
            flush=True,
        )
        print(f"serving the Pyramid example on http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
        try:
            serve()
        except KeyboardInterrupt:
            pass
        finally:
            close()
        print("stopped", flush=True)
    finally:
        if standin is not None:
            standin.close()  # writes the data file: sessions survive the next `make demo`
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6543)
    parser.add_argument(
        "--data-file",
        type=Path,
        default=DEFAULT_DATA_FILE,
        help="the stand-in's data (default var/demo-standin.json)",
    )
    args = parser.parse_args(argv)
    url = os.environ.get("BEAKER_MSSQL_URL", "").strip() or None
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        return run(url, args.host, args.port, args.data_file)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one clear line, never the password
        print(f"demo: {mask_url(' '.join(str(exc).split()) or type(exc).__name__)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
